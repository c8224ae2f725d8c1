"""The one JSON codec: orjson, wrapped so no other module calls it directly."""

from __future__ import annotations

from typing import Any

import orjson

DecodeError = orjson.JSONDecodeError

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY


def _default(value: Any) -> Any:
    # pydantic models and sets reach us from node outputs; anything else is a bug upstream.
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> bytes:
    """Serialise to compact UTF-8 JSON bytes."""
    return orjson.dumps(value, default=_default, option=_OPTIONS)


def canonical(value: Any) -> bytes:
    """JSON with sorted keys: equal data gives equal bytes (fingerprints, digests)."""
    return orjson.dumps(value, default=_default, option=_OPTIONS | orjson.OPT_SORT_KEYS)


def dumps_str(value: Any) -> str:
    """Serialise to a JSON string (for aiohttp's ``dumps=`` hooks and text columns)."""
    return dumps(value).decode()


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON; raises :data:`DecodeError` on bad input."""
    return orjson.loads(data)


def size_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` (JSON-ready data) certainly encodes to more than ``limit`` bytes.

    A walk that counts characters and stops as soon as the count passes ``limit``, so a huge
    output is caught before anything encodes it (encoding 300 MB held the event loop for
    seconds). It counts a lower bound (escapes and multi-byte characters are counted once), so a
    False here still needs the exact check on the encoded bytes.
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 3  # quotes and a separator
        elif isinstance(item, dict):
            total += 2
            for key, inner in item.items():
                total += len(key) + 4 if isinstance(key, str) else 8
                stack.append(inner)
        elif isinstance(item, (list, tuple)):
            total += 2
            stack.extend(item)
        else:
            total += 5  # a number, a bool or null: a few bytes
        if total > limit:
            return True
    return False
