"""Who holds a trial or a seed, and until when: a holder renews its lease; one that ran out (or whose
holder is a dead process on this machine) frees what it held for the next worker."""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

LEASE_ENV = "HARNESS_LEASE_S"
DEFAULT_LEASE_S = 60.0
LEASE_KEY = "harness:lease"


def lease_seconds() -> float:
    """How long a silent worker keeps its trial or seed; a test shortens it to see a kill recovered fast."""
    return float(os.environ.get(LEASE_ENV, DEFAULT_LEASE_S))


@dataclass(frozen=True)
class Holder:
    """A worker: unique across machines, and checkable for life on its own machine."""

    host: str
    pid: int
    token: str

    @classmethod
    def me(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex[:8])

    @property
    def id(self) -> str:
        return f"{self.host}:{self.pid}:{self.token}"


def new_lease(holder: Holder) -> dict[str, Any]:
    now = time.time()
    return {"owner": holder.id, "expires": now + lease_seconds(), "renewed": now}


def lease_expired(lease: dict[str, Any] | None) -> bool:
    """No lease, a lease past its time, or one whose holder is a dead process on this machine."""
    if not lease:
        return True
    if lease["expires"] < time.time():
        return True
    host, pid, _ = lease["owner"].rsplit(":", 2)
    return host == socket.gethostname() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
