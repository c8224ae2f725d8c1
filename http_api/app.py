"""The application factory: every long-lived part is a cleanup_ctx generator, nothing global."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp_cors
from aiohttp import web

from graph_runtime.commits import GroupCommitter
from graph_runtime.events import EventHub
from graph_runtime.executor import Executor
from graph_runtime.resolve import ParamResolver
from graph_runtime.scheduler import Scheduler, new_worker_id
from http_api import (
    compat_kestra,
    compat_ziggy,
    errors,
    file_links,
    routes_callbacks,
    routes_events,
    routes_files,
    routes_flows,
    routes_hooks,
    routes_keys,
    routes_openapi,
    routes_secrets,
    routes_tasks,
    triggers,
)
from http_api.auth import KeyChecker, make_auth_middleware
from http_api.body import SERVICES
from http_api.callbacks import CallbackDispatcher
from http_api.dashboard import routes as dashboard
from http_api.file_links import FileLinks
from http_api.file_resolver import FileResolver
from http_api.flows_dir import load_flows_dir
from http_api.routes_metrics import add_route as add_metrics_route
from http_api.secret_resolver import SecretResolver
from http_api.services import Services
from http_api.settings import Settings
from http_api.telemetry import Telemetry
from http_api.trigger_loops import TRIGGER_LOOPS, TriggerLoops
from nodes.builtin import make_http_session
from nodes.registry import Registry, default_registry
from storage import engine as storage_engine
from storage import master_key
from storage.callbacks import CallbackStore
from storage.files import open_file_store
from storage.files.retention import RetentionSweeper
from storage.node_cache import StoredOutputCache
from storage.repository import Repository
from storage.repository_leases import lease_renewer
from storage.secrets import SecretCipher
from storage.task_events import TaskEventLog
from storage.wakeups import pg_endings, pg_wakeups

log = logging.getLogger(__name__)


async def open_services(settings: Settings, registry: Registry | None = None,
                        telemetry: Telemetry | None = None, *, one_off: bool = False) -> Services:
    """Open the database, load the flows directory and build the executor and scheduler (observed by ``telemetry``).

    ``one_off``: for ``graph-runtime run``: its scheduler claims no queued task, only the one it is
    given, and runs every node of it whatever its pool (the user ran it here on purpose).
    """
    prices = settings.llm_price_table()  # a bad LLM_PRICES file stops the start before anything opens
    engine = storage_engine.create_engine(settings.database_url)
    # FILES_URL's bucket is checked first: a wrong one stops the start before the database is touched.
    files = await open_file_store(engine, files_dir=settings.files_dir, files_url=settings.files_url,
                                  s3_path_style=settings.files_s3_path_style, max_bytes=settings.max_file_bytes)
    try:
        await storage_engine.create_schema(engine)
    except BaseException:
        await files.aclose()
        raise
    repo = Repository(engine)
    repo.cache_max_bytes = settings.cache_max_bytes
    key = master_key.load(settings.database_url,
                          settings.secrets_key.get_secret_value() if settings.secrets_key else None)
    cipher = SecretCipher.from_master(key)
    links = FileLinks(key.derive(file_links.PURPOSE), settings.file_link_ttl_s)
    registry = registry or default_registry()
    if settings.flows_dir is not None:
        await load_flows_dir(settings.flows_dir, repo, registry)
    # One guarded HTTP client per process, for the server and `graph-runtime run` alike.
    http = make_http_session(allow_private=settings.http_allow_private, allow_hosts=settings.http_allow_hosts,
                             trace_configs=telemetry.client_trace_configs() if telemetry else ())
    resolvers: list[ParamResolver] = [
        SecretResolver(repo, cipher),
        # Files before the node runs: ids completed from the store, URLs fetched through the guarded session.
        FileResolver(files, http, allow_private=settings.http_allow_private, max_bytes=settings.max_file_bytes),
    ]
    # One group committer per process: node runs and task events share its transactions, in order.
    committer = GroupCommitter(repo)
    worker_id = new_worker_id()  # this process's workers, and the watcher of the tasks it waits for
    events = EventHub(committer, TaskEventLog(engine), endings=pg_endings(engine, worker_id),
                      later_s=settings.events_later_s)
    executor = Executor(store=repo, registry=registry, http=http, allow_private=settings.http_allow_private,
                        limits=settings.limits(), files=files, prices=prices, resolvers=resolvers,
                        cache=StoredOutputCache(repo) if settings.cache_max_bytes > 0 else None,
                        pools=None if one_off else frozenset(settings.pools), events=events, committer=committer)
    scheduler = Scheduler(repo, executor, max_concurrent=settings.max_concurrent_jobs,
                          poll_interval_s=settings.poll_interval_s, lease_s=settings.lease_s,
                          open_renewer=lease_renewer(engine), wakeups=None if one_off else pg_wakeups(engine),
                          pools=frozenset(settings.pools), claims_queued=not one_off, worker_id=worker_id)
    callbacks = CallbackDispatcher(CallbackStore(engine), repo, cipher, links, http)
    # A task of this process that ended with a callback_url: swept at once, not at the next sweep. Not
    # every end: a sweep is a write transaction, and under load it would hold SQLite's one writer
    # after every task (a flow's on_end is found by the sweep each second).
    events.watch_stops(lambda task: callbacks.wake() if task.status.ended and task.request.callback_url else None)
    services = Services(settings=settings, repo=repo, registry=registry, executor=executor, scheduler=scheduler,
                        files=files, cipher=cipher, links=links, events=events, callbacks=callbacks)
    if telemetry is not None:
        telemetry.attach(services)
    return services


async def close_services(services: Services) -> None:
    services.accepting = False
    await services.scheduler.stop()
    await services.events.close()
    await services.registry.aclose()
    if services.executor.http is not None:
        await services.executor.http.close()
    await services.files.aclose()
    await storage_engine.dispose(services.repo.engine)


async def _stop_accepting(app: web.Application) -> None:
    """Shutdown begins: new executes get 503 and every ?wait answers now."""
    services: Services = app[SERVICES]  # type: ignore[assignment]
    services.accepting = False
    services.events.interrupt()


def create_app(settings: Settings, registry: Registry | None = None, *, tracer_provider: Any = None) -> web.Application:
    """Build the aiohttp application for ``settings``; the database opens on startup.

    ``tracer_provider``: where task and node spans go when the otel extra is installed (default:
    OpenTelemetry's global provider, which ``opentelemetry-instrument`` configures).
    """
    telemetry = Telemetry.create(tracer_provider)  # metrics per app: servers in one process never share them

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        services = await open_services(settings, registry, telemetry)
        app[SERVICES] = services
        checker.repo = services.repo
        if settings.workers:  # --workers 0: an API process; `graph-runtime worker` processes run the tasks
            await services.scheduler.start()
        # Every hour, and once at start: files no recent task references go (SPEC §7 retention).
        sweeper = RetentionSweeper(services.files, retention_days=settings.files_retention_days)
        sweeper.start()
        # Schedules and flow ends start tasks from every serve process (http_api.triggers says why).
        app[TRIGGER_LOOPS] = trigger_loops = TriggerLoops(services)
        trigger_loops.start()
        services.callbacks.start()  # ended tasks' signed POSTs, from the outbox (SPEC §11 callbacks)
        yield
        await services.callbacks.stop()
        await trigger_loops.stop()
        await sweeper.stop()
        services.accepting = False
        await services.scheduler.drain(settings.shutdown_grace_s)
        await checker.close()
        await close_services(services)

    checker = KeyChecker(repo=None)  # type: ignore[arg-type]  # set when the database opens
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[*telemetry.middlewares(), errors.error_middleware, make_auth_middleware(checker)],
    )
    app[routes_keys.KEY_CHECKER] = checker
    errors.quiet_malformed_requests()
    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(_stop_accepting)
    for table in (routes_tasks.routes, routes_events.routes, routes_flows.routes, routes_keys.routes,
                  routes_openapi.routes, routes_files.routes, routes_secrets.routes, routes_callbacks.routes,
                  dashboard.routes):
        app.router.add_routes(table)
    for table in (triggers.routes, routes_hooks.routes, compat_ziggy.routes,  # triggers, the seed systems' APIs
                  compat_kestra.routes):
        app.router.add_routes(table)
    add_metrics_route(app, telemetry, open_to_all=settings.metrics_public)
    cors = aiohttp_cors.setup(app, defaults={"*": aiohttp_cors.ResourceOptions(
        allow_headers="*", allow_methods="*", expose_headers="*", max_age=3600)})
    for route in list(app.router.routes()):
        cors.add(route)
    return app
