"""Server keys never reach a log line: a filter that masks them wherever a record carries text.

aiohttp logs what it could not parse (a request line over 8 KiB, a NUL in a header) with the raw
bytes in the message, so ``?execution-key=<token>`` or ``Authorization: Basic <token>`` can land
in any record, not only the access log (``access_log.py`` masks that one by parsing the URL).
This filter works on text instead: the message with its arguments, the traceback, the stack and
every string passed in ``extra``. The CLI puts it on its log handler; ``errors.quiet_malformed_requests``
puts it on aiohttp's own loggers, so a process that configures logging its own way is covered too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "***"
SECRET_MASK = "[secret]"  # what a stored secret's value becomes, as in node outputs
MAX_HIDDEN_VALUES = 10_000  # secrets are few; a bound all the same, as values change over months
# The attributes every LogRecord has; any other string attribute came in through ``extra``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_FORMATTER = logging.Formatter()


def _any_spelling(name: str) -> str:
    """``name`` with any of its characters percent-encoded (``execution%2Dkey``, ``%65xecution-key``)."""
    return "".join(f"(?:{re.escape(char)}|%{ord(char):02x})" for char in name)


# Either a secret's name, what separates it from its value in a URL, a header line or a dict/tuple
# repr (``=``, ``%3D``, ``: ``, ``', '``) and an optional scheme; or a scheme alone followed by
# something token-like (aiohttp quotes a too-long header's value without its name). Then the value,
# up to the next delimiter. "Basic"/"Bearer" is never taken for the value, so prose such as "send
# Authorization: Basic <key>" stays readable.
SECRET = re.compile(
    rf"(?P<lead>(?:{_any_spelling('execution-key')}|(?:proxy-)?authorization)"
    r"""['"]?\s*(?:=|:|%3d|,)\s*['"]?\s*(?:(?:basic|bearer)\s+)?"""
    r"|\b(?:basic|bearer)\s+(?=[A-Za-z0-9+/=._~-]{16}))"
    r"""(?!(?:basic|bearer)\b)[^\s&'"#<>;,)\]}]+""",
    re.IGNORECASE,
)


# A webhook trigger's key is the last segment of its path (ours, and Kestra's webhook path).
HOOK_KEY = re.compile(r"(?P<lead>/api/v1/(?:hooks/[^/\s?#]+|(?:[^/\s?#]+/)?executions/webhook/[^/\s?#]+/[^/\s?#]+)/)"
                      r"[^/\s?#'\"<>]+")


def redact(text: str) -> str:
    """``text`` with every server key and webhook key in it replaced by ``***``."""
    return HOOK_KEY.sub(lambda match: match["lead"] + MASK, SECRET.sub(lambda match: match["lead"] + MASK, text))


class RedactSecrets(logging.Filter):
    """Masks server keys, and the values of secrets this process resolved, in a record before any
    handler formats it; it never drops a record."""

    def __init__(self) -> None:
        super().__init__()
        self._values: tuple[str, ...] = ()  # longest first, so no part of a longer value is left over

    def hide(self, values: Iterable[str]) -> None:
        """Mask these values (stored secrets, as resolved for a node) in every record from now on."""
        new = {value for value in values if value} - set(self._values)
        if new:
            kept = (*self._values, *new)[-MAX_HIDDEN_VALUES:]
            self._values = tuple(sorted(kept, key=len, reverse=True))

    def _redact(self, text: str) -> str:
        text = redact(text)
        for value in self._values:
            if value in text:
                text = text.replace(value, SECRET_MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the message: the handler reports it, key-free
            message = f"{record.msg} (with arguments that could not be formatted)"
        record.msg, record.args = self._redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)  # what format() would show
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        for name, value in vars(record).items():
            if name not in _STANDARD and isinstance(value, str):
                setattr(record, name, self._redact(value))
        return True


REDACT_SECRETS = RedactSecrets()

# aiohttp's server-side loggers: the parser's errors, the access log, handler failures, websockets.
AIOHTTP_LOGGERS = ("aiohttp.server", "aiohttp.access", "aiohttp.web", "aiohttp.internal", "aiohttp.websocket")


def protect_aiohttp_loggers() -> None:
    """Filter aiohttp's own loggers, whatever handlers the process has (a no-op when already done)."""
    for name in AIOHTTP_LOGGERS:
        logging.getLogger(name).addFilter(REDACT_SECRETS)
