"""Issue 8's attacks against a ``graph-runtime serve`` in its own process, with what they cost it.

A server runs under an address-space limit (``RLIMIT_AS``, 3 GiB by default) on its own SQLite
file or PostgreSQL database; the attacker holds an **execute**-scope key. While an attack runs
(and at least 0.5 s), one thread polls ``/healthz`` every 50 ms and another follows the server's
peak RSS (``VmHWM``, reset just before the attack). Each attack records:

- ``worst_gap_s``: the longest interval between two successful ``/healthz`` answers (a poll that
  times out, 1 s, or fails counts as no answer; a server that died is silent until the end);
- ``peak_rss_mb``: the server process's peak RSS during the attack (``children_peak_rss_mb``: the
  largest peak seen in a child process, e.g. a template renderer, sampled every 10 ms);
- ``survived``: the process is still running afterwards;
- what the user saw: the execute answer's HTTP status, then the task's status and error code;
- ``cpu_after_end_s``: what the server and its children still burn once the task ended;
- ``followup``: whether a plain task still succeeds afterwards.

Also here: the operator's scenarios of issue 8 (a worker paused past its lease, a node that kills
its process, two servers starting together on an empty database). Used by
``tests/http_api/test_attacks.py`` (a few attacks share a server there); run as a program, every
attack gets a fresh server, which makes the before/after figures of another checkout (a worktree of
an older release, with its own ``.venv``)::

    python -m tests.attack_harness [--root /tmp/gr-before] [--only NAME …] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from http.client import HTTPException
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.processes import ROOT, START_TIMEOUT, ServerProcess, free_port, http_raw, process_env, sqlite_url

MIB = 1024 * 1024
GIB = 1024 * MIB
AS_LIMIT = 3 * GIB
DEADLINE_S = 30.0  # an attack that has not ended by then is recorded as such and killed
POLL_S = 0.05
HEALTH_TIMEOUT_S = 1.0
MIN_WATCH_S = 0.5  # /healthz is watched at least this long, even around an attack answered at once
CPU_WINDOW_S = 0.5
ENDED = ("succeeded", "failed", "cancelled")
SERVER_FLAGS = ("--http-allow-private", "true", "--poll-interval-s", "0.2")



# --------------------------------------------------------------------------- the code under attack

@dataclass(frozen=True)
class Target:
    """A checkout and the interpreter of its virtualenv (default: this tree, this interpreter)."""

    root: Path = ROOT
    python: Path = Path(sys.executable)

    @classmethod
    def checkout(cls, root: Path) -> Target:
        return cls(root=root, python=root / ".venv" / "bin" / "python")

    def command(self, *args: str, test_types: bool = False) -> tuple[list[str], dict[str, str]]:
        """``graph-runtime serve ARGS``, or ``python -m tests.serve_for_tests ARGS`` (test node types)."""
        if test_types:
            return [str(self.python), "-m", "tests.serve_for_tests", *args], process_env(PYTHONPATH=str(self.root))
        script = self.python.parent / "graph-runtime"
        command = [str(script)] if script.exists() else [str(self.python), "-m", "http_api.cli"]
        return [*command, "serve", *args], process_env()


class LimitedServer(ServerProcess):
    """A server process under ``RLIMIT_AS``; its output drained like :class:`ServerProcess`."""

    def __init__(self, target: Target, args: Sequence[str], *, cwd: Path, port: int,
                 as_limit: int = AS_LIMIT, test_types: bool = False) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.as_limit = as_limit
        command, env = target.command("--port", str(port), *args, test_types=test_types)
        self._spawn(command, cwd=cwd, env=env)

    def _spawn(self, command: Sequence[str], *, cwd: Path, env: dict[str, str]) -> None:
        limit = self.as_limit

        def limit_address_space() -> None:  # runs in the child, between fork and exec
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        self.proc = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=limit_address_space)
        self._out: list[str] = []
        self._err: list[str] = []
        self._lock = threading.Lock()
        self._readers = [threading.Thread(target=self._drain, args=(stream, sink), daemon=True)
                         for stream, sink in ((self.proc.stdout, self._out), (self.proc.stderr, self._err))]
        for reader in self._readers:
            reader.start()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def reset_peak(self) -> None:
        """Start ``VmHWM`` again from the current RSS (``/proc/<pid>/clear_refs``, Linux ≥ 4.0)."""
        with suppress(OSError):
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def signal(self, sig: signal.Signals) -> None:
        if self.alive:
            os.kill(self.proc.pid, sig)

    def token(self) -> str:
        keys = self.keys_printed
        assert len(keys) == 1, f"expected one first admin key:\n{self.describe()}"
        return keys[0]

    def execute_key(self, admin: str) -> str:
        status, body = call("POST", f"{self.url}/api/v1/keys", token=admin, body={"name": "attacker", "scope": "execute"})
        assert status == 201, (status, body)
        return str(body["key"])

    def bad_lines(self) -> list[str]:
        return self.alarming(self.stderr)

    @staticmethod
    def alarming(log: str) -> list[str]:
        """Lines of a log an operator would be alarmed by: ERROR, CRITICAL, tracebacks."""
        return [line for line in log.splitlines()
                if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")]


def start(target: Target, args: Sequence[str], *, cwd: Path, test_types: bool = False,
          as_limit: int = AS_LIMIT, servers: list[LimitedServer] | None = None) -> LimitedServer:
    """A ready server on a free port (another one if it was taken meanwhile)."""
    for attempt in range(3):
        server = LimitedServer(target, args, cwd=cwd, port=free_port(), test_types=test_types, as_limit=as_limit)
        if servers is not None:
            servers.append(server)
        try:
            server.wait_ready()
            return server
        except AssertionError:
            server.kill()
            if "address already in use" not in server.stderr.lower() or attempt == 2:
                raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- HTTP and /proc

fetch = http_raw  # one request, ``(status, raw body)`` for any status


def call(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    """:func:`fetch`, the body parsed as JSON (None when empty or not JSON)."""
    status, raw = fetch(method, url, **kwargs)
    try:
        return status, json.loads(raw) if raw.strip() else None
    except ValueError:
        return status, None


def healthy(url: str, timeout: float = HEALTH_TIMEOUT_S) -> bool:
    try:
        return fetch("GET", f"{url}/healthz", timeout=timeout)[0] == 200
    except (OSError, HTTPException):  # URLError, timeouts and resets are OSErrors
        return False


def _status_kib(pid: int, name: str) -> int:
    with suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        with suppress(OSError, ValueError):
            for child in Path(f"/proc/{current}/task/{current}/children").read_text().split():
                found.append(int(child))
                todo.append(int(child))
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and its living descendants."""
    ticks = 0
    for each in (pid, *descendants(pid)):
        with suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class Monitor:
    """Polls ``/healthz`` every 50 ms from a thread and follows peak RSS, between enter and exit."""

    def __init__(self, server: LimitedServer) -> None:
        self.server = server
        self.worst_gap_s = 0.0
        self.failures = 0
        self.peak_kib = 0
        self.children_peak_kib = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll, daemon=True),
                         threading.Thread(target=self._sample, daemon=True)]

    def __enter__(self) -> Monitor:
        self.server.reset_peak()
        self._began = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(max(0.0, self._began + MIN_WATCH_S - time.monotonic()))
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=HEALTH_TIMEOUT_S + 5)

    def _poll(self) -> None:
        last_answer = self._began
        while not self._stop.wait(POLL_S):
            if healthy(self.server.url):
                self.worst_gap_s = max(self.worst_gap_s, time.monotonic() - last_answer)
                last_answer = time.monotonic()
            else:
                self.failures += 1
        self.worst_gap_s = max(self.worst_gap_s, time.monotonic() - last_answer)

    def _sample(self) -> None:
        # Every 10 ms: VmHWM is exact for the server until it dies; children are sampled.
        pid = self.server.proc.pid
        while True:
            self.peak_kib = max(self.peak_kib, _status_kib(pid, "VmHWM"))
            for child in descendants(pid):
                self.children_peak_kib = max(self.children_peak_kib, _status_kib(child, "VmHWM"))
            if self._stop.wait(0.01):
                return


