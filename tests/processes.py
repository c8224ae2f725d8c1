"""The ``graph-runtime`` command as a person runs it: one-shot commands and a served process.

Only for tests that are about the process (CLI, signals, the README's walk-through); everything
else uses the in-process server from ``tests/conftest.py``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_FLOWS = ROOT / "sample_flows"
SCRIPT = Path(sys.executable).parent / "graph-runtime"
KEY_LINE = re.compile(r"^\s*GRAPH_RUNTIME_KEY=(\S+)\s*$", re.MULTILINE)
START_TIMEOUT = 40.0  # a server's start-up on a loaded 2-core machine (20 s ran out once in CI)
STOP_TIMEOUT = 15.0
COMMAND_TIMEOUT = 30.0

T = TypeVar("T")

# Plain urllib without the environment's proxies: the server is on 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def cli_command(*args: str) -> list[str]:
    """The installed console script next to this interpreter, else ``python -m http_api.cli``."""
    if SCRIPT.exists():
        return [str(SCRIPT), *args]
    return [sys.executable, "-m", "http_api.cli", *args]


def process_env(**extra: str) -> dict[str, str]:
    """This environment without GRAPH_RUNTIME_* variables, so only the flags configure the child."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("GRAPH_RUNTIME_")}
    env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def sample_flow_ids() -> set[str]:
    """The ids declared by the files in ``sample_flows/`` (YAML or JSON)."""
    return {str(yaml.safe_load(path.read_text(encoding="utf-8"))["id"]) for path in SAMPLE_FLOWS.iterdir()
            if path.suffix in (".yaml", ".yml", ".json")}


def key_id(token: str) -> str:
    """The key id inside a token (base64 of ``<key id>:<secret>``)."""
    return base64.b64decode(token, validate=True).decode().split(":", 1)[0]


def run_cli(*args: str, cwd: Path, timeout: float = COMMAND_TIMEOUT, module: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run one ``graph-runtime`` command to completion; stdout and stderr captured as text.

    ``module`` runs ``python -m http_api.cli`` instead of the console script; ``env`` adds
    variables (e.g. GRAPH_RUNTIME_*) to the child's environment.
    """
    command = [sys.executable, "-m", "http_api.cli", *args] if module else cli_command(*args)
    return subprocess.run(command, cwd=cwd, env=process_env(**(env or {})), capture_output=True, text=True,
                          timeout=timeout, check=False)


def run_cli_concurrently(commands: Sequence[tuple[Sequence[str], Path]],
                         timeout: float = COMMAND_TIMEOUT) -> list[subprocess.CompletedProcess[str]]:
    """Run several independent ``(args, cwd)`` commands at once (each start-up costs ~1 s of imports)."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for args, cwd in commands:
            procs.append(subprocess.Popen(cli_command(*args), cwd=cwd, env=process_env(), text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        deadline = time.monotonic() + timeout
        results = []
        for proc, (args, _) in zip(procs, commands, strict=True):
            out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            results.append(subprocess.CompletedProcess(list(args), proc.returncode, out, err))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            if proc.stdout is not None and not proc.stdout.closed:
                proc.communicate()


def last_json_line(stdout: str) -> Any:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "no output on stdout"
    return json.loads(lines[-1])


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], T], *, timeout: float, interval: float = 0.02, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s (last value: {value!r})")
        time.sleep(interval)


def http_raw(method: str, url: str, *, token: str | None = None, body: Any = None,
             timeout: float = 10.0) -> tuple[int, bytes]:
    """One request; answers ``(status, raw body)`` for any status."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token is not None:
        headers["Authorization"] = f"Basic {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with closing(exc):
            return exc.code, exc.read()


def http_json(method: str, url: str, *, token: str | None = None, body: Any = None,
              timeout: float = 10.0) -> tuple[int, Any]:
    """One request; answers ``(status, parsed JSON body or None)`` for any status."""
    status, raw = http_raw(method, url, token=token, body=body, timeout=timeout)
    return status, _parse(raw)


def _parse(raw: bytes) -> Any:
    return json.loads(raw) if raw.strip() else None


class ServerProcess:
    """``graph-runtime serve`` in a child process, its output drained by two threads."""

    def __init__(self, args: Sequence[str], *, cwd: Path, port: int, port_by_env: bool = False) -> None:
        """``port_by_env`` gives the port as GRAPH_RUNTIME_PORT, so the command is ``serve ARGS``."""
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        if port_by_env:
            command, env = cli_command("serve", *args), process_env(GRAPH_RUNTIME_PORT=str(port))
        else:
            command, env = cli_command("serve", "--port", str(port), *args), process_env()
        self._spawn(command, cwd=cwd, env=env)

    def _spawn(self, command: Sequence[str], *, cwd: Path, env: dict[str, str]) -> None:
        """Start ``command`` and drain its stdout/stderr in two threads (subclasses share this)."""
        self.proc = subprocess.Popen(list(command), cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self._out: list[str] = []
        self._err: list[str] = []
        self._lock = threading.Lock()
        self._readers = [threading.Thread(target=self._drain, args=(stream, sink), daemon=True)
                         for stream, sink in ((self.proc.stdout, self._out), (self.proc.stderr, self._err))]
        for reader in self._readers:
            reader.start()

    def _drain(self, stream: IO[str], sink: list[str]) -> None:
        for line in stream:
            with self._lock:
                sink.append(line)

    @property
    def stdout(self) -> str:
        with self._lock:
            return "".join(self._out)

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self._err)

    @property
    def keys_printed(self) -> list[str]:
        """Every ``GRAPH_RUNTIME_KEY=<token>`` line's token, in order."""
        return KEY_LINE.findall(self.stdout)

    def describe(self) -> str:
        return f"exit code {self.proc.poll()}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr[-4000:]}"

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until /healthz answers 200 and the start-up banner is printed; fails if the process exits."""

        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"graph-runtime serve exited during start-up:\n{self.describe()}")
            try:
                return http_json("GET", f"{self.url}/healthz", timeout=2.0)[0] == 200
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        wait_until(healthy, timeout=timeout, what="GET /healthz answers 200")
        wait_until(lambda: "Running on" in self.stdout, timeout=timeout, what="the 'Running on' banner")

    def request(self, method: str, path: str, *, token: str | None = None, body: Any = None) -> tuple[int, Any]:
        return http_json(method, f"{self.url}{path}", token=token, body=body)

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``sig`` and wait (with a deadline) for the exit code."""
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"graph-runtime serve still running {timeout}s after {sig.name}:\n"
                                 f"{self.describe()}") from None
        self._close()
        return code

    def kill(self) -> None:
        """Teardown: make sure the child is gone and its pipes are closed."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=STOP_TIMEOUT)
        self._close()

    def _close(self) -> None:
        for reader in self._readers:
            reader.join(timeout=STOP_TIMEOUT)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()


@contextmanager
def serving(*args: str, cwd: Path, port_by_env: bool = False, attempts: int = 3) -> Iterator[ServerProcess]:
    """``graph-runtime serve ARGS --port <free port>``, ready; always killed on the way out.

    A free port can be taken between picking it and binding it; then another port is tried.
    """
    for attempt in range(1, attempts + 1):
        server = ServerProcess(args, cwd=cwd, port=free_port(), port_by_env=port_by_env)
        try:
            server.wait_ready()
        except BaseException as exc:
            server.kill()
            port_taken = "address already in use" in server.stderr.lower()
            if isinstance(exc, AssertionError) and port_taken and attempt < attempts:
                continue
            raise
        try:
            yield server
        finally:
            server.kill()
        return
