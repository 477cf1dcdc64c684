"""Real local service processes on free ports: used by the demo, the benchmarks and the tests.

Each ``start_*`` function launches a real server process (no mocks), waits until its TCP port
answers and returns a :class:`LocalProcess` whose ``stop()`` terminates it. They are context
managers too::

    with start_mongo_wire() as mongo:
        client = pymongo.MongoClient(mongo.url)

Nothing here is used by a production worker: production points the settings at real servers.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_answers(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _bin(name: str) -> str:
    """A console script of the running interpreter's environment (works without an activated venv)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} is not installed in this environment")
    return found


@dataclass
class LocalProcess:
    """A started server process. ``url`` is what a client connects to."""

    name: str
    process: subprocess.Popen
    port: int
    url: str
    log_path: Path
    workdir: Path | None = None
    extra: dict = field(default_factory=dict)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group (simulates a crash)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def peak_rss_mb(self) -> float | None:
        """The highest resident-memory high-water mark (``VmHWM``) of this process and its
        descendants, in MiB: e.g. the Dramatiq worker process that trained. None off Linux."""
        return _tree_peak_rss_mb(self.process.pid)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> "LocalProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tree_peak_rss_mb(pid: int) -> float | None:
    peaks: list[float] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        proc = Path("/proc") / str(current)
        try:
            status = (proc / "status").read_text()
            for task in (proc / "task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
        peaks += [int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")]
    return round(max(peaks), 1) if peaks else None


def start_process(
    name: str,
    cmd: list[str],
    port: int,
    url: str,
    *,
    env: dict[str, str] | None = None,
    ready_timeout: float = 60.0,
    workdir: Path | None = None,
    ready_check=None,
) -> LocalProcess:
    """Start ``cmd`` in its own process group, log to a file, wait for ``port`` (or ``ready_check``)."""
    log_dir = Path(tempfile.mkdtemp(prefix=f"clicktune-{name}-log-"))
    log_path = log_dir / f"{name}.log"
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(workdir) if workdir else None,
            start_new_session=True,
        )
    handle = LocalProcess(name, process, port, url, log_path, workdir)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: {handle.log_tail()}")
        ready = ready_check(handle) if ready_check else port_answers(port)
        if ready:
            return handle
        time.sleep(0.1)
    handle.stop()
    raise TimeoutError(f"{name} did not answer on port {port} within {ready_timeout}s: {handle.log_tail()}")


def start_mongo_wire(db_file: str | Path | None = None, port: int | None = None) -> LocalProcess:
    """The nx-27017 MongoDB wire-protocol server (SQLite storage). ``db_file=None`` keeps it in memory."""
    port = port or free_port()
    db = str(db_file) if db_file else "memory"
    url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    # nx-27017 refuses to start while its default PID file (/tmp/nx_27017.pid) names a live process:
    # give every instance its own, so several servers (tests, demo, parallel runs) can coexist.
    pid_file = Path(tempfile.mkdtemp(prefix="clicktune-mongo-pid-")) / "nx_27017.pid"
    cmd = [_bin("nx-27017"), "--db", db, "--host", "127.0.0.1", "-p", str(port), "--pid-file", str(pid_file)]
    return start_process("mongo", cmd, port, url)


def start_moto_s3(port: int | None = None) -> LocalProcess:
    """moto's S3-compatible HTTP server."""
    port = port or free_port()
    return start_process("moto", [_bin("moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, f"http://127.0.0.1:{port}")


def start_gcs_emulator(data_dir: str | Path | None = None, port: int | None = None) -> LocalProcess:
    """gcp-storage-emulator; clients use ``STORAGE_EMULATOR_HOST=<url>`` and anonymous credentials."""
    port = port or free_port()
    data_dir = Path(data_dir or tempfile.mkdtemp(prefix="clicktune-gcs-"))
    cmd = [_bin("gcp-storage-emulator"), "-d", str(data_dir), "start", "--host", "127.0.0.1", "--port", str(port)]
    return start_process("gcs", cmd, port, f"http://127.0.0.1:{port}", workdir=data_dir)


def _mlflow_ready(handle: LocalProcess) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{handle.url}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def start_mlflow_server(root: str | Path | None = None, port: int | None = None, ready_timeout: float = 180.0) -> LocalProcess:
    """A real ``mlflow server`` (SQLite backend, local artifacts, one worker, no job runner)."""
    port = port or free_port()
    root = Path(root or tempfile.mkdtemp(prefix="clicktune-mlflow-"))
    root.mkdir(parents=True, exist_ok=True)
    artifacts = root / "artifacts"
    artifacts.mkdir(exist_ok=True)
    cmd = [
        _bin("mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--default-artifact-root", str(artifacts),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    return start_process("mlflow", cmd, port, f"http://127.0.0.1:{port}", env=env,
                         ready_timeout=ready_timeout, workdir=root, ready_check=_mlflow_ready)
