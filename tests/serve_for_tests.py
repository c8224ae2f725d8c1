"""``graph-runtime serve`` with the test-only recording node type, for tests that need a real process.

    python -m tests.serve_for_tests --db URL --port N [any other flag of graph-runtime serve]

Same flags, settings and production app (``http_api.app.create_app``) as ``graph-runtime serve``;
the registry is the core types plus :class:`tests.recording.Record` and :class:`tests.crashing.Crash`.
On an empty database it prints a first admin key as ``GRAPH_RUNTIME_KEY=<token>``, like ``serve``.
The repository root must be importable (run from it, or with it on ``PYTHONPATH``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import pydantic
from aiohttp import web

from http_api import commands
from http_api.access_log import MaskingAccessLogger
from http_api.app import create_app
from http_api.cli import StructuredFormatter, _parser, _settings
from nodes.registry import Registry, default_registry
from tests.crashing import Crash
from tests.recording import Record


def registry() -> Registry:
    reg = default_registry(plugins=False)
    reg.register(Record)
    reg.register(Crash)
    return reg


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        settings = _settings(args)
    except pydantic.ValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(StructuredFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level, handlers=[handler])
    app = create_app(settings, registry=registry())
    app.on_startup.append(commands.announce_start)  # the same first key as `graph-runtime serve`
    print(f"serve_for_tests: database {settings.database_url}, up to {settings.max_concurrent_jobs} concurrent tasks",
          flush=True)
    web.run_app(app, host=settings.host, port=settings.port, access_log_class=MaskingAccessLogger,
                print=lambda msg: print(msg, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
