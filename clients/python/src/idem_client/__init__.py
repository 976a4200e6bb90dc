"""Typed Python clients for idem.

- :class:`Client` (sync) and :class:`AsyncClient` (asyncio), both on redis-py:
  one method per command, replies as frozen dataclasses
  (:mod:`idem_client.replies`), one exception class per error code.
- ``@client.idempotent(key=...)``: run a function once per key, replay its result.
- ``client.lock(name, lease_ms=...)``: a context manager with a watchdog,
  a fence and a ``lost`` event.
- :mod:`idem_client.asgi`: ``IdempotencyMiddleware`` for FastAPI / Starlette.
- :mod:`idem_client.sql`: the same primitives inside your own PostgreSQL
  (psycopg 3) or MySQL / MariaDB (PyMySQL) transaction.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .aio import AsyncClient
    from .client import Client
    from .errors import (
        Busy,
        CommandError,
        FingerprintMismatch,
        IdemError,
        InFlight,
        LeaseExpired,
        LimitExceeded,
        LockLost,
        LockNotAcquired,
        Mismatch,
        NoAuth,
        NoPermission,
        OutcomeUnknown,
        OutOfMemory,
        ReadOnly,
        Stale,
        Unavailable,
        UnexpectedReply,
    )
    from .idempotent import AsyncIdempotent, Codec, Outcome, SyncIdempotent
    from .lock import AsyncLock, Lock
    from .replies import (
        Absent,
        Acquired,
        Already,
        Applied,
        ClaimConflict,
        Claimed,
        Conflict,
        Disallowed,
        Done,
        Free,
        Held,
        HeldAll,
        Locked,
        LockState,
        Lost,
        Moved,
        Refused,
        Renewed,
        Replayed,
        Reserved,
        Running,
        SlotConflict,
        SlotsTaken,
        Started,
        Stored,
        Versioned,
    )

# Imported on first use, so that `idem_client.sql` works without redis-py installed.
_LAZY = {
    "Absent": ".replies",
    "Acquired": ".replies",
    "Already": ".replies",
    "Applied": ".replies",
    "AsyncClient": ".aio",
    "AsyncIdempotent": ".idempotent",
    "AsyncLock": ".lock",
    "Busy": ".errors",
    "ClaimConflict": ".replies",
    "Claimed": ".replies",
    "Client": ".client",
    "Codec": ".idempotent",
    "CommandError": ".errors",
    "Conflict": ".replies",
    "Disallowed": ".replies",
    "Done": ".replies",
    "FingerprintMismatch": ".errors",
    "Free": ".replies",
    "Held": ".replies",
    "HeldAll": ".replies",
    "IdemError": ".errors",
    "InFlight": ".errors",
    "LeaseExpired": ".errors",
    "LimitExceeded": ".errors",
    "Lock": ".lock",
    "LockLost": ".errors",
    "LockNotAcquired": ".errors",
    "LockState": ".replies",
    "Locked": ".replies",
    "Lost": ".replies",
    "Mismatch": ".errors",
    "Moved": ".replies",
    "NoAuth": ".errors",
    "NoPermission": ".errors",
    "Outcome": ".idempotent",
    "OutcomeUnknown": ".errors",
    "OutOfMemory": ".errors",
    "ReadOnly": ".errors",
    "Refused": ".replies",
    "Renewed": ".replies",
    "Replayed": ".replies",
    "Reserved": ".replies",
    "Running": ".replies",
    "SlotConflict": ".replies",
    "SlotsTaken": ".replies",
    "Stale": ".errors",
    "Started": ".replies",
    "Stored": ".replies",
    "SyncIdempotent": ".idempotent",
    "Unavailable": ".errors",
    "UnexpectedReply": ".errors",
    "Versioned": ".replies",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'idem_client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "Absent",
    "Acquired",
    "Already",
    "Applied",
    "AsyncClient",
    "AsyncIdempotent",
    "AsyncLock",
    "Busy",
    "ClaimConflict",
    "Claimed",
    "Client",
    "Codec",
    "CommandError",
    "Conflict",
    "Disallowed",
    "Done",
    "FingerprintMismatch",
    "Free",
    "Held",
    "HeldAll",
    "IdemError",
    "InFlight",
    "LeaseExpired",
    "LimitExceeded",
    "Lock",
    "LockLost",
    "LockNotAcquired",
    "LockState",
    "Locked",
    "Lost",
    "Mismatch",
    "Moved",
    "NoAuth",
    "NoPermission",
    "OutOfMemory",
    "Outcome",
    "OutcomeUnknown",
    "ReadOnly",
    "Refused",
    "Renewed",
    "Replayed",
    "Reserved",
    "Running",
    "SlotConflict",
    "SlotsTaken",
    "Stale",
    "Started",
    "Stored",
    "SyncIdempotent",
    "Unavailable",
    "UnexpectedReply",
    "Versioned",
]
