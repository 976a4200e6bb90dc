"""Every error this package raises derives from :class:`IdemError`.

The server answers a request it cannot honour with an error whose first word
is a code (docs/commands.md, "Common rules"); each code has its own class
here, so callers catch what they can act on. The request changed nothing,
except under :class:`OutcomeUnknown`, whose outcome is unknown.
"""

from __future__ import annotations

from typing import ClassVar


class IdemError(Exception):
    """Base class of every error of this package."""

    code: ClassVar[str] = ""


class CommandError(IdemError):
    """`ERR`: syntax, arity, a bad argument or an unknown command."""

    code = "ERR"


class LimitExceeded(IdemError):
    """`LIMIT`: a size or count over one of the server's limits."""

    code = "LIMIT"


class Mismatch(IdemError):
    """`MISMATCH`: the key is in use with a different fingerprint."""

    code = "MISMATCH"


class Stale(IdemError):
    """`STALE`: the fence is no longer the current one (its lease ran out)."""

    code = "STALE"


class NoPermission(IdemError):
    """`NOPERM`: the connection's user may not run this command."""

    code = "NOPERM"


class NoAuth(IdemError):
    """`NOAUTH`: the server requires AUTH first (or the password was wrong)."""

    code = "NOAUTH"


class ReadOnly(IdemError):
    """`READONLY`: storage cannot accept writes now (disk full, fsync failed)."""

    code = "READONLY"


class Busy(IdemError):
    """`BUSY`: overloaded, too many waiters, or a backend unreachable; retry later."""

    code = "BUSY"


class OutOfMemory(IdemError):
    """`OOM`: the server's embedded store is at its memory bound; nothing was created.

    Records that exist can still be read, committed, released and expired.
    """

    code = "OOM"


class UnexpectedReply(IdemError):
    """The server answered something the contract does not allow for this command.

    Raised instead of guessing: a client that turns an unknown reply into a
    plausible value is how duplicates slip through.
    """


class Unavailable(IdemError):
    """The server could not be reached, or the connection broke mid-command.

    The command may or may not have been applied.
    """


class OutcomeUnknown(Unavailable):
    """`UNKNOWN`: the server's external store broke off after the command was sent.

    The command may or may not have taken effect (the one server error that
    does not mean "changed nothing"): retry with the same key or op id, or read.
    An :class:`Unavailable` too, so code that handles a broken connection
    handles it.
    """

    code = "UNKNOWN"


class FingerprintMismatch(Mismatch):
    """An idempotent call reused a key with different arguments."""


class InFlight(IdemError):
    """An idempotent call found another attempt still running (and did not wait, or waited in vain)."""

    def __init__(self, message: str, *, lease_left_ms: int) -> None:
        super().__init__(message)
        self.lease_left_ms = lease_left_ms


class LeaseExpired(Stale):
    """The function ran, but its lease ran out before the result could be committed.

    Another attempt may have started meanwhile; the result is attached so the
    caller can decide what to do with it.
    """

    def __init__(self, message: str, *, result: object) -> None:
        super().__init__(message)
        self.result = result


class LockNotAcquired(IdemError):
    """The lock stayed held by someone else for the whole wait."""

    def __init__(self, message: str, *, holder: bytes, lease_left_ms: int) -> None:
        super().__init__(message)
        self.holder = holder
        self.lease_left_ms = lease_left_ms


class LockLost(IdemError):
    """The lock was lost (renewal failed or its lease ran out); its holder must stop."""


ERRORS_BY_CODE: dict[str, type[IdemError]] = {
    cls.code: cls
    for cls in (
        CommandError,
        LimitExceeded,
        Mismatch,
        Stale,
        NoPermission,
        NoAuth,
        ReadOnly,
        Busy,
        OutOfMemory,
        OutcomeUnknown,
    )
}
