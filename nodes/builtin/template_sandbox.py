"""What runs inside a template worker process: the bounded sandbox and the render loop.

Any execute-scope key can override a template through ``node_settings``, so a template is
hostile input. Jinja2's sandbox stops attribute escapes but not resource use:
``{{ 'x'|center(10**9) }}``, ``'%0999999999d' % 1`` or a loop that doubles a string with ``~``
build gigabyte strings, and a render on a thread cannot be stopped — after its node had timed
out, such a thread went on allocating until the server stalled (issue 8).

Design decision: resource-limited processes, not a counting sandbox. Counting (instrumenting
every operator, filter and method to add up sizes and steps) would have to know every way
Python can grow a string or loop, and one missed path (``replace``, ``indent``, a format
spec, a ``~`` loop) is enough. A process gets hard limits from the kernel instead:
``RLIMIT_AS`` turns any oversized allocation into a ``MemoryError``, ``RLIMIT_CPU`` ends a
runaway loop with ``SIGXCPU``, and a render that outlives its node's timeout is killed with
``SIGKILL``, which frees everything it held. The cheap checks of :class:`_BoundedSandbox`
(``**``, ``*``, ``%`` and format widths, ``center``, ``join``) stay: they are exact — such a
text would be over the output limit anyway — and fail common attacks with ``invalid_params``
before any memory is used. A warm render costs a pipe round trip (~0.12 ms against ~0.06 ms
on a thread, measured); templates are not on the hot path.

Why ``subprocess`` and not ``multiprocessing``: workers must not be forked from the server (it
has threads), so they start as fresh interpreters — what ``multiprocessing``'s ``spawn`` does,
but ``spawn`` re-runs the parent's ``__main__`` in every child (for ``graph-runtime serve``,
the server's CLI) and imports its target through ``nodes.builtin`` (aiohttp, pydantic):
~0.45 s and ~60 MB a worker instead of ~0.07 s and ~20 MB. So the parent
(:class:`nodes.builtin.template.TemplateRenderer`) runs this file as a script
(``python -P template_sandbox.py``), and it imports only the standard library and jinja2.

One frame each way per render, over the worker's stdin and stdout: the parent sends a pickle
(it is trusted); the worker answers with a fixed header and UTF-8 text — never a pickle, as
it runs untrusted templates.
"""

from __future__ import annotations

import functools
import math
import os
import pickle
import re
import resource
import struct
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.filters import do_center, do_format, sync_do_join
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment, SandboxedFormatter

MAX_POWER_BITS = 4096
MAX_REPEAT_ITEMS = 1_000_000
MAX_MESSAGE_CHARS = 2000
SCRIPT = Path(__file__).resolve()  # what a worker process runs

# The frames: a request is its length and a pickle of (source, variables, max_output_bytes);
# an answer is REPLY (body length, kind, retire: the worker exits after it) and the body:
# the UTF-8 text for OK, else the error message.
REQUEST = struct.Struct("!I")
REPLY = struct.Struct("!IBB")
OK, INVALID, FAILED, TOO_LARGE, NO_MEMORY = range(5)
# A worker may use this many renders' worth of CPU in its life (the RLIMIT_CPU hard ceiling);
# it retires before a render could run out of its own budget.
_LIFETIME_BUDGETS = 30
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill"})
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d*)[,_]?(?:\.(?P<precision>\d+))?(?P<type>[a-zA-Z%]?)", re.S)
_PRINTF = re.compile(r"%(?:\((?P<key>[^)]*)\))?[-#0 +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d*))?[hlL]?(?P<type>.)", re.S)
_EXACT_PRECISION = frozenset("diouxXeEfF%")  # precision adds digits; for s/r/a it truncates


