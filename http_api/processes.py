"""``graph-runtime serve --processes N``: N API+worker processes on one port (SPEC §10).

One Python process uses one core (the GIL); this is how ``serve`` uses every core of a machine.
The command's process becomes a supervisor that serves nothing itself: it starts N children,
each an ordinary ``serve`` (API and worker) with the same settings, bound to the same host and
port with ``SO_REUSEPORT``, so Linux spreads incoming connections over them. What must happen
once happens once because every process already does it under the database's start lock: the
schema upgrade, the first admin key (printed by the one child that creates it) and the flows
directory (a flow row is locked while a file is compared with its latest revision).

The supervisor:

- checks the port is free before anything starts (a plain bind, so a second supervisor or a
  plain ``serve`` on the port is refused rather than silently sharing it), and picks one port
  for all when ``--port 0``;
- says when every child listens (``N processes listening on http://host:port``);
- on SIGTERM or SIGINT sends SIGTERM to every child, which drains as ``serve`` does (running
  nodes get ``SHUTDOWN_GRACE_S``, what is left is requeued), and exits 0 once all exited 0; a
  second signal kills them at once;
- restarts a child that dies after it listened (an OOM kill, a crash), logging it, unless
  children died more than ``MAX_RESTARTS`` times within ``RESTART_WINDOW_S``: then it stops them
  all and exits 1. A child that exits before it ever listened (a bad setting, a database it
  cannot open) stops them all at once: exit 1, the child's own error above it.

Children are in their own process group (a Ctrl-C at a terminal reaches the supervisor only,
which forwards one SIGTERM), and get SIGTERM themselves if the supervisor dies (Linux's
``PR_SET_PDEATHSIG``), so none is left running.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from http_api.settings import Settings

SLOT_ENV = "GRAPH_RUNTIME_SERVE_PROCESS"
"""Set by the supervisor for its children: ``k/N``. Not a setting: a child of ``--processes`` binds
with ``SO_REUSEPORT``, while a plain ``serve`` keeps refusing a port already taken."""

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
STOP_MARGIN_S = 30.0  # on top of SHUTDOWN_GRACE_S, before a child still draining is killed
_STOPS = {signal.SIGINT, signal.SIGTERM}
_WATCHED = _STOPS | {signal.SIGCHLD}
_PR_SET_PDEATHSIG = 1


def slot() -> str | None:
    """``k/N`` in a child of ``serve --processes N``, else None."""
    return os.environ.get(SLOT_ENV)


def is_child() -> bool:
    return slot() is not None


def label() -> str:
    """What a child adds to ``serve``'s first line: `` process k of N (pid P)``; empty otherwise."""
    found = slot()
    if found is None:
        return ""
    index, total = found.split("/")
    return f" process {index} of {total} (pid {os.getpid()})"


