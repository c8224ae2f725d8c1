"""Request bodies: pydantic models that forbid unknown fields, so a typo is a 422 naming it."""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from http_api import errors
from nodes.builtin.http_client import HttpUrl

ID = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")


class ExecuteBody(BaseModel):
    """``POST /api/v1/flow/{flow_id}/execute``: Scade's fields plus ``timeout_s``."""

    model_config = ConfigDict(extra="forbid")

    start_node_id: str | None = ID
    end_node_id: str | None = ID
    result_node_id: str | None = ID
    node_settings: dict[str, Any] = {}
    init_context: dict[str, Any] = {}
    node_id: None = Field(default=None, description="Scade echoes it; must be null.")
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    mode: Literal["prod", "dev"] | None = Field(
        default=None, description="Which value of each secret the nodes get (default prod; "
                                  "also ?executionEnvironmentMode=DEV|PROD).")
    from_task_id: int | None = Field(
        default=None, ge=1, le=2**63 - 1, strict=True,
        description="Rerun from a node: inputs fed from outside the run set come from this earlier task "
                    "of the same flow (node_settings still win).")
    callback_url: HttpUrl | None = Field(
        default=None, max_length=2048,
        description="When the task ends (any status), POST the task JSON here, signed per Standard Webhooks; "
                    "retried for 24 h (SPEC §11 callbacks; GET /api/v1/task/{id}/callbacks lists the attempts).")


class KeyCreateBody(BaseModel):
    """``POST /api/v1/keys``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    scope: Literal["admin", "execute"] = "execute"


class SecretPutBody(BaseModel):
    """``PUT /api/v1/secrets/{name}``: the value, stored encrypted and never shown again."""

    model_config = ConfigDict(extra="forbid")

    value: str = Field(min_length=1, max_length=64 * 1024)


def parse_body(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """Validate ``data``; the first problem becomes a 422 with a dotted ``field``."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = f"unknown field {field!r}; allowed: {', '.join(model.model_fields)}"
        elif first["type"] == "none_required":
            message = f"{field} must be null"
        raise errors.RequestInvalid(f"{field}: {message}" if field else message, field=field) from None
