"""The ``template`` node type and the pool of worker processes that render for it.

Templates are hostile input (any execute-scope key can override one through
``node_settings``), so they render in resource-limited processes: see
:mod:`nodes.builtin.template_sandbox` for what runs there and why. This module is the parent
side: it starts workers lazily, hands each render to an idle one over its pipes without
blocking the event loop, kills the worker of a render that is cancelled (the node's timeout),
and turns the worker's answers and deaths into node errors.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys
import weakref
from collections import deque
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nodes import errors
from nodes.builtin import template_sandbox
from nodes.contract import NodeType, RunContext, RunPolicy
from nodes.limits import Limits

_CHILD_ENV = frozenset({"PATH", "PYTHONPATH", "PYTHONHOME", "LANG", "TMPDIR"})


class _Died(Exception):
    """The worker closed its pipe: it exited or was killed."""


class _Worker:
    """One renderer process and the parent's ends of its two pipes."""

    def __init__(self, limits: Limits) -> None:
        self.key = _worker_key(limits)
        # A fresh interpreter running the sandbox script (-P: its folder, nodes/builtin, must not
        # shadow top-level modules); its own session, so a Ctrl-C of the server is not its.
        command = [sys.executable, "-P", str(template_sandbox.SCRIPT), str(limits.template_memory_bytes),
                   repr(limits.template_cpu_s)]
        # Only the environment Python needs: the server's secrets (database URL…) stay out of
        # reach even if a template found a way out of the sandbox. No fds but the pipes either.
        env = {name: value for name, value in os.environ.items() if name in _CHILD_ENV or name.startswith("LC_")}
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                                        env=env, start_new_session=True)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.writer, self.reader = self.process.stdin.fileno(), self.process.stdout.fileno()
        os.set_blocking(self.writer, False)
        os.set_blocking(self.reader, False)

    async def exchange(self, request: bytes, max_body: int) -> tuple[int, bool, bytes]:
        """Send one request and wait for its answer.

        Raises:
            _Died: the process went away before answering.
            errors.NodeFailed: the answer is malformed or too large.
        """
        loop = asyncio.get_running_loop()
        await self._send(loop, template_sandbox.REQUEST.pack(len(request)) + request)
        return await self._receive(loop, max_body)

    async def _send(self, loop: asyncio.AbstractEventLoop, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.writer, view):]
            except BlockingIOError:
                writable: asyncio.Future[None] = loop.create_future()
                loop.add_writer(self.writer, _set_once, writable)
                try:
                    await writable
                finally:
                    loop.remove_writer(self.writer)
            except BrokenPipeError:
                raise _Died from None

    async def _receive(self, loop: asyncio.AbstractEventLoop, max_body: int) -> tuple[int, bool, bytes]:
        answer: asyncio.Future[tuple[int, bool, bytes]] = loop.create_future()
        buffer, header = bytearray(), template_sandbox.REPLY

        def on_readable() -> None:
            if answer.done():
                return
            try:
                chunk = os.read(self.reader, 1 << 20)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                answer.set_exception(_Died())
                return
            buffer.extend(chunk)
            if len(buffer) >= header.size:
                size, kind, retire = header.unpack_from(buffer)
                if size > max_body or len(buffer) > header.size + size:
                    answer.set_exception(errors.NodeFailed("template: the renderer process sent a malformed answer"))
                elif len(buffer) == header.size + size:
                    answer.set_result((kind, bool(retire), bytes(buffer[header.size:])))

        loop.add_reader(self.reader, on_readable)
        try:
            return await answer
        finally:
            loop.remove_reader(self.reader)

    async def exit_status(self) -> int | None:
        """The exit status once the process ended (it is killed if it lingers over a second)."""
        for attempt in range(400):
            if (code := self.process.poll()) is not None:
                return code
            if attempt == 200:
                self.process.kill()
            await asyncio.sleep(0.005)
        return None

    def stop(self) -> None:
        """Kill the process (if alive) and close the pipes; it is reaped separately."""
        if self.process.poll() is None:
            self.process.kill()
        _close_pipes(self.process)


