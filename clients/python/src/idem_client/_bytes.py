"""Keys, owners and values: text is sent as UTF-8, bytes as they are."""

from __future__ import annotations

#: What every key, owner, name, scope, state or value argument accepts.
Bin = str | bytes


def to_bytes(value: Bin) -> bytes:
    """UTF-8 for text, bytes unchanged."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"expected str or bytes, got {type(value).__name__}")