# --------------------------------------------------------------------------- the stand-in remote server

def _gzip_bomb(total_mib: int) -> tuple[bytes, bytes, bytes, int]:
    """(header, one MiB of zeros deflated on its own, the final block, total size): a stream of blocks.

    After a full flush the compressor forgets what came before, so the same 1 MiB block repeated
    is a valid deflate stream: 2 GiB of zeros in about 2 MiB, built in milliseconds.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    final = compressor.flush(zlib.Z_FINISH)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header, block, final, total_mib * MIB


class StandIn:
    """A local HTTP server the nodes call (answers from its own threads).

    ``/bomb``: a gzip bomb, 2 GiB of zeros in ~2 MiB (``Content-Encoding: gzip``).
    ``/slow?task=N&s=S``: counts the call for N in :attr:`calls`, sleeps S seconds, answers JSON.
    """

    def __init__(self, bomb_mib: int = 2048) -> None:
        self.bomb_mib = bomb_mib
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()
        self._bomb = _gzip_bomb(bomb_mib)
        self._crc: int | None = None

    def __enter__(self) -> StandIn:
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self._thread = threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()
        self._thread.join(timeout=5)

    def write_bomb(self, out: Any) -> None:
        header, block, final, size = self._bomb
        out.write(header)
        crc = 0
        for _ in range(self.bomb_mib):
            out.write(block)
            if self._crc is None:
                crc = zlib.crc32(bytes(MIB), crc)
        self._crc = crc if self._crc is None else self._crc
        out.write(final + struct.pack("<II", self._crc, size & 0xFFFFFFFF))

    def bomb_length(self) -> int:
        header, block, final, _ = self._bomb
        return len(header) + len(block) * self.bomb_mib + len(final) + 8


def _handler(stand_in: StandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet: the test's output stays readable
            pass

        def do_GET(self) -> None:
            with suppress(OSError):  # the client (a server under attack) may hang up or die
                self._answer()

        def _answer(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            if url.path == "/bomb":
                self._head(200, "text/plain", stand_in.bomb_length(), gzip=True)
                stand_in.write_bomb(self.wfile)
            elif url.path == "/slow":
                with stand_in.lock:
                    stand_in.calls[query.get("task", "")] += 1
                time.sleep(float(query.get("s", "3")))
                body = json.dumps({"task": query.get("task")}).encode()
                self._head(200, "application/json", len(body))
                self.wfile.write(body)
            else:
                self._head(404, "text/plain", 0)

        def _head(self, status: int, content_type: str, length: int, gzip: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(length))
            if gzip:
                self.send_header("Content-Encoding", "gzip")
            self.end_headers()

    return Handler


# --------------------------------------------------------------------------- flows and attacks

FLOWS: list[dict[str, Any]] = [
    {"id": "tpl", "defaults": {"start_node_id": "t", "end_node_id": "t"},
     "nodes": [{"id": "t", "type": "template", "settings": {"template": "ok"}}], "edges": []},
    {"id": "fetch", "defaults": {"start_node_id": "get", "end_node_id": "get"},
     "nodes": [{"id": "get", "type": "http_request", "settings": {"url": "http://127.0.0.1:9/", "retries": 0}}],
     "edges": []},
]

BIG_S = "{% set s = 'x' * 1000000 %}"  # 1 MB, within the old sandbox's limit on `*`
TEMPLATES = {
    "center": ("{{ 'x'|center(10**9) }}", {}),
    "percent": ("{{ '%0999999999d' % 1 }}", {}),
    "format": ("{{ '{:>999999999}'.format(1) }}", {}),
    "join": (BIG_S + "{{ ([s]*1000)|join }}", {}),
    "doubling": ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                 "{% endfor %}{{ ns.s|length }}", {"timeout_s": 2}),
    "output_100mb": (BIG_S + "{% for i in range(100) %}{{ s }}{% endfor %}", {}),
}
LIST_TASKS = 200
LIST_PAD = 480_000


@dataclass
class Outcome:
    """What one attack did to the server, and what its user saw."""

    attack: str
    http_status: int | None = None
    http_error: dict[str, Any] | None = None  # the 4xx/5xx body's "error"
    task_id: int | None = None
    task_status: str | None = None
    error: dict[str, Any] | None = None  # the task's error
    node_status: str | None = None
    poll_statuses: list[int] = field(default_factory=list)  # GET /task answers' statuses, once each; 0: none
    elapsed_s: float = 0.0
    worst_gap_s: float = 0.0
    health_failures: int = 0
    peak_rss_mb: float = 0.0
    children_peak_rss_mb: float = 0.0
    cpu_after_end_s: float | None = None  # CPU the server (and children) used in CPU_WINDOW_S after the end
    survived: bool = False
    exit_code: int | None = None
    followup: str | None = None  # status of a plain task submitted afterwards
    extra: dict[str, Any] = field(default_factory=dict)
    bad_log_lines: list[str] = field(default_factory=list)
    failure: str | None = None  # the harness itself could not complete the run

    def saw(self) -> str:
        if self.extra.get("body_mb") is not None:
            return f"HTTP {self.http_status}, {self.extra['body_mb']} MB body, {self.extra.get('tasks')} tasks"
        if self.http_status != 201:
            error = self.http_error or {}
            return f"HTTP {self.http_status} {error.get('code')} (field {error.get('field')})"
        code = (self.error or {}).get("code")
        polls = f", GET /task answered {self.poll_statuses}" if any(s != 200 for s in self.poll_statuses) else ""
        return f"task {self.task_status or 'never ended'}" + (f" `{code}`" if code else "") + polls


def execute(server: LimitedServer, token: str, flow: str, node_settings: dict[str, Any],
            timeout: float = 10.0) -> tuple[int, Any]:
    return call("POST", f"{server.url}/api/v1/flow/{flow}/execute", token=token,
                body={"node_settings": node_settings}, timeout=timeout)


def wait_for_end(server: LimitedServer, token: str, task_id: int, deadline: float, outcome: Outcome) -> dict | None:
    """Poll the task until it ends or the deadline passes (or the server dies); every status seen is kept."""
    while time.monotonic() < deadline and server.alive:
        try:
            status, task = call("GET", f"{server.url}/api/v1/task/{task_id}", token=token,
                                timeout=max(0.5, min(10.0, deadline - time.monotonic())))
        except (OSError, HTTPException):
            status, task = 0, None
        if status not in outcome.poll_statuses:
            outcome.poll_statuses.append(status)
        if status == 200 and task["status_name"] in ENDED:
            return task
        time.sleep(0.1)
    return None


def _record_task(outcome: Outcome, task: dict | None, node_id: str) -> None:
    if task is not None:
        outcome.task_status = task["status_name"]
        outcome.error = task.get("error")
        outcome.node_status = (task.get("nodes") or {}).get(node_id, {}).get("status")


def node_attack(flow: str, node_id: str, settings: dict[str, Any]) -> Callable[[LimitedServer, str, Outcome, float], None]:
    """An attack that is one execute request with ``settings`` for ``node_id``, then a wait for the task."""

    def run(server: LimitedServer, token: str, outcome: Outcome, deadline: float) -> None:
        status, body = execute(server, token, flow, {node_id: settings}, timeout=max(1.0, deadline - time.monotonic()))
        outcome.http_status = status
        if status != 201:
            outcome.http_error = (body or {}).get("error")
            return
        outcome.task_id = int(body["id"])
        _record_task(outcome, wait_for_end(server, token, outcome.task_id, deadline, outcome), node_id)

    return run


def _submit_padded_tasks(server: LimitedServer, token: str) -> None:
    """200 tasks whose request carries ~480 KB (a template variable), all ended before the attack."""
    from concurrent.futures import ThreadPoolExecutor

    settings = {"t": {"template": "ok", "pad": "x" * LIST_PAD}}
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: execute(server, token, "tpl", settings, timeout=30)[0], range(LIST_TASKS)))
    assert answers == [201] * LIST_TASKS, Counter(answers)
    deadline = time.monotonic() + DEADLINE_S
    for status in ("queued", "running"):
        while call("GET", f"{server.url}/api/v1/tasks?status={status}&limit=1", token=token, timeout=30)[1]["tasks"]:
            assert time.monotonic() < deadline, f"tasks still {status}"
            time.sleep(0.1)


def list_attack(server: LimitedServer, token: str, outcome: Outcome, deadline: float) -> None:
    status, raw = fetch("GET", f"{server.url}/api/v1/tasks?limit={LIST_TASKS}", token=token,
                        timeout=max(1.0, deadline - time.monotonic()))
    outcome.http_status = status
    outcome.extra["body_mb"] = round(len(raw) / 1e6, 3)
    outcome.extra.update(_page_figures(raw))
    for name, query in (("include", "include=data&limit=200"), ("limit_1000", "limit=1000")):
        status, raw = fetch("GET", f"{server.url}/api/v1/tasks?{query}", token=token,
                            timeout=max(1.0, deadline - time.monotonic()))
        outcome.extra[name] = {"status": status, "body_mb": round(len(raw) / 1e6, 3), **_page_figures(raw)}


def _page_figures(raw: bytes) -> dict[str, Any]:
    with suppress(ValueError, KeyError, TypeError):
        page = json.loads(raw)
        return {"tasks": len(page["tasks"]), "fields": sorted(page["tasks"][0]) if page["tasks"] else [],
                "next_before": page.get("next_before")}
    return {}


@dataclass(frozen=True)
class Attack:
    name: str
    what: str
    run: Callable[[LimitedServer, str, Outcome, float], None]
    prepare: Callable[[LimitedServer, str], None] | None = None
    node_id: str | None = None  # the node a task of this attack runs (None: not a task)


def attacks(stand_in_url: str) -> dict[str, Attack]:
    found = {name: Attack(name, f"template `{source}`" + (f" {extra}" if extra else ""),
                          node_attack("tpl", "t", {"template": source, **extra}), node_id="t")
             for name, (source, extra) in TEMPLATES.items()}
    bomb = {"url": f"{stand_in_url}/bomb"}
    found["bomb_2e9"] = Attack("bomb_2e9", "http_request `max_response_bytes: 2e9`, gzip bomb (2 GiB in 2 MiB)",
                               node_attack("fetch", "get", {**bomb, "max_response_bytes": 2e9}), node_id="get")
    found["bomb_default"] = Attack("bomb_default", "http_request, default max_response_bytes, the same bomb",
                                   node_attack("fetch", "get", bomb), node_id="get")
    found["list_200"] = Attack("list_200", f"GET /tasks?limit=200 over {LIST_TASKS} tasks of {LIST_PAD // 1000} KB",
                               list_attack, prepare=_submit_padded_tasks)
    return found


def write_flows(directory: Path, flows: Sequence[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for flow in flows:
        (directory / f"{flow['id']}.json").write_text(json.dumps(flow))
    return directory


def run_attack(target: Target, attack: Attack, workdir: Path) -> Outcome:
    """A fresh server, one attack, its figures; the server is killed on the way out."""
    return run_attacks(target, [attack], workdir)[attack.name]


def run_attacks(target: Target, batch: Sequence[Attack], workdir: Path) -> dict[str, Outcome]:
    """One fresh server, the attacks one after the other, each measured on its own; killed at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = ("--db", sqlite_url(workdir / "attack.db"), "--flows", str(write_flows(workdir / "flows", FLOWS)),
            *SERVER_FLAGS)
    server = start(target, args, cwd=workdir)
    outcomes: dict[str, Outcome] = {}
    try:
        token = server.execute_key(server.token())
        for attack in batch:
            outcome = outcomes[attack.name] = Outcome(attack.name)
            if not server.alive:
                outcome.failure = f"the server had died before this attack (exit {server.proc.returncode})"
                continue
            logged = len(server.stderr)
            _attack_once(server, token, attack, outcome)
            outcome.bad_log_lines = LimitedServer.alarming(server.stderr[logged:])[:20]
    finally:
        server.kill()
        for outcome in outcomes.values():
            outcome.exit_code = server.proc.returncode
            if not outcome.survived and outcome.failure is None:
                outcome.extra["last_words"] = server.stderr.strip().splitlines()[-6:]
    return outcomes


