"""The ``template`` node type: renders a Jinja2 template in a sandbox."""

from __future__ import annotations

import functools
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field

from nodes import errors
from nodes.contract import NodeType, RunContext

MAX_POWER_BITS = 4096
MAX_REPEAT_ITEMS = 1_000_000


class _BoundedSandbox(SandboxedEnvironment):
    """The sandbox, plus limits on ``**`` and ``*``.

    Any execute-scope key can override a template through ``node_settings``; ``9**(9**7)`` or
    ``'a' * 10**10`` would hold the GIL or exhaust memory for the whole server. A timeout cannot
    stop a thread, so such operations are refused before they start.
    """

    intercepted_binops = frozenset({"**", "*"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and _too_big_power(left, right):
            raise SecurityError(f"{left!r} ** {right!r} is too large to compute in a template")
        if operator == "*" and _too_big_repeat(left, right):
            raise SecurityError("repeating a string or list that many times is not allowed in a template")
        return super().call_binop(context, operator, left, right)


def _too_big_power(left: Any, right: Any) -> bool:
    if not isinstance(left, int) or not isinstance(right, int) or right <= 1 or abs(left) <= 1:
        return False
    return abs(left).bit_length() * right > MAX_POWER_BITS


def _too_big_repeat(left: Any, right: Any) -> bool:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
            return len(seq) * times > MAX_REPEAT_ITEMS
    return False


# Built once: the environment holds configuration only, and compiled templates are reused
# across tasks through the cache below.
_ENVIRONMENT = _BoundedSandbox(undefined=jinja2.StrictUndefined, autoescape=False)


@functools.lru_cache(maxsize=256)
def _compile(source: str) -> jinja2.Template:
    return _ENVIRONMENT.from_string(source)


def render(source: str, variables: dict[str, Any]) -> str:
    """Render ``source`` with ``variables`` in the sandbox.

    Raises:
        errors.InvalidParams: a syntax error, an undefined variable or an unsafe access.
        errors.NodeFailed: rendering failed otherwise (e.g. a division by zero).
    """
    try:
        return _compile(source).render(variables)
    except jinja2.TemplateSyntaxError as exc:
        raise errors.InvalidParams(
            f"template: syntax error on line {exc.lineno}: {exc.message}", field="template"
        ) from exc
    except jinja2.UndefinedError as exc:
        raise errors.InvalidParams(f"template: {exc.message}", field="template") from exc
    except jinja2.TemplateError as exc:
        # SecurityError (the sandbox refused an attribute or call) and other template errors.
        raise errors.InvalidParams(f"template: {exc}", field="template") from exc
    except Exception as exc:
        # Rendering is deterministic: whatever failed will fail again, so this is a node
        # failure, not a transient one the executor should retry.
        raise errors.NodeFailed(f"template: {type(exc).__name__}: {exc}") from exc


class Template(NodeType):
    """Renders a Jinja2 template; every other parameter is a template variable."""

    type = "template"
    description = (
        "Renders a Jinja2 template (sandboxed, no autoescaping) and outputs {text}. Every "
        "other parameter or input is a variable; an undefined variable is an error."
    )

    class Params(BaseModel):
        model_config = ConfigDict(extra="allow")

        template: str = Field(description="Jinja2 source, e.g. 'Hello {{ name }}'.")

    class Output(BaseModel):
        text: str

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Render off the event loop, so a large template does not stall other nodes."""
        text = await ctx.to_thread(render, params.template, dict(params.model_extra or {}))
        return self.Output(text=text)
