"""Replies of idem's commands as frozen dataclasses, one class per status word.

A command with several possible outcomes returns a union of these classes;
match on the class (``match reply: case Started(fence=f): ...``) or use
``isinstance``. Binary values (results, owners, holders, states) are
``bytes``, exactly as stored.
"""

from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------- IDEM.*


@dataclass(frozen=True, slots=True)
class Started:
    """This caller runs the operation: do the work, then COMMIT or ABORT with `fence`.

    `attempt` above 1 means an earlier attempt's lease ran out: check for
    half-done work.
    """

    fence: int
    attempt: int


@dataclass(frozen=True, slots=True)
class Running:
    """Another attempt holds a live lease (fence `fence`, `lease_left_ms` to go)."""

    fence: int
    lease_left_ms: int


@dataclass(frozen=True, slots=True)
class Done:
    """The operation completed earlier: replay `result`."""

    result: bytes


@dataclass(frozen=True, slots=True)
class Absent:
    """No record (or one whose lease ran out): the key is available."""


Begin = Started | Running | Done
Record = Absent | Running | Done

# ---------------------------------------------------------------- CLAIM


@dataclass(frozen=True, slots=True)
class Claimed:
    """The key (or every key of a CLAIM.ALL) is now owned by the caller."""


@dataclass(frozen=True, slots=True)
class Held:
    """The key is owned by `owner`."""

    owner: bytes


@dataclass(frozen=True, slots=True)
class ClaimConflict:
    """One key of a CLAIM.ALL that someone else owns."""

    key: bytes
    owner: bytes


@dataclass(frozen=True, slots=True)
class HeldAll:
    """CLAIM.ALL claimed nothing: these keys are owned by others (request order)."""

    conflicts: tuple[ClaimConflict, ...]


Claim = Claimed | Held
ClaimAll = Claimed | HeldAll

# ---------------------------------------------------------------- LOCK


@dataclass(frozen=True, slots=True)
class Acquired:
    """The caller holds the lock; protected resources must check `fence`."""

    fence: int


@dataclass(frozen=True, slots=True)
class Locked:
    """The lock is held by `holder` for `lease_left_ms` more."""

    holder: bytes
    lease_left_ms: int


@dataclass(frozen=True, slots=True)
class Renewed:
    """The lease was extended; the fence is unchanged."""

    fence: int


@dataclass(frozen=True, slots=True)
class Lost:
    """The caller no longer holds the lock (its lease ran out, or it passed on)."""


@dataclass(frozen=True, slots=True)
class Free:
    """Nobody holds the lock."""


@dataclass(frozen=True, slots=True)
class LockState:
    """LOCK.INFO of a held lock (`waiters` counts the answering server's parked callers)."""

    owner: bytes
    fence: int
    lease_left_ms: int
    waiters: int


LockReply = Acquired | Locked
RenewReply = Renewed | Lost
LockInfo = Free | LockState

# ---------------------------------------------------------------- COUNTER


@dataclass(frozen=True, slots=True)
class Applied:
    """The ADD applied; `value` is the new value."""

    value: int


@dataclass(frozen=True, slots=True)
class Refused:
    """The ADD would leave the bounds (or overflow): nothing changed; `value` is the current value."""

    value: int


@dataclass(frozen=True, slots=True)
class Replayed:
    """This op id was applied before; `value` is what that first application produced."""

    value: int


CounterAdd = Applied | Refused | Replayed

# ---------------------------------------------------------------- VALUE


@dataclass(frozen=True, slots=True)
class Versioned:
    """A stored value and its version (versions start at 1 and only grow)."""

    value: bytes
    version: int


@dataclass(frozen=True, slots=True)
class Stored:
    """VALUE.SET wrote; `version` is the new version."""

    version: int


@dataclass(frozen=True, slots=True)
class Conflict:
    """VALUE.SET's IFVERSION did not match; `version` is the current one (0: absent)."""

    version: int


ValueSet = Stored | Conflict

# ---------------------------------------------------------------- FSM


@dataclass(frozen=True, slots=True)
class Moved:
    """The key moved to `state`."""

    state: bytes


@dataclass(frozen=True, slots=True)
class Already:
    """The key was already in `state` (a replayed transition is harmless)."""

    state: bytes


@dataclass(frozen=True, slots=True)
class Disallowed:
    """The move does not start from an allowed state; `current` is None when the key is absent."""

    current: bytes | None


FsmMove = Moved | Already | Disallowed

# ---------------------------------------------------------------- SLOTS


@dataclass(frozen=True, slots=True)
class Reserved:
    """Every slot of the range is now the caller's."""


@dataclass(frozen=True, slots=True)
class SlotConflict:
    """One slot of the range that someone else holds."""

    slot: int
    holder: bytes


@dataclass(frozen=True, slots=True)
class SlotsTaken:
    """Nothing was reserved: these slots are held by others, in slot order."""

    conflicts: tuple[SlotConflict, ...]


SlotsReserve = Reserved | SlotsTaken