def _attack_once(server: LimitedServer, token: str, attack: Attack, outcome: Outcome) -> None:
    if attack.prepare is not None:
        attack.prepare(server, token)
    began = time.monotonic()
    with Monitor(server) as monitor:
        try:
            attack.run(server, token, outcome, began + DEADLINE_S)
        except (OSError, HTTPException) as exc:
            outcome.failure = f"{type(exc).__name__}: {exc}"
        outcome.elapsed_s = round(time.monotonic() - began, 2)
        if attack.node_id is not None and outcome.task_status is not None and server.alive:
            before = cpu_seconds(server.proc.pid)
            time.sleep(CPU_WINDOW_S)  # a window, not a wait: what does the server still burn once the task ended?
            outcome.cpu_after_end_s = round(cpu_seconds(server.proc.pid) - before, 2)
    outcome.worst_gap_s = round(monitor.worst_gap_s, 3)
    outcome.health_failures = monitor.failures
    outcome.peak_rss_mb = round(monitor.peak_kib / 1024, 1)
    outcome.children_peak_rss_mb = round(monitor.children_peak_kib / 1024, 1)
    if server.alive:
        outcome.followup = _followup(server, token)
    outcome.survived = server.alive


def _followup(server: LimitedServer, token: str) -> str:
    """Does a plain task still run? Its final status, or what went wrong."""
    try:
        status, body = execute(server, token, "tpl", {"t": {"template": "still {{ 'here' }}"}})
        if status != 201:
            return f"HTTP {status}"
        probe = Outcome("followup")
        task = wait_for_end(server, token, int(body["id"]), time.monotonic() + 10, probe)
        return task["status_name"] if task else "not ended within 10 s"
    except (OSError, HTTPException) as exc:
        return f"{type(exc).__name__}"