def child_environment(settings: Settings, index: int) -> dict[str, str]:
    """This environment with every setting as its ``GRAPH_RUNTIME_*`` variable (``processes`` 1), so a
    child resolves exactly the supervisor's settings whatever came from flags, variables or defaults."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("GRAPH_RUNTIME_")}
    for name, value in settings.model_copy(update={"processes": 1}).model_dump().items():
        if value is None:
            if Settings.model_fields[name].default is not None:
                raise ValueError(f"--processes cannot pass {name}=None to its processes")
            continue
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, list):
            text = json.dumps([str(item) for item in value])  # a JSON list: entries may hold commas or "[v6]"
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"GRAPH_RUNTIME_{name.upper()}"] = text
    env[SLOT_ENV] = f"{index}/{settings.processes}"
    env["PYTHONUNBUFFERED"] = "1"  # the children's lines reach a shared stdout as they are printed
    return env


@dataclass
class Child:
    index: int
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    listening: bool = False


@dataclass
class Supervisor:
    settings: Settings
    port: int
    children: dict[int, Child] = field(default_factory=dict)
    deaths: collections.deque[float] = field(default_factory=collections.deque)
    announced: bool = False

    def start(self, index: int) -> Child:
        command = [sys.executable, "-m", "http_api.cli", "serve"]
        env = child_environment(self.settings.model_copy(update={"port": self.port}), index)
        proc = subprocess.Popen(command, env=env, process_group=0, preexec_fn=_child_setup)
        self.children[index] = Child(index, proc)
        return self.children[index]

    def watch(self) -> int | None:
        """Look at every child once: note the ones now listening, handle the ones that exited.
        An exit code for the supervisor when it must stop, else None."""
        inodes: set[str] | None = None
        for child in list(self.children.values()):
            code = child.proc.poll()
            if code is None:
                if not child.listening:
                    inodes = _listening_inodes(self.port) if inodes is None else inodes
                    child.listening = _holds_any(child.proc.pid, inodes)
                    if child.listening and self.announced:  # a restarted one
                        _say(f"process {child.index} (pid {child.proc.pid}) listening again")
                continue
            stop = self._exited(child, code)
            if stop is not None:
                return stop
        if not self.announced and all(c.listening for c in self.children.values()):
            self.announced = True
            pids = ", ".join(str(c.proc.pid) for c in self.children.values())
            print(f"graph-runtime: {len(self.children)} processes listening on "
                  f"http://{self.settings.host}:{self.port} (pids {pids})", flush=True)
        return None

    def _exited(self, child: Child, code: int) -> int | None:
        how = _exit_text(code)
        if not child.listening:
            _say(f"process {child.index} (pid {child.proc.pid}) {how} before it listened on "
                 f"{self.settings.host}:{self.port}; stopping (its error is above)")
            return 1
        now = time.monotonic()
        self.deaths.append(now)
        while self.deaths and self.deaths[0] < now - RESTART_WINDOW_S:
            self.deaths.popleft()
        if len(self.deaths) > MAX_RESTARTS:
            _say(f"process {child.index} (pid {child.proc.pid}) {how}: more than {MAX_RESTARTS} exits within "
                 f"{RESTART_WINDOW_S:.0f} s; stopping")
            return 1
        replacement = self.start(child.index)
        _say(f"process {child.index} (pid {child.proc.pid}) {how}; restarted it as pid {replacement.proc.pid}")
        return None

    def stop(self) -> int:
        """SIGTERM to every child, then wait for them to drain; 0 when every one exited 0."""
        alive = [c for c in self.children.values() if c.proc.poll() is None]
        for child in alive:
            child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_s + STOP_MARGIN_S
        while any(c.proc.poll() is None for c in alive):
            left = deadline - time.monotonic()
            info = signal.sigtimedwait(_WATCHED, min(0.2, max(left, 0.0)))
            if left <= 0 or (info is not None and info.si_signo in _STOPS):
                _say("killing the processes still running" if left > 0 else
                     f"processes still running {self.settings.shutdown_grace_s + STOP_MARGIN_S:.0f} s after "
                     "SIGTERM; killing them")
                for child in alive:
                    if child.proc.poll() is None:
                        child.proc.kill()
                for child in alive:
                    child.proc.wait()
        return 0 if all(c.proc.returncode == 0 for c in alive) else 1


def supervise(settings: Settings) -> int:
    """``serve --processes N``: run N ``serve`` children on one port until SIGTERM/SIGINT."""
    if not hasattr(socket, "SO_REUSEPORT") or not Path("/proc/net/tcp").exists():
        _say("--processes needs Linux (SO_REUSEPORT spreading connections over processes)")
        return 1
    try:
        port = _free_port(settings.host, settings.port)
    except OSError as exc:
        print(f"error: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    signal.pthread_sigmask(signal.SIG_BLOCK, _WATCHED)  # taken by sigtimedwait below, never by a handler
    supervisor = Supervisor(settings, port)
    try:
        for index in range(1, settings.processes + 1):
            supervisor.start(index)
        while True:
            info = signal.sigtimedwait(_WATCHED, 0.25)
            if info is not None and info.si_signo in _STOPS:
                print(f"graph-runtime: stopping {settings.processes} processes", flush=True)
                return supervisor.stop()
            failed = supervisor.watch()
            if failed is not None:
                supervisor.stop()
                return failed
    finally:
        for child in supervisor.children.values():
            if child.proc.poll() is None:
                child.proc.kill()
                child.proc.wait()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _WATCHED)


def _child_setup() -> None:
    """In the child before it runs: the supervisor's blocked signals unblocked (a mask is inherited),
    and SIGTERM when the supervisor dies."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _WATCHED)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port(host: str, port: int) -> int:
    """``port`` if nothing listens there (``0``: a free port), as a plain ``serve`` would bind it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
        sock.bind((host, port))
        return int(sock.getsockname()[1])


def _listening_inodes(port: int) -> set[str]:
    """The socket inodes in state LISTEN on ``port`` (``/proc/net/tcp`` and ``tcp6``)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


def _holds_any(pid: int, inodes: set[str]) -> bool:
    """Whether process ``pid`` has one of these sockets open."""
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EACCES):
                continue
            raise
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def _exit_text(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _say(message: str) -> None:
    print(f"graph-runtime: {message}", file=sys.stderr, flush=True)
