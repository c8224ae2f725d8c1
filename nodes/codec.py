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