# --------------------------------------------------------------------------- PostgreSQL databases

@contextmanager
def pg_database() -> Iterator[str | None]:
    """An empty PostgreSQL database (no schema) for the duration, or None when none is reachable."""
    from tests import pg

    user, _ = asyncio.run(pg.find_user())
    if user is None:
        yield None
        return
    name = f"gr_attack_{os.urandom(6).hex()}"
    asyncio.run(pg.admin(user, f'CREATE DATABASE "{name}"'))
    url = f"postgresql+asyncpg://{user}@{pg.PG_HOST}/{name}"
    try:
        yield url
    finally:
        asyncio.run(pg.drop_database(url))


# --------------------------------------------------------------------------- fencing: a paused worker

SLOW_FLOW = {"id": "slow", "defaults": {"start_node_id": "call", "end_node_id": "call"},
             "nodes": [{"id": "call", "type": "http_request", "settings": {"url": "http://127.0.0.1:9/", "retries": 0}}],
             "edges": []}


@dataclass
class Fencing:
    """Server A paused (SIGSTOP) with every task's HTTP call in flight; B takes over; A resumes."""

    engine: str
    tasks: list[dict[str, Any]] = field(default_factory=list)  # per task: label, id, calls, attempts, statuses
    took_over_s: float | None = None  # from the pause to B's last call
    paused_s: float | None = None
    a_survived: bool = False
    b_survived: bool = False
    failure: str | None = None
    bad_log_lines: list[str] = field(default_factory=list)

    def untruthful(self) -> list[dict[str, Any]]:
        return [t for t in self.tasks if t["calls"] != t["attempts"]]

    def ended_with_running_node(self) -> list[dict[str, Any]]:
        return [t for t in self.tasks if t["status"] in ENDED and t["node_status"] == "running"]

    def summary(self) -> str:
        calls = sum(t["calls"] for t in self.tasks)
        attempts = sum(t["attempts"] or 0 for t in self.tasks)
        statuses = dict(Counter(f"{t['status']}/{t['node_status']}" for t in self.tasks))
        return (f"{self.engine}: {calls} calls vs {attempts} attempts; {len(self.untruthful())} of {len(self.tasks)} "
                f"tasks with calls != attempts; task/node statuses {statuses}; ended with a running node: "
                f"{len(self.ended_with_running_node())}; A alive {self.a_survived}, B alive {self.b_survived}; "
                f"B took over {self.took_over_s} s and A resumed {self.paused_s} s after the pause"
                + (f"; {self.failure}" if self.failure else ""))


