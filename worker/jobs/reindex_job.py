"""The reindex job (blue/green): re-embed every item of the blue collection with a new model.

``run(ctx)`` follows the job contract of :mod:`worker.lifecycle` and does, in this order:

1. **Find the deployment** (:mod:`dao.blue_pointer`): by the explicit ``source`` collection, by the
   ``source_run_id`` model (the blue model the fine-tuning started from), or the default deployment
   (``settings.blue_pointer_name``). Unknown → ``refused``.
2. **Lock** the source model, the destination model and the deployment with lease locks
   (:mod:`dao.locks`, owner ``reindex:<task id>``, renewed in a thread). Held by someone else →
   with ``wait_on_conflict`` the task goes back to ``pending`` and its message is re-sent with a
   delay (``settings.reindex_conflict_delay_ms``; the wait does not use up an attempt); without
   it the task is ``refused``.
3. **Build** a new collection ``<deployment>-<model>-<8 hex>``: page by page, read the ids and
   loader metas of the source collection, load the items with the collection's loader config,
   embed them with the destination model (``encode_items``), upsert. Progress per page; cancel and
   lease loss are checked per page.
4. **Verify** the new collection holds exactly as many items as the source (an item that cannot be
   loaded stops the build before this: an index is never silently smaller).
5. **Switch** the blue pointer with a compare-and-set on the source collection and model.
6. Only then **drop** the old collection, and (best effort) move the MLflow registry alias
   ``blue`` to the destination run's registered version.

On any failure before the switch the half-built collection is dropped and the old blue stays as
it was; if the worker was killed instead, the next attempt of the task drops what the killed one
left (collections carry the building task's id in their metadata). Items missing at their source end the task ``failed`` at once (retrying will not bring a
deleted file back); transient item failures and infrastructure errors are retried by Dramatiq.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any, Callable

from dao.blue_pointer import BluePointer, BluePointers
from dao.locks import LockKeeper, LeaseLocks, LockHeld, model_lock_name
from finetuning.experiments.client import tracking_client
from finetuning.experiments.records import BLUE_ALIAS, filter_literal
from finetuning.model_ref import ModelNotFound, ModelRef
from worker.indexing import (
    CollectionConflict,
    ItemsMissing,
    build_collection,
    drop_collection,
    loader_config_of,
    refs_from_page,
)
from worker.lifecycle import TaskContext, TaskDeferred, TaskFailed, TaskRefused
from worker.lifecycle.errors import safe_detail
from worker.vector_store import CollectionNotFound, VectorStore, create_vector_store

log = logging.getLogger(__name__)

#: Collection metadata key naming the reindex task that built the collection.
COLLECTION_TASK_KEY = "clicktune_reindex_task"


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------

def run(ctx: TaskContext) -> dict:
    """Re-embed the blue collection of a deployment with ``dest_run_id`` and switch blue to it."""
    task, settings = ctx.task, ctx.settings
    ctx.progress("resolving", 0.0)
    try:
        dest_ref = ModelRef.canonical(task.dest_run_id)
    except ValueError as exc:
        raise TaskRefused(str(exc)) from None
    pointers = BluePointers(ctx.db)
    pointer = _find_pointer(ctx, pointers)
    if dest_ref == pointer.model_ref:
        raise TaskRefused(f"{dest_ref} is already the blue model of deployment {pointer.name!r}")

    locks = LeaseLocks(ctx.db)
    owner = f"reindex:{task.id}"
    resources = [model_lock_name(pointer.model_ref), model_lock_name(dest_ref), f"blue:{pointer.name}"]
    lease = settings.model_lock_lease_seconds
    try:
        locks.acquire_all(resources, owner, lease)
    except LockHeld as held:
        if task.wait_on_conflict:
            raise TaskDeferred(f"waiting: {held}", settings.reindex_conflict_delay_ms) from None
        raise TaskRefused(f"{held}; enqueue with wait_on_conflict to wait for it") from None
    try:
        with locks.keep_alive(resources, owner, lease) as keeper, create_vector_store(settings) as store:
            current = pointers.get(pointer.name)
            if current is None or current.collection != pointer.collection:
                raise CollectionConflict(f"the blue collection of {pointer.name!r} changed before the locks were taken")
            _drop_leftovers(store, task.id, keep=pointer.collection)
            return _reindex(ctx, store, pointers, pointer, dest_ref, keeper)
    finally:
        gc.collect()  # the destination model's weights


# --------------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------------

def _find_pointer(ctx: TaskContext, pointers: BluePointers) -> BluePointer:
    task, settings = ctx.task, ctx.settings
    if task.source:
        matches = [p for p in pointers.list() if p.collection == task.source]
        if not matches:
            raise TaskRefused(f"collection {task.source!r} is not the blue collection of any deployment")
        return matches[0]
    if task.source_run_id:
        try:
            source = ModelRef.parse(task.source_run_id)
        except ValueError as exc:
            raise TaskRefused(str(exc)) from None
        source_ref = str(source)
        matches = pointers.find_by_model(source_ref)
        if not matches and source.kind == "registered":
            run_id = _registered_run_id(source, settings.mlflow_tracking_uri)
            matches = pointers.find_by_model(str(ModelRef("run", run_id))) if run_id else []
        if not matches:
            raise TaskRefused(f"model {source_ref} is not blue in any deployment (see `clicktune blue`)")
        if len(matches) > 1:
            preferred = [p for p in matches if p.name == settings.blue_pointer_name]
            if not preferred:
                names = ", ".join(p.name for p in matches)
                raise TaskRefused(f"model {source_ref} is blue in several deployments ({names}); name the source collection")
            return preferred[0]
        return matches[0]
    pointer = pointers.get(settings.blue_pointer_name)
    if pointer is None:
        raise TaskRefused(f"deployment {settings.blue_pointer_name!r} has no blue collection yet: "
                          "build one with `clicktune index`")
    return pointer


def _reindex(ctx: TaskContext, store: VectorStore, pointers: BluePointers, pointer: BluePointer,
             dest_ref: str, keeper: LockKeeper) -> dict[str, Any]:
    settings = ctx.settings
    old = pointer.collection
    try:
        source_count = store.count(old)
        loader_config = loader_config_of(store, old, pointer.loader)
    except (CollectionNotFound, ValueError) as exc:
        raise TaskRefused(f"the blue collection of {pointer.name!r} is unusable: {exc}") from None
    started = time.monotonic()
    with _create_loader(loader_config) as loader:
        ctx.stage("loading model", 0.0, source_collection=old, items_total=source_count)
        model = _load_model(dest_ref, settings.mlflow_tracking_uri, ctx.should_stop)

        def between_pages() -> None:
            ctx.raise_if_canceled()
            keeper.check()

        def report(stage: str, done: int) -> None:
            fraction = done / source_count if source_count and stage == "embedding" else 1.0
            ctx.progress(stage, fraction, items_done=done, items_total=source_count)

        pages = (refs_from_page(page.ids, page.metadatas) for page in store.iter_items(old, settings.reindex_page_size))
        try:
            built = build_collection(
                store=store, pointers=pointers, pointer_name=pointer.name, previous=pointer, model=model,
                model_ref=dest_ref, loader=loader, loader_config=loader_config, pages=pages,
                expected_count=source_count, metadata={COLLECTION_TASK_KEY: ctx.task.id},
                reindex_task_id=ctx.task.id, before_page=between_pages, on_stage=report,
            )
        except ItemsMissing as exc:
            if exc.transient:
                raise  # may go away: let Dramatiq retry the task
            raise TaskFailed(f"reindex stopped, blue unchanged ({old}): {exc}") from None
        finally:
            del model
    alias = _move_blue_alias(dest_ref, settings.mlflow_tracking_uri)
    return {
        "deployment": pointer.name,
        "source_model": pointer.model_ref,
        "dest_model": dest_ref,
        "previous_collection": old,
        "collection": built.collection,
        "item_count": built.item_count,
        "old_collection_dropped": built.old_collection_dropped,
        "registry_alias": alias,
        "seconds": round(time.monotonic() - started, 3),
    }


def _create_loader(config: dict[str, Any]):
    from pydantic import ValidationError

    from loaders import create_loader

    try:
        return create_loader(config)
    except (ValidationError, ValueError, KeyError) as exc:
        raise TaskRefused(f"the blue collection's loader config is invalid: {safe_detail(exc)}") from None


def _load_model(ref: str, tracking_uri: str, should_stop: Callable[[], bool]):
    """The destination model; an unknown reference is bad input (refused), MLflow down is retried."""
    try:
        return ModelRef.parse(ref).load(tracking_uri, should_stop=should_stop)
    except ModelNotFound as exc:
        raise TaskRefused(f"cannot load model {ref}: {safe_detail(exc.__cause__ or exc)}") from None


def _drop_leftovers(store: VectorStore, task_id: str, keep: str) -> list[str]:
    """Drop collections an earlier attempt of this task left half-built (its worker was killed)."""
    dropped = []
    for name in store.list_collections():
        if name == keep:
            continue
        try:
            if store.collection_metadata(name).get(COLLECTION_TASK_KEY) == task_id and drop_collection(store, name):
                dropped.append(name)
        except CollectionNotFound:
            continue
    if dropped:
        log.info("reindex %s: dropped leftovers of an earlier attempt: %s", task_id, dropped)
    return dropped


# --------------------------------------------------------------------------------------------
# MLflow registry (best effort: the blue pointer in Mongo is the source of truth)
# --------------------------------------------------------------------------------------------

def _registered_run_id(ref: ModelRef, tracking_uri: str) -> str | None:
    """The run behind ``models:/<name>@<alias>`` or ``models:/<name>/<version>``."""
    try:
        return ref.source_run_id(tracking_client(tracking_uri))
    except Exception as exc:
        log.warning("could not resolve %s: %s", ref, type(exc).__name__)
        return None


def _move_blue_alias(dest_ref: str, tracking_uri: str) -> dict[str, str] | None:
    """Point the registry alias ``blue`` at the newest registered version of the destination run."""
    run_id = ModelRef.parse(dest_ref).run_id
    if run_id is None or not tracking_uri:
        return None
    try:
        client = tracking_client(tracking_uri)
        versions = client.search_model_versions(f"run_id = {filter_literal(run_id)}")
        if not versions:
            return None
        newest = max(versions, key=lambda v: int(v.version))
        client.set_registered_model_alias(newest.name, BLUE_ALIAS, str(newest.version))
        return {"name": newest.name, "version": str(newest.version), "alias": BLUE_ALIAS}
    except Exception as exc:
        log.warning("could not move the %r alias to run %s: %s", BLUE_ALIAS, run_id, type(exc).__name__)
        return None
