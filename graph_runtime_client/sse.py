"""Server-sent events: the ``text/event-stream`` parser of the WHATWG HTML standard (§9.2.6).

Fed bytes as they arrive, in chunks cut anywhere (inside a line, a UTF-8 character or a CRLF);
gives back the events each chunk completes. Only the protocol: no I/O here.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


@dataclass(frozen=True)
class RawEvent:
    """A dispatched event before its data is interpreted."""

    id: str | None
    event: str
    data: str


class EventStreamParser:
    """Incremental parser. ``last_event_id`` is what a reconnection sends as ``Last-Event-ID``;
    ``retry_ms`` the reconnection delay the server asked for (None until it says)."""

    def __init__(self, last_event_id: str | None = None) -> None:
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False
        self._after_cr = False  # a chunk ended on CR: a LF opening the next one belongs to it
        self._data: list[str] = []
        self._event = ""

    def feed(self, chunk: bytes) -> list[RawEvent]:
        text = self._decoder.decode(chunk)
        if not text:  # a chunk cut inside a UTF-8 character: wait for the rest
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")  # one BOM at the very start is ignored
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        self._after_cr = text.endswith("\r")
        self._buffer += text
        lines = self._buffer.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._buffer = lines.pop()  # an unfinished line waits for the next chunk
        events = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> RawEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):  # a comment (servers send these as keep-alives)
            return None
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> RawEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return RawEvent(id=self.last_event_id, event=event or "message", data="\n".join(data))
