"""A resource that checks fences, built on idem's versioned values.

It stores ``fence:data`` and refuses a write whose fence is lower than the
highest it has seen: what docs/commands.md asks of anything a lock protects.
"""

from __future__ import annotations

from idem_client import Client, Stored

#: Compare-and-set rounds before giving up (only concurrent writers make a round fail).
ROUNDS_MAX = 100


def fenced_write(client: Client, key: str, fence: int, data: str) -> bool:
    """True if written; False if a higher fence was seen before."""
    for _ in range(ROUNDS_MAX):
        current = client.value_get(key)
        version = 0
        if current is not None:
            seen = int(current.value.split(b":", 1)[0])
            if fence < seen:
                return False
            version = current.version
        if isinstance(client.value_set(key, f"{fence}:{data}", if_version=version), Stored):
            return True
    raise RuntimeError(f"{key}: no write after {ROUNDS_MAX} rounds")
