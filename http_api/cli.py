"""The ``graph-runtime`` command: serve, migrate, keys, secrets, flows, run."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydantic

from http_api.json_logs import JsonFormatter
from http_api.redaction import REDACT_SECRETS
from http_api.settings import Settings

SHORT_FLAGS = {"database_url": "--db", "flows_dir": "--flows", "pools": "--pool"}
REPEATED = {"pools"}  # given once per value (--pool gpu --pool big); a comma list also works


def _settings(args: argparse.Namespace) -> Settings:
    """Flags win over GRAPH_RUNTIME_* variables, which win over defaults."""
    overrides: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return Settings(**overrides)


def _setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting (``--max-body-bytes`` for GRAPH_RUNTIME_MAX_BODY_BYTES…); pydantic converts."""
    for name, field in Settings.model_fields.items():
        flags = [f"--{name.replace('_', '-')}"]
        if name in SHORT_FLAGS:
            flags.insert(0, SHORT_FLAGS[name])
        parser.add_argument(*flags, dest=name, metavar="VALUE", action="append" if name in REPEATED else "store",
                            help=f"GRAPH_RUNTIME_{name.upper()} (default: {field.default})")


class StructuredFormatter(logging.Formatter):
    """Appends the stable ``action`` and the ids passed in ``extra`` as ``key=value`` pairs."""

    FIELDS = ("action", "task_id", "flow_id", "node_id", "revision", "status", "count")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        pairs = [f"{name}={getattr(record, name)}" for name in self.FIELDS if hasattr(record, name)]
        return f"{line} [{' '.join(pairs)}]" if pairs else line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graph-runtime", description="Self-hosted node-graph workflow runtime.")
    _remote_flags(parser, default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    _setting_flags(common)

    sub.add_parser("serve", parents=[common], help="run the API and the workers")
    sub.add_parser("worker", parents=[common], help="run tasks without serving HTTP (beside `serve --workers 0`)")
    migrate = sub.add_parser("migrate", parents=[common], help="upgrade the database schema to this version's")
    migrate.add_argument("--check", action="store_true", help="change nothing; exit 1 if an upgrade is due")

    keys = sub.add_parser("keys", help="manage server keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", parents=[common], help="create a key and print its token")
    create.add_argument("name")
    create.add_argument("--scope", choices=("admin", "execute"), default="execute")
    keys.add_parser("list", parents=[common], help="list keys (no secrets)")
    revoke = keys.add_parser("revoke", parents=[common], help="revoke a key")
    revoke.add_argument("key_id")

    _secrets_parser(sub, common)
    sub.add_parser("webhook-secret", parents=[common],
                   help="print the callbacks' signing secret (whsec_…): the current one if never shown, else a new one")

    flows = sub.add_parser("flows", help="list or validate flows").add_subparsers(dest="flows_command", required=True)
    flows.add_parser("list", parents=[common], help="load the flows directory and list stored flows")
    show = flows.add_parser("show", parents=[common], help="draw a flow's DAG; with --start/--end, mark the run set")
    show.add_argument("flow_id")
    show.add_argument("--start")
    show.add_argument("--end")
    show.add_argument("--plan", action="store_true",
                      help="after the DAG, print the dry run: the parallel levels and the estimated cost range")
    show.add_argument("--set", action="append", default=[], metavar="NODE.PATH=VALUE",
                      help="with --plan: a node setting, as for run (a start's data, an input fed from outside)")
    validate = flows.add_parser("validate", parents=[common], help="validate flow files; exit 1 on any problem")
    validate.add_argument("paths", nargs="+", type=Path)
    push = flows.add_parser("push", parents=[common],
                            help="publish flow files as new revisions (the only flows command that writes)")
    push.add_argument("paths", nargs="*", type=Path, help="flow files (default: every file of the flows directory)")
    _tasks_parser(sub, common)

    run = sub.add_parser("run", parents=[common], help="run a flow in-process and print the task")
    run.add_argument("flow_id")
    run.add_argument("--start")
    run.add_argument("--end")
    run.add_argument("--result")
    run.add_argument("--set", action="append", default=[], metavar="NODE.PATH=VALUE",
                     help="a node setting; VALUE is JSON if it parses, else a string")
    run.add_argument("--revision", type=int)
    run.add_argument("--timeout", type=float, help="task timeout in seconds")
    run.add_argument("--push", action="store_true", help="first publish the flow's edited file (as flows push)")
    run.add_argument("--remote", action="store_true", help="run on the server of --url instead of in-process")
    run.add_argument("--file", action="append", default=[], metavar="NODE.PATH=FILE",
                     help="with --remote: upload a local file and give it as that setting")
    _remote_flags(run, default=argparse.SUPPRESS)
    return parser


def _remote_flags(parser: argparse.ArgumentParser, *, default: Any) -> None:
    """``--url``/``--key``: before the command, or after it (``default=SUPPRESS`` there, so a
    subcommand that is not given them keeps the values given before it)."""
    parser.add_argument("--url", default=default, help="a graph-runtime server (else GRAPH_RUNTIME_URL)")
    parser.add_argument("--key", default=default, help="its key's token (else GRAPH_RUNTIME_KEY)")


def _tasks_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    tasks = sub.add_parser("tasks", help="list, show, cancel or watch tasks (of --url's server, else --db)")
    commands = tasks.add_subparsers(dest="tasks_command", required=True)
    listed = commands.add_parser("list", parents=[common], help="history, newest first")
    listed.add_argument("--flow")
    listed.add_argument("--status", help="queued, running, succeeded, failed, cancelled (or 1-5)")
    listed.add_argument("--limit", type=int, default=20)
    listed.add_argument("--before", type=int, help="only tasks older than this id (the next page)")
    for name, text in (("show", "print the task JSON"), ("cancel", "cancel a queued or running task"),
                       ("watch", "a live table of its nodes until it ends, then the task JSON")):
        command = commands.add_parser(name, parents=[common], help=text)
        command.add_argument("task_id", type=int)
    for command in (listed, *(commands.choices[name] for name in ("show", "cancel", "watch"))):
        _remote_flags(command, default=argparse.SUPPRESS)


def _secrets_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    secrets = sub.add_parser("secrets", help="manage secrets (values are never shown)")
    commands = secrets.add_subparsers(dest="secrets_command", required=True)
    put = commands.add_parser("set", parents=[common], help="set a secret; the value is read from standard input")
    put.add_argument("name")
    put.add_argument("--mode", choices=("prod", "dev"), default="prod")
    commands.add_parser("list", parents=[common], help="list secrets and their modes (no values)")
    delete = commands.add_parser("delete", parents=[common], help="delete a secret (every mode, or --mode's)")
    delete.add_argument("name")
    delete.add_argument("--mode", choices=("prod", "dev"))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except pydantic.ValidationError as exc:
        for problem in exc.errors():
            name = ".".join(str(p) for p in problem["loc"])
            print(f"error: GRAPH_RUNTIME_{name.upper()} / --{name.replace('_', '-')}: {problem['msg']}",
                  file=sys.stderr)
        return 2
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json"
                         else StructuredFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(REDACT_SECRETS)  # every record this process writes, whichever logger made it
    logging.basicConfig(level=settings.log_level, handlers=[handler])
    # alembic narrates every start at INFO (its plugins, "Context impl…"); storage logs the upgrades itself.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from http_api import commands  # the heavy imports wait until a command runs

    try:
        return commands.dispatch(args, settings)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
