"""The storage-wide mutex every decision two workers could take at once is taken under.

An flock on a file beside a local store (a journal file or a sqlite database), and a PostgreSQL advisory
lock for a PostgreSQL storage: both are released by the operating system or the server when their holder
dies, so a killed worker never leaves the others waiting.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

from harness.api.errors import HarnessError


class FileMutex:
    """flock on a file: one holder among all processes on this machine; freed when the holder dies."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._threads = threading.Lock()  # flock is per open file, so threads of one process queue here

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._threads, open(self.path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class PostgresMutex:
    """A session-level advisory lock: the server frees it when the holder's connection drops."""

    KEY = zlib.crc32(b"harness-coordination")

    def __init__(self, url: str):
        self.conninfo = _libpq_url(url)
        self._threads = threading.Lock()
        self._connection = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._threads:
            connection = self._connect()
            connection.execute("SELECT pg_advisory_lock(%s)", (self.KEY,))
            try:
                yield
            finally:
                connection.execute("SELECT pg_advisory_unlock(%s)", (self.KEY,))

    def _connect(self):
        import psycopg

        if self._connection is None or self._connection.closed:
            try:
                self._connection = psycopg.connect(self.conninfo, autocommit=True)
            except psycopg.Error as exc:
                reason = " ".join(str(exc).split())  # psycopg's message spans lines; the CLI prints one
                raise HarnessError(f"--storage postgresql://{_host_of(self.conninfo)}: cannot open the database "
                                   f"({reason}); start its server, or fix the URL") from None
        return self._connection


def _libpq_url(url: str) -> str:
    """SQLAlchemy's postgresql+driver://… as the plain URL libpq reads."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def _host_of(conninfo: str) -> str:
    """host:port/database of a PostgreSQL URL, without the user and password."""
    return conninfo.split("://", 1)[-1].rpartition("@")[2]


def mutex_for(storage_spec: str | None, workdir: Path) -> FileMutex | PostgresMutex:
    """The mutex every worker sharing this storage agrees on, whatever its current directory."""
    # Not "<journal>.lock": Optuna's journal backend takes that name for its own lock.
    if storage_spec is None:
        return FileMutex((Path(workdir) / "optuna.journal.workers.lock").resolve())
    if storage_spec.startswith("postgresql"):
        return PostgresMutex(storage_spec)
    if storage_spec.startswith("sqlite:///"):
        return FileMutex(Path(storage_spec.removeprefix("sqlite:///") + ".workers.lock").resolve())
    if "://" not in storage_spec:
        return FileMutex(Path(storage_spec + ".workers.lock").resolve())
    raise HarnessError(f"--storage {storage_spec}: workers coordinate through a journal file, sqlite or "
                       "postgresql storage; give one of those")
