"""What each CLI command does. One sync entry (``dispatch``) at the edge; the rest is async."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import re
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from graph_runtime import errors as flow_errors
from graph_runtime import selection
from graph_runtime.flow import Flow
from http_api import auth, errors, flow_sync, heap, planning, processes
from http_api.access_log import MaskingAccessLogger
from http_api.app import close_services, create_app, open_services
from http_api.body import SERVICES
from http_api.flows_dir import check_file
from http_api.progress import run_with_progress
from http_api.schemas import ExecuteBody, parse_body
from http_api.services import Services, check
from http_api.settings import Settings
from http_api.views import key_view, timestamp_text
from nodes import codec
from nodes.errors import GraphRuntimeError
from nodes.registry import default_registry
from storage import engine as storage_engine
from storage.secrets import NAME_PATTERN

log = logging.getLogger("graph_runtime.cli")


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "flows" and args.flows_command == "validate":
        return validate_files(args.paths)
    try:
        if args.command == "secrets" and args.secrets_command == "set":
            args.value = read_secret_value(args.name)  # before anything opens: it may wait for a person
        if args.command == "serve":
            return serve(settings)
        if args.command == "worker":
            from http_api.worker import run_worker

            return asyncio.run(run_worker(settings))
        if args.command == "migrate":
            return asyncio.run(migrate(settings, check=args.check))
        if args.command == "tasks" or getattr(args, "remote", False):
            from http_api import task_commands  # the client's imports only when a command needs them

            return asyncio.run(task_commands.run_command(args, settings))
        return asyncio.run(_dispatch_async(args, settings))
    except GraphRuntimeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        for problem in getattr(exc, "problems", []):
            print(f"  - {problem}", file=sys.stderr)
        return 1


async def _dispatch_async(args: argparse.Namespace, settings: Settings) -> int:
    # Reading is never writing: no command loads the flows directory into the database as `serve`
    # does; `flows push` publishes, `run` adds a flow the database lacks (and says so).
    services = await open_services(settings.model_copy(update={"flows_dir": None}), one_off=True)
    try:
        if args.command == "keys":
            return await keys_command(services, args)
        if args.command == "secrets":
            return await secrets_command(services, args)
        if args.command == "webhook-secret":  # shown once: a second call rotates it (SPEC §11 callbacks)
            print(await services.callbacks.store.reveal_secret(services.cipher))
            return 0
        if args.command == "flows" and args.flows_command == "show":
            return await show_flow(services, args, settings.flows_dir)
        if args.command == "flows" and args.flows_command == "push":
            paths = args.paths or flow_sync.directory_files(settings.flows_dir)
            return await flow_sync.push(services.repo, paths, services.registry)
        if args.command == "flows":
            return await list_flows(services, settings.flows_dir)
        heap.settle()
        return await run_flow(services, args, settings.flows_dir)
    finally:
        await close_services(services)


def _without_password(url: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


async def announce_start(app: web.Application) -> None:
    """Startup hook: on a database with no keys, create an admin key and print it once; list the flows."""
    services: Services = app[SERVICES]  # type: ignore[assignment]
    # Check-and-create under the start lock: of several processes started together, one creates it.
    key_id, secret = auth.new_key_material()
    if await storage_engine.create_first_key(services.repo.engine, key_id, "first-admin", "admin",
                                             auth.hash_secret(secret)):
        print("No server keys yet: created an admin key. It is shown once; keep it safe:", flush=True)
        print(f"  GRAPH_RUNTIME_KEY={auth.token_for(key_id, secret)}", flush=True)
    flows = await services.repo.list_flows()
    print(f"{len(flows)} flow(s) loaded: {', '.join(f.id for f, _, _ in flows)}", flush=True)
    heap.settle()


def server_options(settings: Settings) -> dict[str, Any]:
    """How the HTTP server treats connections: keyword arguments of ``web.run_app``/``AppRunner``.

    - ``keepalive_timeout``: aiohttp closes a connection that has not sent a whole request line and
      headers this long after it opened or after its previous answer. That is the header timeout
      (slowloris), and also how long an idle keep-alive connection is kept.
    - ``auto_decompress`` off: ``body.read_body`` decodes gzip/deflate itself, so any other
      Content-Encoding gets a JSON 415 instead of the parser's plain-text 400.
    - ``handler_cancellation`` stays off (aiohttp's default): a client that leaves does not cancel
      a handler that is writing; one still reading its body gets ``ClientDisconnected``.
    """
    return {"access_log_class": MaskingAccessLogger, "keepalive_timeout": settings.header_timeout_s,
            "auto_decompress": False, "handler_cancellation": False}


def serve(settings: Settings) -> int:
    """Run the API and the workers until SIGINT/SIGTERM (``--processes N``: N such processes on one port)."""
    if settings.processes > 1:
        return processes.supervise(settings)
    app = create_app(settings)

    app.on_startup.append(announce_start)
    runs = (f"up to {settings.max_concurrent_jobs} concurrent tasks" if settings.workers
            else "API only (--workers 0): tasks run in `graph-runtime worker` processes")
    print(f"graph-runtime{processes.label()}: database {_without_password(settings.database_url)}, {runs}",
          flush=True)
    try:
        web.run_app(app, host=settings.host, port=settings.port, print=lambda msg: print(msg, flush=True),
                    reuse_port=processes.is_child(), **server_options(settings))
    except OSError as exc:
        print(f"error: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


async def migrate(settings: Settings, *, check: bool) -> int:
    """Upgrade the schema and print ``schema: FROM -> TO``; with ``check``, only say whether one is due (exit 1)."""
    engine = storage_engine.create_engine(settings.database_url)
    try:
        if check:
            found = await storage_engine.schema_versions(engine)
            print(f"schema: {found.describe()}{'' if found.current else ' (upgrade due: graph-runtime migrate)'}")
            return 0 if found.current else 1
        found = await storage_engine.create_schema(engine)
        print(f"schema: {found.describe()}{'' if found.current else ' (upgraded)'}")
        return 0
    finally:
        await storage_engine.dispose(engine)


async def keys_command(services: Services, args: argparse.Namespace) -> int:
    if args.keys_command == "create":
        record, token = await auth.issue_key(services.repo, args.name, args.scope)
        print(f"created {record.scope} key {record.id} ({record.name}); the token is shown once:")
        print(token)
    elif args.keys_command == "list":
        for key in await services.repo.list_keys():
            view = key_view(key)
            last_used = timestamp_text(key.last_used) if key.last_used else "never"
            print(f"{view['id']}  {view['scope']:<8} {'revoked' if key.revoked else 'active ':<8} "
                  f"last used {last_used}  {view['name']}")
    else:
        record = await services.repo.revoke_key(args.key_id)
        print(f"revoked key {record.id} ({record.name})")
    return 0


def read_secret_value(name: str) -> str:
    """The value for ``secrets set``: typed without echo at a terminal, else standard input
    (one trailing newline dropped, so ``echo "$KEY" | graph-runtime secrets set NAME`` stores ``$KEY``)."""
    if not NAME_PATTERN.fullmatch(name):
        raise errors.RequestInvalid(f"{name!r} is not a secret name: 1 to 64 letters, digits or underscores")
    if sys.stdin.isatty():
        value = getpass.getpass(f"value of {name} (not shown): ")
    else:
        value = sys.stdin.read()
        value = value[:-2] if value.endswith("\r\n") else value.removesuffix("\n")
    if not value:
        raise errors.RequestInvalid("no value given on standard input")
    return value


async def secrets_command(services: Services, args: argparse.Namespace) -> int:
    if args.secrets_command == "set":
        await services.repo.put_secret(services.cipher, args.name, args.mode, args.value)
        print(f"set secret {args.name} ({args.mode})")
    elif args.secrets_command == "list":
        for secret in await services.repo.list_secrets():
            print(f"{secret.name:<32} {','.join(secret.modes):<9} updated {timestamp_text(secret.updated)}")
    else:
        await services.repo.delete_secret(args.name, args.mode)
        print(f"deleted secret {args.name}{f' ({args.mode})' if args.mode else ''}")
    return 0


async def list_flows(services: Services, flows_dir: Path | None) -> int:
    """Stored flows, and the flows directory's files that are new or edited (marked; nothing is stored)."""
    files = await flow_sync.directory_states(services.repo, flows_dir, services.registry)
    stored = {flow.id: (flow, revision) for flow, revision, _ in await services.repo.list_flows()}
    for flow_id in sorted(stored.keys() | files.keys()):
        flow, revision = stored.get(flow_id) or (files[flow_id].flow, None)
        note = _file_note(files.get(flow_id))
        print(f"{flow_id:<28} rev {revision or '-':<4} {len(flow.nodes):>3} nodes  {flow.name or ''}"
              + (f"  [{note}]" if note else ""))
    return 0


def _file_note(file: flow_sync.FlowFile | None) -> str:
    if file is None or file.state is flow_sync.FileState.SAME:
        return ""
    if file.state is flow_sync.FileState.NEW:
        return f"not stored: {file.path}; flows push publishes it"
    return f"{file.path} differs from rev {file.revision}; flows push publishes it"


async def show_flow(services: Services, args: argparse.Namespace, flows_dir: Path | None) -> int:
    """Print the DAG as a text tree; with --start/--end, ● marks the nodes that would run; --plan adds the dry run."""
    files = await flow_sync.directory_states(services.repo, flows_dir, services.registry)
    file = files.get(args.flow_id)
    if file is not None and file.state is flow_sync.FileState.NEW:
        flow, revision = file.flow, None  # drawn from the file; nothing is stored
    else:
        flow, revision, _ = await services.repo.get_flow(args.flow_id)
    if file is not None and file.state is not flow_sync.FileState.SAME:
        print(f"note: {_file_note(file)}", file=sys.stderr)
    chosen = None
    if args.start or args.end:
        start, end, _ = selection.resolve_ids(flow, args.start, args.end, None)
        chosen = selection.run_set(selection.graph_of(flow), start, end)
    print(f"{flow.id} rev {revision or '- (file only)'}: {flow.name or ''}")
    for line in selection.draw(flow, chosen):
        print(line)
    if chosen is not None:
        print(f"● runs ({len(chosen)} nodes)   ○ does not run")
    if args.plan:
        await print_plan(services, flow.id, args.start, args.end, parse_sets(args.set),
                         unstored=flow if revision is None else None)
    return 0


async def print_plan(services: Services, flow_id: str, start: str | None, end: str | None,
                     node_settings: dict[str, Any], *, unstored: Flow | None = None) -> None:
    """The dry run of executing ``flow_id`` from ``start`` to ``end``: levels, cached nodes, then the cost range.

    Checked as execute checks it; a request execute would refuse raises its error (exit 1).
    """
    given = {"start_node_id": start, "end_node_id": end, "node_settings": node_settings}
    body = parse_body(ExecuteBody, {k: v for k, v in given.items() if v})
    checked = await check(services, flow_id, body, unstored=unstored)
    run = await planning.dry_run(services, checked)
    print(f"plan: {len(run.run_set)} nodes in {len(run.levels)} levels (a level's nodes may run together)")
    for number, level in enumerate(run.levels, 1):
        print(f"  {number}. {', '.join(level)}")
    if run.cached:
        print(f"cached (would not run): {', '.join(run.cached)}")
    cost = run.estimated_cost
    most = "no known bound" if cost.max is None else f"{cost.max:g}"
    print(f"estimated cost: {cost.min:g} to {most} credits")


async def _flow_for_run(services: Services, flows_dir: Path | None, flow_id: str, *, push: bool) -> None:
    """A local run uses the stored flow. Its file, if the flows directory has one, is stored only
    when no revision exists yet or with ``--push``; an edited file is otherwise named on stderr.
    The flows its ``subflow`` and ``map`` nodes run are treated the same way, and theirs."""
    states = await flow_sync.directory_states(services.repo, flows_dir, services.registry)
    wanted, seen = [flow_id], set()
    while wanted:
        current = wanted.pop()
        if current in seen:
            continue
        seen.add(current)
        file = states.get(current)
        if file is not None and file.state is not flow_sync.FileState.SAME:
            if file.state is flow_sync.FileState.NEW or push:
                revision, _ = await services.repo.save_flow(file.flow)
                print(f"stored flow {current} revision {revision} from {file.path}", file=sys.stderr)
            else:
                print(f"note: {file.path} differs from stored revision {file.revision}, which runs; "
                      "publish the file with `graph-runtime flows push` (or run --push)", file=sys.stderr)
        try:
            flow, _, _ = await services.repo.get_flow(current)
        except flow_errors.NotFound:
            continue  # the run (or the child's node) says so
        wanted += _child_flow_ids(flow)


def _child_flow_ids(flow: Any) -> list[str]:
    """The flows a flow's ``subflow`` and ``map`` (over a flow) nodes run."""
    found = []
    for node in flow.nodes:
        if node.type == "subflow" and isinstance(node.settings.get("flow_id"), str):
            found.append(node.settings["flow_id"])
        elif node.type == "map" and isinstance(node.settings.get("flow"), dict) \
                and isinstance(node.settings["flow"].get("flow_id"), str):
            found.append(node.settings["flow"]["flow_id"])
    return found


def validate_files(paths: list[Any]) -> int:
    registry = default_registry()
    failed = 0
    for path in paths:
        try:
            flow = check_file(path, registry)
        except (flow_errors.FlowInvalid, OSError) as exc:
            failed += 1
            print(f"{path}: INVALID")
            for problem in getattr(exc, "problems", [str(exc)]):
                print(f"  - {problem}")
            continue
        print(f"{path}: ok ({flow.id}, {len(flow.nodes)} nodes, {len(flow.edges)} edges)")
    return 1 if failed else 0


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``NODE.PATH=VALUE`` pairs into nested node_settings; VALUE is JSON when it parses."""
    settings: dict[str, Any] = {}
    for item in items:
        target, sep, raw = item.partition("=")
        parts = target.split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise flow_errors.SelectionError(f"--set {item!r}: expected NODE.PATH=VALUE")
        try:
            value = codec.loads(raw)
        except codec.DecodeError:
            value = raw
        cursor = settings
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = value
    return settings


async def run_flow(services: Services, args: argparse.Namespace, flows_dir: Path | None) -> int:
    if args.file:
        raise errors.RequestInvalid("--file needs --remote; a local run takes a file as --set NODE.PATH=<http(s) URL>")
    await _flow_for_run(services, flows_dir, args.flow_id, push=args.push)
    body = {"start_node_id": args.start, "end_node_id": args.end, "result_node_id": args.result,
            "node_settings": parse_sets(args.set), "timeout_s": args.timeout}
    task = await run_with_progress(services, args.flow_id, {k: v for k, v in body.items() if v is not None},
                                   revision=args.revision)
    from http_api.views import task_view

    print(codec.dumps(task_view(task)).decode())
    return 0 if task.status.number == 3 else 1