class TemplateRenderer:
    """Renders templates in up to ``workers`` sandboxed processes, started on first use.

    Each process renders one template at a time under ``RLIMIT_AS`` and ``RLIMIT_CPU`` from
    the render's :class:`~nodes.limits.Limits`. A render that is cancelled (the node's timeout)
    kills its process; a process that dies fails its render with ``node_failed``; either way
    the next render starts a fresh one.

    Args:
        workers: the most processes (and so concurrent renders); more renders wait their turn.
    """

    def __init__(self, workers: int = 2) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._size = workers
        self._workers: set[_Worker] = set()
        self._idle: list[_Worker] = []
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._unreaped: set[subprocess.Popen[bytes]] = set()
        # If the owner never calls aclose, the processes still end with this object (or at exit).
        weakref.finalize(self, _kill_and_reap, self._unreaped)

    def worker_pids(self) -> list[int]:
        """The process ids of the live workers (for monitoring and tests)."""
        return sorted(worker.process.pid for worker in self._workers)

    async def render(self, source: str, variables: dict[str, Any], limits: Limits) -> str:
        """Render ``source`` with ``variables`` in a worker process.

        Raises:
            errors.InvalidParams: a syntax error, an undefined variable, an unsafe access or
                an operation whose result would exceed the output limit (field ``template``).
            errors.OutputTooLarge: the text is longer than ``limits.max_output_bytes``.
            errors.NodeFailed: rendering failed otherwise, ran out of memory or CPU time, or
                the worker died.
        """
        request = _request(source, variables, limits.max_output_bytes)
        max_body = max(limits.max_output_bytes, template_sandbox.MAX_MESSAGE_CHARS * 4)  # UTF-8: ≤ 4 bytes a char
        worker = await self._acquire(limits)
        keep = False
        try:
            try:
                kind, retire, body = await worker.exchange(request, max_body)
            except _Died:
                raise errors.NodeFailed(_death_message(await worker.exit_status(), limits)) from None
            keep = not retire
        finally:
            # A cancelled render (the node timed out) may still be running: only a worker
            # that answered goes back to the pool.
            if keep:
                self._release(worker)
            else:
                self._discard(worker)
        return _outcome(kind, body, limits)

    async def aclose(self) -> None:
        """Stop every worker and wait until they have exited; a later render starts new ones."""
        for worker in list(self._workers):
            if worker in self._idle:
                self._discard(worker)
            else:  # its render is reading the pipes: it sees the end and discards the worker
                worker.process.kill()
        for _ in range(400):
            if not any(process.poll() is None for process in self._unreaped):
                break
            await asyncio.sleep(0.005)
        self._unreaped.difference_update([p for p in self._unreaped if p.returncode is not None])

    async def _acquire(self, limits: Limits) -> _Worker:
        key = _worker_key(limits)
        while True:
            while self._idle:
                worker = self._idle.pop()
                if worker.key == key and worker.process.poll() is None:
                    return worker
                self._discard(worker)
            if len(self._workers) < self._size:
                return self._start(limits)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_next()  # pass on the turn this waiter was given
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _start(self, limits: Limits) -> _Worker:
        try:
            worker = _Worker(limits)
        except OSError as exc:
            raise errors.NodeFailed(f"template: could not start a renderer process: {exc}") from exc
        self._workers.add(worker)
        self._unreaped.add(worker.process)
        return worker

    def _release(self, worker: _Worker) -> None:
        self._idle.append(worker)
        self._wake_next()

    def _discard(self, worker: _Worker) -> None:
        self._workers.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        worker.stop()
        self._reap(worker.process)
        self._wake_next()

    def _reap(self, process: subprocess.Popen[bytes]) -> None:
        # A killed process takes a moment to exit; reap it without blocking the loop.
        if process.poll() is None:
            asyncio.get_running_loop().call_later(0.01, self._reap, process)
        else:
            self._unreaped.discard(process)

    def _wake_next(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done() and not waiter.get_loop().is_closed():
                waiter.set_result(None)
                return


_ERRORS: dict[int, type[errors.NodeFailed]] = {
    template_sandbox.INVALID: errors.InvalidParams,
    template_sandbox.FAILED: errors.NodeFailed,
    template_sandbox.TOO_LARGE: errors.OutputTooLarge,
}


def _worker_key(limits: Limits) -> tuple[int, float]:
    return limits.template_memory_bytes, limits.template_cpu_s


def _request(source: str, variables: dict[str, Any], max_output_bytes: int) -> bytes:
    try:
        request = pickle.dumps((source, variables, max_output_bytes), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise errors.NodeFailed(f"template: a variable cannot be sent to the renderer: {exc}") from exc
    if len(request) >= 1 << 32:
        raise errors.NodeFailed("template: the variables are too large")
    return request


def _outcome(kind: int, body: bytes, limits: Limits) -> str:
    if kind == template_sandbox.OK:
        return body.decode("utf-8", "surrogatepass")
    message = body.decode("utf-8", "replace")
    if kind == template_sandbox.NO_MEMORY:
        mib = limits.template_memory_bytes // (1024 * 1024)
        raise errors.NodeFailed(f"template: rendering needs more than the {mib} MiB of memory a template may use")
    error = _ERRORS.get(kind, errors.NodeFailed)
    raise error(message, field="template") if error is errors.InvalidParams else error(message)


def _death_message(code: int | None, limits: Limits) -> str:
    if code == -signal.SIGXCPU:
        return f"template: rendering used more than the {limits.template_cpu_s:g} s of CPU a template may use"
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"template: the renderer process was killed ({name})"
    return f"template: the renderer process exited unexpectedly (status {code})"


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _close_pipes(process: subprocess.Popen[bytes]) -> None:
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()


def _kill_and_reap(processes: set[subprocess.Popen[bytes]]) -> None:
    for process in list(processes):
        if process.poll() is None:
            process.kill()
        process.wait()
        _close_pipes(process)
    processes.clear()


class Template(NodeType):
    """Renders a Jinja2 template; every other parameter is a template variable.

    Rendering happens in a pool of resource-limited processes
    (:mod:`nodes.builtin.template_sandbox`): a hostile template fails its node instead of
    exhausting the server, and one that times out is killed.
    """

    type = "template"
    deterministic = True  # the sandbox offers no clock or randomness: equal variables, equal text
    description = (
        "Renders a Jinja2 template (sandboxed, no autoescaping) and outputs {text}. Every "
        "other parameter or input is a variable; an undefined variable is an error."
    )
    # A render holds a worker process until it ends: never without a deadline. CPU is capped
    # separately by Limits.template_cpu_s, which a request cannot raise.
    policy = RunPolicy(timeout_s=30.0)

    class Params(BaseModel):
        model_config = ConfigDict(extra="allow")

        template: str = Field(description="Jinja2 source, e.g. 'Hello {{ name }}'.")

    class Output(BaseModel):
        text: str

    def __init__(self) -> None:
        self._renderer = TemplateRenderer()

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Render in a worker process, bounded by ``ctx.limits``.

        Raises:
            errors.InvalidParams: a syntax error, an undefined variable, an unsafe access or
                an operation whose result would be larger than the output limit.
            errors.OutputTooLarge: the text is larger than ``ctx.limits.max_output_bytes``.
            errors.NodeFailed: rendering failed otherwise, or ran out of memory or CPU time.
        """
        text = await self._renderer.render(params.template, dict(params.model_extra or {}), ctx.limits)
        return self.Output(text=text)

    async def close(self) -> None:
        """Stop the worker processes."""
        await self._renderer.aclose()
