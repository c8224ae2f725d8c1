"""One node's tries: parameter check, timeout, retries with exponential backoff and jitter."""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING, Any

import pydantic

from graph_runtime.models import NodeRun
from nodes import contract
from nodes import errors as node_errors
from nodes.contract import NodeType, RunContext

if TYPE_CHECKING:
    from graph_runtime.executor import _TaskRun


def backoff_delay(base: float, attempt: int) -> float:
    """``base·2^(attempt−1)`` scaled by a random factor in [0.5, 1.5) so retries spread out."""
    return base * 2 ** (attempt - 1) * (0.5 + random.random())


async def run_attempts(
    state: _TaskRun, node_type: type[NodeType], node_id: str, params: dict[str, Any], run: NodeRun
) -> tuple[dict[str, Any], float]:
    """Run the node until it succeeds, fails for good, or runs out of retries.

    Returns:
        The output as JSON-ready data, and the cost of the successful try.
    Raises:
        nodes.errors.GraphRuntimeError: the last failure, with a stable code.
    """
    policy, rest = contract.split_policy(params, node_type.policy)
    model = contract.validate_params(node_type, rest)
    instance = state.ex.registry.instance(node_type.type)
    timeout = policy.timeout_s
    floor = instance.min_timeout(model)
    if timeout is not None and floor is not None:
        timeout = max(timeout, floor)
    tries = policy.retries + 1
    for attempt in range(1, tries + 1):
        state.node_started(run)
        await state.ex.store.save_node_runs(state.task.id, [run])
        ctx = RunContext(
            task_id=state.task.id, node_id=node_id, flow_id=state.task.flow_id, attempt=attempt,
            timeout_s=timeout, http=state.ex.http, allow_private=state.ex.allow_private,
        )
        try:
            return await _one_try(instance, node_type, model, ctx, timeout)
        except node_errors.GraphRuntimeError as exc:
            if not exc.retryable or attempt == tries:
                raise
        await asyncio.sleep(backoff_delay(policy.retry_backoff_s, attempt))
    raise AssertionError("unreachable: the loop returns or raises")


async def _one_try(
    instance: NodeType, node_type: type[NodeType], params: Any, ctx: RunContext, timeout: float | None
) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            output = await instance.run(params, ctx)
    except TimeoutError:
        if ctx.stop is not None:
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
    except pydantic.ValidationError as exc:
        raise node_errors.NodeFailed(f"the node returned an invalid output: {exc.errors()[0]['msg']}") from None
    return output.model_dump(mode="json"), node_type.cost.price(elapsed, ctx.usage)
