"""worker.local_services: the peak resident memory of a started process tree (what the demo reports
for its worker, whose Dramatiq worker processes are children of the started process)."""

from __future__ import annotations

import sys
import textwrap

from worker.local_services import start_process

CHILD = textwrap.dedent("""
    import time
    block = bytearray(300 * 2**20)          # touched: 300 MiB resident at the peak
    for i in range(0, len(block), 4096):
        block[i] = 1
    del block
    print("child freed", flush=True)
    time.sleep(60)
""")
PARENT = textwrap.dedent(f"""
    import subprocess, sys, time
    subprocess.Popen([sys.executable, "-c", {CHILD!r}])
    time.sleep(60)
""")


def test_peak_rss_covers_the_process_tree(tmp_path):
    ready = lambda handle: "child freed" in handle.log_tail()  # noqa: E731
    handle = start_process("tree", [sys.executable, "-c", PARENT], port=0, url="", workdir=tmp_path,
                           ready_check=ready, ready_timeout=60)
    try:
        peak = handle.peak_rss_mb()
        assert peak is not None and 300 <= peak < 600, peak  # the child's high-water mark, not the parent's
    finally:
        handle.stop()
    assert handle.peak_rss_mb() is None  # nothing left to read