def _until(check: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """``check()`` until truthy or the deadline; its last value either way (no exception)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def _tasks(server: LimitedServer, token: str, ids: dict[str, int]) -> dict[str, dict[str, Any]]:
    found = {}
    for label, task_id in ids.items():
        with suppress(OSError, HTTPException):
            status, task = call("GET", f"{server.url}/api/v1/task/{task_id}", token=token, timeout=5)
            if status == 200:
                found[label] = task
    return found


def run_fencing(target: Target, db_url: str, workdir: Path, stand_in: StandIn, *, engine: str, lease_s: float = 3.0,
                paused_s: float = 8.0, call_s: float = 3.0, count: int = 10) -> Fencing:
    """A holds ``count`` tasks, each in an HTTP call of ``call_s``, and is paused (SIGSTOP); B, started
    then, takes them over when A's lease ends and calls again. A resumes (SIGCONT) after ``paused_s``,
    or once B has ended every task if that is later: A's late results must all be refused."""
    workdir.mkdir(parents=True, exist_ok=True)
    flows = write_flows(workdir / "flows", [SLOW_FLOW])
    args = ("--db", db_url, "--flows", str(flows), "--lease-s", str(lease_s), "--max-concurrent-jobs", str(count),
            *SERVER_FLAGS)
    result, servers = Fencing(engine), []
    try:
        a = start(target, args, cwd=workdir, servers=servers)
        token = a.execute_key(a.token())
        ids = {}
        for n in range(count):
            label = f"{engine}-{n}"
            status, body = execute(a, token, "slow", {"call": {"url": f"{stand_in.url}/slow?task={label}&s={call_s}"}})
            assert status == 201, (status, body)
            ids[label] = int(body["id"])

        def calls() -> int:
            with stand_in.lock:
                return sum(stand_in.calls[label] for label in ids)

        assert _until(lambda: calls() == count, 10), f"A made {calls()} of {count} calls\n{a.describe()}"
        a.signal(signal.SIGSTOP)
        paused = time.monotonic()
        b = start(target, args, cwd=workdir, servers=servers)
        if _until(lambda: calls() >= 2 * count, lease_s + call_s + 10):
            result.took_over_s = round(time.monotonic() - paused, 2)
        # A resumes once B has ended every task (the worst moment for a late write), and not before paused_s.
        _until(lambda: all(t["status_name"] in ENDED for t in _tasks(b, token, ids).values()), 20, 0.2)
        time.sleep(max(0.0, paused + paused_s - time.monotonic()))  # the pause itself is the scenario
        a.signal(signal.SIGCONT)
        result.paused_s = round(time.monotonic() - paused, 2)
        _until(lambda: healthy(a.url), 5)
        time.sleep(lease_s / 2)  # let A's late writes land (or be refused) before the final read
        result.tasks = [_fencing_row(label, ids[label], task, stand_in.calls[label])
                        for label, task in _tasks(b, token, ids).items()]
        result.a_survived, result.b_survived = a.alive, b.alive
    except AssertionError as exc:
        result.failure = str(exc)[:2000]
    finally:
        for server in servers:
            server.signal(signal.SIGCONT)
            server.kill()
            result.bad_log_lines += server.bad_lines()[:10]
    return result


def _fencing_row(label: str, task_id: int, task: dict[str, Any], calls: int) -> dict[str, Any]:
    node = task["nodes"].get("call", {})
    return {"label": label, "id": task_id, "calls": calls, "attempts": node.get("attempts"),
            "status": task["status_name"], "node_status": node.get("status"), "error": task.get("error")}


# --------------------------------------------------------------------------- a node that kills its process

@dataclass
class CrashLoop:
    """A task whose node SIGKILLs its process, the server restarted after every death."""

    deaths: int = 0
    starts: int = 0
    task_status: str | None = None
    error: dict[str, Any] | None = None
    node_status: str | None = None
    attempts: int | None = None
    survived: bool = False
    followup: str | None = None
    failure: str | None = None

    def summary(self) -> str:
        return (f"{self.deaths} deaths in {self.starts} starts; task {self.task_status}, error {self.error}; "
                f"node {self.node_status} after {self.attempts} attempts; last server alive {self.survived}, "
                f"a plain task then {self.followup}" + (f"; {self.failure}" if self.failure else ""))


def run_crash_loop(target: Target, workdir: Path, *, lease_s: float = 1.0, max_starts: int = 4) -> CrashLoop:
    """Start, submit, and restart the server after each death (as a supervisor would), until the task ends."""
    workdir.mkdir(parents=True, exist_ok=True)
    marker = workdir / "crash.marker"
    marker.touch()
    crashy = {"id": "crashy", "defaults": {"start_node_id": "boom", "end_node_id": "boom"},
              "nodes": [{"id": "boom", "type": "test.crash", "settings": {"marker": str(marker)}}], "edges": []}
    flows = write_flows(workdir / "flows", [*FLOWS, crashy])
    args = ("--db", sqlite_url(workdir / "crash.db"), "--flows", str(flows), "--lease-s", str(lease_s), *SERVER_FLAGS)
    result, servers = CrashLoop(), []
    try:
        server = _start_counting(target, args, workdir, servers, result)
        token = server.execute_key(server.token())
        status, body = execute(server, token, "crashy", {})
        assert status == 201, (status, body)
        task_id = int(body["id"])
        while True:
            state = _until(lambda: not server.alive or _ended_task(server, token, task_id), 15, 0.1)  # noqa: B023
            if isinstance(state, dict):
                task = state
                break
            if server.alive:
                raise AssertionError(f"the task neither ended nor took its server down in 15 s\n{server.describe()}")
            result.deaths += 1
            if result.starts >= max_starts:
                raise AssertionError(f"{result.deaths} deaths in {result.starts} starts: a crash loop")
            server = _start_counting(target, args, workdir, servers, result)
        result.task_status, result.error = task["status_name"], task.get("error")
        node = task["nodes"].get("boom", {})
        result.node_status, result.attempts = node.get("status"), node.get("attempts")
        result.followup = _followup(server, token)
        result.survived = server.alive
    except AssertionError as exc:
        result.failure = str(exc)[:2000]
    finally:
        for each in servers:
            each.kill()
    return result


def _ended_task(server: LimitedServer, token: str, task_id: int) -> dict[str, Any] | None:
    task = _tasks(server, token, {"t": task_id}).get("t")
    return task if task is not None and task["status_name"] in ENDED else None


def _start_counting(target: Target, args: Sequence[str], workdir: Path, servers: list[LimitedServer],
                    result: CrashLoop) -> LimitedServer:
    """A started server; one that dies while starting (the task resumed at once) is returned dead."""
    result.starts += 1
    try:
        return start(target, args, cwd=workdir, test_types=True, servers=servers)
    except AssertionError:
        if servers and servers[-1].proc.poll() == -signal.SIGKILL:
            return servers[-1]
        raise


# --------------------------------------------------------------------------- two servers on an empty database

@dataclass
class TwoStarts:
    engine: str
    up: list[bool] = field(default_factory=list)
    exit_codes: list[int | None] = field(default_factory=list)
    keys_printed: int = 0
    keys_stored: int | None = None
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.engine}: up {self.up}, exit codes {self.exit_codes}, first keys printed {self.keys_printed}, "
                f"keys stored {self.keys_stored}" + (f"; {self.errors}" if self.errors else ""))


