"""``LOG_FORMAT=json``: one JSON object per line, for a log shipper (Loki, Elasticsearch, CloudWatch).

Each line has ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, then every field the
record was given in ``extra`` as a field of its own: the stable ``action`` (``task_queued``,
``node_finished``, ``http_request``…) and the ids (``task_id``, ``flow_id``, ``node_id``…), so
``action="node_failed" and task_id=42`` is a query, not a regex. A traceback is one string in
``exc``. The redaction filter sits on the handler, so it has masked the record before this runs.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from nodes import codec

# Every attribute a bare LogRecord has (plus what formatting adds): anything else came in through ``extra``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _plain(value: Any) -> Any:
    """A value JSON can carry as it is; anything else as its text."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(item, (str, int, float, bool)) for item in value):
        return list(value)
    return str(value)


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON with its ``extra`` fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in line:
                line[name] = _plain(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return codec.dumps_str(line)