class _BoundedSandbox(SandboxedEnvironment):
    """The sandbox, plus exact refusals of operations whose result would be too large.

    ``max_chars`` is the output limit of the render in progress: a string wider than that
    could not be output anyway, so refusing it early changes no successful render.
    """

    intercepted_binops = frozenset({"**", "*", "%"})
    max_chars = 16 * 1024 * 1024

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters.update(center=_center, format=_format, join=_join)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and _too_big_power(left, right):
            raise SecurityError(f"{left!r} ** {right!r} is too large to compute in a template")
        if operator == "*" and _too_big_repeat(left, right):
            raise SecurityError("repeating a string or list that many times is not allowed in a template")
        if operator == "%" and isinstance(left, str):
            _check_printf(left, right, self.max_chars)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(obj, "__self__", None)
        name = getattr(obj, "__name__", "")
        if isinstance(owner, str) and args:
            if name in _PADDING_METHODS:
                _refuse(args[0], self.max_chars, f"str.{name} width")
            elif name == "join":
                args = (_checked_items(args[0], owner, self.max_chars), *args[1:])
        return super().call(context, obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        source: str = value.__self__
        is_map = value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            if not is_map:
                _WidthCheck(self).vformat(source, args, kwargs)
            elif len(args) == 1 and not kwargs:
                _WidthCheck(self).vformat(source, (), args[0])
            return wrapper(*args, **kwargs)

        return functools.update_wrapper(checked, wrapper)


class _WidthCheck(SandboxedFormatter):
    """Resolves a ``str.format`` string's fields as the real call will, to check their specs.

    Short ints and strings are formatted, since a nested field (``{:>{width}}``) becomes part
    of a spec; anything else is skipped, so the check never builds the big text itself.
    """

    def format_field(self, value: Any, format_spec: str) -> str:
        match = _FORMAT_SPEC.fullmatch(format_spec)
        if match is not None:
            limit = getattr(self._env, "max_chars", _BoundedSandbox.max_chars)
            _refuse(match["width"], limit, "format width")
            if match["type"] and match["type"] in _EXACT_PRECISION:
                _refuse(match["precision"], limit, "format precision")
        if isinstance(value, int) or (isinstance(value, str) and len(value) <= 64):
            return str(value)
        return ""


def _refuse(amount: Any, limit: int, what: str) -> None:
    """Raise SecurityError when ``amount`` (an int or a string of digits) exceeds ``limit``."""
    if isinstance(amount, str):
        digits = amount.lstrip("0")
        amount = int(digits) if digits.isdigit() and len(digits) <= 18 else (limit + 1 if digits else 0)
    if isinstance(amount, int) and abs(amount) > limit:
        raise SecurityError(f"{what} {amount} would make a text longer than the output limit ({limit} bytes)")


def _check_printf(source: str, values: Any, limit: int) -> None:
    positional = values if isinstance(values, tuple) else (values,)
    index = 0
    for match in _PRINTF.finditer(source):
        if match["type"] == "%":
            continue
        for part in ("width", "precision"):
            amount: Any = match[part]
            if amount == "*":
                amount = positional[index] if index < len(positional) else None
                index += 1
            if part == "width" or match["type"] in _EXACT_PRECISION:
                _refuse(amount, limit, f"% {part}")
        if match["key"] is None:
            index += 1


def _checked_items(items: Iterable[Any], separator: str, limit: int) -> list[Any]:
    """``items`` as a list, refused when joining its strings would exceed ``limit``."""
    listed = list(items)
    size = len(separator) * max(len(listed) - 1, 0)
    size += sum(len(item) for item in listed if isinstance(item, str))
    _refuse(size, limit, "joined length")
    return listed


@jinja2.pass_environment
def _center(environment: Any, value: Any, width: int = 80) -> str:
    _refuse(width, environment.max_chars, "center width")
    return do_center(value, width)


@jinja2.pass_environment
def _format(environment: Any, value: Any, *args: Any, **kwargs: Any) -> str:
    _check_printf(str(value), kwargs or args, environment.max_chars)
    return do_format(value, *args, **kwargs)


@jinja2.pass_eval_context
def _join(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: str | int | None = None) -> str:
    items = _checked_items(value, d, eval_ctx.environment.max_chars) if attribute is None else value
    return sync_do_join(eval_ctx, items, d, attribute)


def _too_big_power(left: Any, right: Any) -> bool:
    if not isinstance(left, int) or not isinstance(right, int) or right <= 1 or abs(left) <= 1:
        return False
    return abs(left).bit_length() * right > MAX_POWER_BITS


def _too_big_repeat(left: Any, right: Any) -> bool:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
            return len(seq) * times > MAX_REPEAT_ITEMS
    return False


# Built once per process: the environment holds configuration only, and compiled templates
# are reused across renders through the cache below (in the worker).
_ENVIRONMENT = _BoundedSandbox(undefined=jinja2.StrictUndefined, autoescape=False)


@functools.lru_cache(maxsize=256)
def _compile(source: str) -> jinja2.Template:
    return _ENVIRONMENT.from_string(source)


def _render(source: str, variables: dict[str, Any], max_bytes: int) -> tuple[int, str]:
    """The answer's kind and text (or error message) for one template."""
    _ENVIRONMENT.max_chars = max_bytes
    try:
        return OK, _compile(source).render(variables)
    except jinja2.TemplateSyntaxError as exc:
        return INVALID, f"template: syntax error on line {exc.lineno}: {exc.message}"
    except jinja2.UndefinedError as exc:
        return INVALID, f"template: {exc.message}"
    except jinja2.TemplateError as exc:
        # SecurityError (the sandbox refused an attribute, a call or a size) and the like.
        return INVALID, f"template: {exc}"
    except MemoryError:
        return NO_MEMORY, "template: rendering needs more memory than a template may use"
    except Exception as exc:
        # Rendering is deterministic: whatever failed will fail again (not retryable).
        return FAILED, f"template: {type(exc).__name__}: {exc}"


def _answer(source: str, variables: dict[str, Any], max_bytes: int) -> tuple[int, bytes]:
    kind, text = _render(source, variables, max_bytes)
    if kind != OK:
        return kind, text[:MAX_MESSAGE_CHARS].encode("utf-8", "replace")
    if len(text) <= max_bytes:  # a character is at least one byte: no encoding needed to refuse
        data = text.encode("utf-8", "surrogatepass")
        if len(data) <= max_bytes:
            return OK, data
    message = f"template: the text is longer than the {max_bytes} bytes a node may output; move big data as files"
    return TOO_LARGE, message.encode()


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _set_limit(kind: int, soft: int, hard: int) -> None:
    # Never above the hard limit the process was started with (e.g. a container's ulimit).
    current = resource.getrlimit(kind)[1]
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(kind, (soft, hard))


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks, missing = [], size
    while missing:
        chunk = os.read(fd, min(missing, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _serve(memory_bytes: int, cpu_s: float) -> None:
    """The worker's loop: read a request, render it, answer; exit when the parent goes away."""
    requests, replies = os.dup(0), os.dup(1)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)  # a stray print must not corrupt the replies
    # RLIMIT_CPU counts the process's whole life in whole seconds: each render gets a soft
    # limit of [cpu_s, cpu_s + 1) s from now, under a hard ceiling for the worker's life.
    budget = max(1, math.ceil(cpu_s))
    ceiling = math.ceil(_cpu_used()) + budget * _LIFETIME_BUDGETS
    _set_limit(resource.RLIMIT_CORE, 0, 0)
    _set_limit(resource.RLIMIT_AS, memory_bytes, memory_bytes)
    _set_limit(resource.RLIMIT_CPU, math.ceil(_cpu_used() + cpu_s), ceiling)
    while (head := _read_exact(requests, REQUEST.size)) is not None:
        body = _read_exact(requests, REQUEST.unpack(head)[0])
        if body is None:
            return
        _set_limit(resource.RLIMIT_CPU, math.ceil(_cpu_used() + cpu_s), ceiling)
        try:
            kind, data = _answer(*pickle.loads(body))
        except MemoryError:
            kind, data = NO_MEMORY, b"template: rendering needs more memory than a template may use"
        retire = kind == NO_MEMORY or math.ceil(_cpu_used() + cpu_s) >= ceiling
        try:
            _write_all(replies, REPLY.pack(len(data), kind, retire))
            _write_all(replies, data)
        except BrokenPipeError:
            return
        if retire:
            return


if __name__ == "__main__":
    _serve(int(sys.argv[1]), float(sys.argv[2]))