def run_two_starts(target: Target, db_url: str, workdir: Path, flows_dir: Path | None = None) -> TwoStarts:
    """Two ``serve`` processes started at the same moment on one empty database (default: the sample flows)."""
    workdir.mkdir(parents=True, exist_ok=True)
    flows_dir = flows_dir or target.root / "sample_flows"
    args = ("--db", db_url, "--flows", str(flows_dir), *SERVER_FLAGS)
    servers = [LimitedServer(target, args, cwd=workdir, port=free_port()) for _ in range(2)]
    result = TwoStarts(db_url.split(":", 1)[0].split("+", 1)[0])
    try:
        for server in servers:
            with suppress(AssertionError):
                server.wait_ready(timeout=START_TIMEOUT)
        result.up = [server.alive and healthy(server.url) for server in servers]
        result.exit_codes = [server.proc.poll() for server in servers]
        tokens = [token for server in servers for token in server.keys_printed]
        result.keys_printed = len(tokens)
        live = [server for server in servers if server.alive]
        if tokens and live:
            status, body = call("GET", f"{live[0].url}/api/v1/keys", token=tokens[0])
            result.keys_stored = len(body["keys"]) if status == 200 else None
        result.errors = [line for server in servers if not server.alive
                         for line in server.stderr.strip().splitlines()[-3:]]
    finally:
        for server in servers:
            server.kill()
    return result


