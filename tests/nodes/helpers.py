"""Helpers shared by the node tests."""

from __future__ import annotations

from typing import Any

from nodes.contract import RunContext


def make_ctx(**overrides: Any) -> RunContext:
    """A RunContext as the executor would build it for node ``n`` of task 1."""
    return RunContext(task_id=1, node_id="n", flow_id="f", **overrides)
