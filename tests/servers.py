"""Real servers for the tests, started by the tests themselves on free local ports (127.0.0.1 only):
a throwaway PostgreSQL cluster and an `mlflow server` subprocess."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def postgres_bindir() -> Path | None:
    """Where the machine's PostgreSQL server binaries are, or None where PostgreSQL is absent."""
    candidates = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        candidates.append(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                         check=True).stdout.strip())
    candidates += sorted(str(p) for p in Path("/usr/lib/postgresql").glob("*/bin"))
    return next((Path(c) for c in candidates if (Path(c) / "initdb").exists()), None)


def _as_postgres(command: list[str]) -> list[str]:
    # The server refuses to run as root; the distribution's `postgres` account runs it.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A fresh cluster in a throwaway directory; yields its SQLAlchemy URL."""
    bindir = postgres_bindir()
    assert bindir is not None
    data = Path(tempfile.mkdtemp(prefix="harness-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    try:
        subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U",
                                     "harness"]), check=True, capture_output=True)
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data / "db"), "-w", "-l",
                                     str(data / "log"), "-o",
                                     f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"]),
                       check=True, capture_output=True)
        yield f"postgresql://harness@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate",
                                     "stop"]), capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(workdir: Path) -> Iterator[str]:
    """`mlflow server` on a free local port with a sqlite backend; yields its http URL."""
    port = free_port()
    log = open(workdir / "mlflow-server.log", "w")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{workdir / 'server.db'}",
         "--default-artifact-root", (workdir / "server-artifacts").as_uri(), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            assert process.poll() is None, (workdir / "mlflow-server.log").read_text()[-2000:]
            assert time.time() < deadline, "mlflow server did not answer within 90 s"
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
