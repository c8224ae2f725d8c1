"""Control-flow node types: ``switch`` (SPEC §9).

The switch only names a case; what is taken and what is skipped is the executor's business,
from the edges' ``when``.
"""

from __future__ import annotations

from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from nodes import errors
from nodes.contract import NodeType, RunContext

_SHOWN = 200  # characters of an unmatched value quoted in the failure message


class Switch(NodeType):
    """Names the first case whose value equals ``value``."""

    type = "switch"
    description = (
        "Outputs {case}: the name of the first entry of cases whose value equals value (in the "
        "order written; true is not 1). With no match it outputs default when given, and fails "
        "otherwise. Edges from a switch may carry when: <case>; nodes reached only through edges "
        "of cases not taken are skipped."
    )

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

        value: Any = Field(description="The value to match; any JSON value.")
        cases: dict[str, Any] = Field(min_length=1, description="{case name: value that selects it}.")
        default: str | None = Field(None, description="The case name to output when nothing matches.")

        @pydantic.model_validator(mode="after")
        def _default_is_a_case(self) -> Switch.Params:
            if self.default is not None and self.default not in self.cases:
                raise ValueError(f"default {self.default!r} is not one of the cases ({', '.join(self.cases)})")
            return self

    class Output(BaseModel):
        case: str

    async def run(self, params: Params, ctx: RunContext) -> Output:
        """Match ``value`` against each case in order.

        Raises:
            errors.NodeFailed: nothing matched and there is no default; the value is quoted.
        """
        for name, wanted in params.cases.items():
            if same_value(params.value, wanted):
                return self.Output(case=name)
        if params.default is not None:
            return self.Output(case=params.default)
        shown = repr(params.value)
        if len(shown) > _SHOWN:
            shown = shown[:_SHOWN] + "…"
        raise errors.NodeFailed(f"switch: no case matches the value {shown} and there is no default "
                                f"(cases: {', '.join(params.cases)})")


def same_value(a: Any, b: Any) -> bool:
    """JSON equality: ``1 == 1.0``, but a boolean equals only a boolean (Python's ``True == 1`` is not JSON's)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return False
    return bool(a == b)
