"""One node's tries: parameter check, timeout, retries with exponential backoff and jitter."""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic

from nodes import codec, contract
from nodes import errors as node_errors
from nodes.contract import NodeType, RunContext

MakeContext = Callable[[int, float | None], RunContext]


def backoff_delay(base: float, attempt: int) -> float:
    """``base·2^(attempt−1)`` scaled by a random factor in [0.5, 1.5) so retries spread out."""
    return base * 2 ** (attempt - 1) * (0.5 + random.random())


async def run_attempts(
    instance: NodeType,
    params: dict[str, Any],
    make_context: MakeContext,
    before_attempt: Callable[[], Awaitable[None]],
) -> tuple[dict[str, Any], float]:
    """Run the node until it succeeds, fails for good, or runs out of retries.

    Args:
        instance: the node type's shared instance.
        params: merged settings and inputs, run settings (timeout/retries) included.
        make_context: builds the ``RunContext`` of attempt n with its timeout.
        before_attempt: records that an attempt starts (so a crash mid-try still counts it).

    Returns:
        The output as JSON-ready data, and the cost of the successful try.
    Raises:
        nodes.errors.GraphRuntimeError: the last failure, with a stable code.
    """
    node_type = type(instance)
    policy, rest = contract.split_policy(params, node_type.policy)
    model = contract.validate_params(node_type, rest)
    timeout = policy.timeout_s
    floor = instance.min_timeout(model)
    if timeout is not None and floor is not None:
        timeout = max(timeout, floor)
    tries = policy.retries + 1
    for attempt in range(1, tries + 1):
        await before_attempt()
        try:
            return await _one_try(instance, model, make_context(attempt, timeout), timeout)
        except node_errors.GraphRuntimeError as exc:
            if not exc.retryable or attempt == tries:
                raise
        await asyncio.sleep(backoff_delay(policy.retry_backoff_s, attempt))
    raise AssertionError("unreachable: the loop returns or raises")


async def _one_try(instance: NodeType, params: Any, ctx: RunContext, timeout: float | None) -> tuple[dict[str, Any], float]:
    node_type = type(instance)
    started = time.perf_counter()
    try:
        if timeout is None:
            output = await _run(instance, params, ctx)
        else:
            async with asyncio.timeout(timeout):
                output = await _run(instance, params, ctx)
    except TimeoutError:
        ctx.stop.set()
        raise node_errors.NodeTimeout(f"the node ran longer than its timeout_s ({timeout}s)") from None
    except node_errors.GraphRuntimeError:
        raise
    except Exception as exc:
        raise node_errors.UnexpectedError(f"{type(exc).__name__}: {exc}") from exc
    elapsed = time.perf_counter() - started
    try:
        if not isinstance(output, node_type.Output):
            output = node_type.Output.model_validate(output)
        data = output.model_dump(mode="json")
        await _check_storable(data, ctx.limits.max_output_bytes)
    except pydantic.ValidationError as exc:
        raise node_errors.NodeFailed(f"the node returned an invalid output: {exc.errors()[0]['msg']}") from None
    except (TypeError, ValueError) as exc:
        raise node_errors.NodeFailed(f"the node's output cannot be stored as JSON: {exc}") from None
    return data, node_type.cost.price(elapsed, ctx.usage)


async def _run(instance: NodeType, params: Any, ctx: RunContext) -> Any:
    """The node's ``run``: awaited when it is a coroutine function; a plain ``def run`` is called on
    a thread (SPEC §10), so blocking node code never freezes the API or the heartbeats. On a
    cancel or timeout its ``ctx.stop`` is set; the thread is not waited for."""
    if inspect.iscoroutinefunction(type(instance).run):
        return await instance.run(params, ctx)
    return await ctx.to_thread(instance.run, params, ctx)


ENCODE_ON_LOOP_BELOW = 256 * 1024
"""An output estimated below this is test-encoded on the event loop (microseconds); a larger one
on a thread, so a multi-megabyte output never holds other requests."""


async def _check_storable(data: Any, limit: int) -> None:
    """Fail the node now if its output is too large or cannot be stored as JSON.

    What cannot be stored must fail this node, not the task's bookkeeping; a size past
    MAX_OUTPUT_BYTES is refused before anything encodes it.

    Raises:
        node_errors.OutputTooLarge: the output is larger than ``limit`` bytes of JSON.
        TypeError, ValueError: it is not JSON-serialisable.
    """
    if codec.size_exceeds(data, limit):
        raise node_errors.OutputTooLarge(_too_large(limit))
    if codec.size_exceeds(data, ENCODE_ON_LOOP_BELOW):
        size = len(await asyncio.to_thread(codec.dumps, data))
    else:
        size = len(codec.dumps(data))
    if size > limit:
        raise node_errors.OutputTooLarge(_too_large(limit))


def _too_large(limit: int) -> str:
    return (f"the node's output is larger than MAX_OUTPUT_BYTES ({limit} bytes of JSON); "
            "move big data as files, or raise the server's limit")
