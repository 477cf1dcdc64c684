"""The demo's closing table: held-out sessions and test queries before → after, and what is blue."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def print_summary(console: Console, db, result: dict[str, Any], before: dict[str, float], after: dict[str, float],
                  candidate: dict[str, float] | None = None) -> None:
    """``candidate``: the test figures of a model the gate did not deploy (scored through a shadow index)."""
    from dao.blue_pointer import BluePointers

    held_before = result.get("metrics_before") or {}
    held_after = result.get("metrics_after") or {}
    table = Table(title="quality before → after")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("change", justify="right")
    for name in sorted(set(held_before) & set(held_after)):
        if isinstance(held_before[name], (int, float)) and isinstance(held_after[name], (int, float)):
            table.add_row(f"held-out sessions · {name}", f"{held_before[name]:.4f}", f"{held_after[name]:.4f}",
                          f"{held_after[name] - held_before[name]:+.4f}")
    for name in ("ndcg@10", "mrr@10", "recall@100"):
        if name in before and name in after:
            table.add_row(f"test queries (blue index) · {name}", f"{before[name]:.4f}", f"{after[name]:.4f}",
                          f"{after[name] - before[name]:+.4f}")
    if candidate:
        for name in ("ndcg@10", "mrr@10", "recall@100"):
            if name in before and name in candidate:
                table.add_row(f"test queries · {name} of the candidate the gate kept out", f"{before[name]:.4f}",
                              f"{candidate[name]:.4f}", f"{candidate[name] - before[name]:+.4f}")
    console.print(table)
    if result.get("quality_metric"):
        judge = result["quality_metric"]
        console.print(f"weights chosen by held-out [bold]{judge}[/]"
                      + (" (exploration sessions: results shown in a random order)" if judge.startswith("val_rand_") else ""))
    pointer = BluePointers(db).get()
    if pointer is not None:
        console.print(f"blue: collection [bold]{pointer.collection}[/] · model {pointer.model_ref}"
                      f"{f' · {pointer.model_uri}' if pointer.model_uri else ''} · {pointer.item_count} items")
    if result.get("registered_model_name"):
        console.print(f"registered model: {result['registered_model_name']} v{result.get('registered_model_version')}"
                      f" · best run {result.get('best_run_id')}")