# --------------------------------------------------------------------------- the command line

def main(argv: Sequence[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, help="a checkout with its own .venv (default: this tree)")
    parser.add_argument("--only", nargs="*", help="attacks or scenarios by name (fencing, crash_loop, two_starts)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    options = parser.parse_args(argv)
    target = Target.checkout(options.root) if options.root else Target()
    wanted = set(options.only or [])
    figures: dict[str, Any] = {"target": str(target.root)}
    with tempfile.TemporaryDirectory(prefix="gr-attacks-") as tmp, StandIn() as stand_in:
        work = Path(tmp)
        for name, attack in attacks(stand_in.url).items():
            if wanted and name not in wanted:
                continue
            outcome = run_attack(target, attack, work / name)
            figures[name] = asdict(outcome)
            print(f"| {name} | {attack.what} | {outcome.worst_gap_s} s | {outcome.peak_rss_mb} MB "
                  f"(children {outcome.children_peak_rss_mb}) | {'yes' if outcome.survived else 'NO'} "
                  f"(exit {outcome.exit_code}) | {outcome.saw()} | cpu after {outcome.cpu_after_end_s} s, "
                  f"then {outcome.followup} |", flush=True)
        figures.update(_scenarios(target, work, stand_in, wanted))
    if options.json:
        options.json.write_text(json.dumps(figures, indent=1, default=str))
    return 0


def _scenarios(target: Target, work: Path, stand_in: StandIn, wanted: set[str]) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    figures: dict[str, Any] = {}
    with pg_database() as fencing_pg, pg_database() as starts_pg, ThreadPoolExecutor(2) as pool:
        if not wanted or "fencing" in wanted:
            runs = [pool.submit(run_fencing, target, sqlite_url(work / "fence.db"), work / "fence-sqlite",
                                stand_in, engine="sqlite")]
            if fencing_pg:
                runs.append(pool.submit(run_fencing, target, fencing_pg, work / "fence-pg", stand_in, engine="pg"))
            for run in runs:
                fencing = run.result()
                figures[f"fencing_{fencing.engine}"] = asdict(fencing)
                print(fencing.summary(), flush=True)
        if (not wanted or "crash_loop" in wanted) and (target.root / "tests" / "crashing.py").exists():
            crash = run_crash_loop(target, work / "crash")
            figures["crash_loop"] = asdict(crash)
            print("crash loop:", crash.summary(), flush=True)
        if not wanted or "two_starts" in wanted:
            for url in (sqlite_url(work / "empty.db"), starts_pg):
                if url:
                    starts = run_two_starts(target, url, work / f"starts-{url[:6]}")
                    figures[f"two_starts_{starts.engine}"] = asdict(starts)
                    print("two starts:", starts.summary(), flush=True)
    return figures


if __name__ == "__main__":
    sys.exit(main())
