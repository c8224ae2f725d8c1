"""The response shapes of SPEC §3 as pydantic models: the schemas of the OpenAPI document.

``views.py`` builds the JSON; these models describe it, field for field. They forbid unknown
fields, so a field added to a view but not here fails the test that validates real answers
(``tests/http_api/test_openapi.py``) instead of going undocumented. The error body is the one
open shape: ``error`` carries structured detail (``problems``, ``missing``) beside its message.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from graph_runtime.flow import Flow
from nodes.contract import CostModel, RunPolicy

TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$"
Timestamp = Annotated[str, Field(pattern=TIMESTAMP_PATTERN, json_schema_extra={"format": "date-time"},
                                 description="ISO 8601 in UTC with microseconds and a Z.")]
TaskStatusNumber = Literal[1, 2, 3, 4, 5]
TaskStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
NodeStatusName = Literal["pending", "running", "succeeded", "failed", "skipped", "cancelled"]
Scope = Literal["admin", "execute"]
Mode = Literal["prod", "dev"]


class Wire(BaseModel):
    """A response shape: every field listed, nothing else."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RunError(Wire):
    """Why a task or a node failed (or was cancelled)."""

    node_id: str | None
    code: str = Field(description="node_failed, guard_failed, invalid_params, node_timeout, task_timeout, "
                                  "connection_error, http_status, ssrf_blocked, cancelled, crashed, internal, …")
    message: str


class TaskTrigger(Wire):
    """Which of its flow's triggers started a task (SPEC §11)."""

    type: Literal["webhook", "schedule", "flow"]
    index: int = Field(ge=0, description="The trigger's position in the flow's `triggers`.")
    slot: Timestamp | None = Field(default=None, description="A schedule trigger's slot this task is for.")
    task_id: int | None = Field(default=None, description="A flow trigger's source: the task whose end started "
                                                          "this one (its JSON is the start node's data).")


class TaskData(Wire):
    """Scade's ``data``: the request with defaults filled in; ``node_settings`` exactly as sent."""

    node_id: None
    start_node_id: str
    end_node_id: str
    result_node_id: str
    init_context: dict[str, Any]
    node_settings: dict[str, Any]
    timeout_s: float | None = Field(default=None, description="Present only when the request gave one.")
    mode: Literal["dev"] | None = Field(default=None, description="Present only for a task run in `dev` mode.")
    from_task_id: int | None = Field(default=None, description="Present only for a rerun from a node.")
    from_task_inputs: dict[str, dict[str, Any]] | None = Field(
        default=None, description="With `from_task_id`: {node: {input: value}} taken from that task.")
    callback_url: str | None = Field(default=None, description="Present only when the request gave one: where the "
                                                               "task is POSTed, signed, when it ends.")
    trigger: TaskTrigger | None = Field(default=None, description="Present only for a task a trigger started.")
    traceparent: str | None = Field(default=None, description="Present only when the request sent a valid W3C "
                                                              "`traceparent`: the trace the task's spans continue.")


class MapItems(Wire):
    """A map node's items by status; `include=items` lists each item's run (`map1[0]`…)."""

    total: int = Field(ge=0)
    succeeded: int = Field(ge=0)
    failed: int = Field(ge=0)
    running: int = Field(ge=0)


class NodeRunView(Wire):
    """One node inside a task."""

    status: NodeStatusName
    started: Timestamp | None
    finished: Timestamp | None
    execution_time: float | None
    cost: float | None
    attempts: int = Field(ge=0)
    error: RunError | None
    cached: bool = Field(description="Served from the output cache: it did not run, its cost is 0.")
    saved_cost: float | None = Field(description="When cached: what the run that filled the cache cost; on a "
                                                 "map, what its cached items saved.")
    items: MapItems | None = Field(default=None, description="Only on a map node: its items by status.")
    waiting_for_pool: str | None = Field(
        default=None, description="Only on a pending node that runs on a worker of this pool (`gpu`…) "
                                  "while none has taken the task yet: it waits, it does not fail.")
    output: dict[str, Any] | None = Field(default=None, description="Only with `include=outputs`.")


class TaskView(Wire):
    """``GET /api/v1/task/{task_id}``: Scade's fields with their names and meanings, then ours."""

    id: int
    data: TaskData
    status: TaskStatusNumber = Field(description="1 queued, 2 running, 3 succeeded (the only success), "
                                                 "4 failed, 5 cancelled.")
    status_name: TaskStatusName
    created: Timestamp
    finished: Timestamp | None
    result: dict[str, Any] | None = Field(description="The result node's output; null unless succeeded.")
    execution_time: float | None
    execution_cost: float | None
    parent_id: int | None = Field(description="The task whose subflow or map node started this one, else null.")
    ref_id: str
    task_type: Literal[4]
    is_hide: bool
    public_access_token: None
    file_result_link: str | None = Field(description="The signed url of the first file value in `result` "
                                                     "(depth-first, key order), else null.")
    flow_id: str
    revision: int = Field(ge=1)
    started: Timestamp | None
    error: RunError | None
    mode: Mode = Field(description="Which value of each secret its nodes get (`dev` falls back to `prod`).")
    trigger: TaskTrigger | None = Field(description="The flow's trigger that started it (webhook, schedule, flow "
                                                    "end); null for an execute.")
    saved_cost: float = Field(description="The sum of its cached nodes' `saved_cost`: what the output "
                                          "cache saved this task.")
    nodes: dict[str, NodeRunView] = Field(description="Empty while queued; then every run-set node (and with "
                                                      "`include=items`, every map item's run, `map1[0]`…).")


class NodeCounts(Wire):
    """How many of a task's nodes are in each status (every status, zeros included)."""

    pending: int = Field(ge=0)
    running: int = Field(ge=0)
    succeeded: int = Field(ge=0)
    failed: int = Field(ge=0)
    skipped: int = Field(ge=0)
    cancelled: int = Field(ge=0)


class TaskSummaryView(Wire):
    """A task in ``GET /api/v1/tasks``: the task's fields but ``data``, ``result`` and ``nodes``, each
    present only when ``include`` names it, and ``node_counts``."""

    id: int
    data: TaskData | None = Field(default=None, description="Only with `include=data`.")
    status: TaskStatusNumber
    status_name: TaskStatusName
    created: Timestamp
    finished: Timestamp | None
    result: dict[str, Any] | None = Field(default=None, description="Only with `include=result`.")
    execution_time: float | None
    execution_cost: float | None
    parent_id: int | None
    ref_id: str
    task_type: Literal[4]
    is_hide: bool
    public_access_token: None
    file_result_link: str | None = Field(description="As in the task; null unless `include=result`.")
    flow_id: str
    revision: int = Field(ge=1)
    started: Timestamp | None
    error: RunError | None
    mode: Mode
    saved_cost: float = Field(description="As in the task: what the output cache saved it.")
    nodes: dict[str, NodeRunView] | None = Field(default=None, description="Only with `include=nodes`.")
    node_counts: NodeCounts


class TaskList(Wire):
    """``GET /api/v1/tasks``: newest first; ``next_before`` pages on, null on the last page."""

    tasks: list[TaskSummaryView]
    next_before: int | None


class RunDefaults(Wire):
    """The start/end/result node a request naming none would get (null: the request must name one)."""

    start_node_id: str | None
    end_node_id: str | None
    result_node_id: str | None


class FlowSummary(Wire):
    id: str
    name: str | None
    description: str | None
    revision: int = Field(ge=1)
    defaults: RunDefaults


class FlowList(Wire):
    """``GET /api/v1/flows``."""

    flows: list[FlowSummary]


class FlowView(Wire):
    """``GET``/``PUT /api/v1/flows/{flow_id}``: one revision of a flow and its definition."""

    id: str
    name: str | None
    description: str | None
    revision: int = Field(ge=1)
    updated: Timestamp
    defaults: RunDefaults
    inputs: dict[str, dict[str, Any]] | None = Field(
        description="The flow's typed inputs: a JSON Schema for each typed start node's `data`, by node id "
                    "(null when the flow declares none).")
    namespace: str = Field(description="Kestra's namespace of the flow (`default` unless it names one).")
    definition: Flow


class KeyView(Wire):
    """A server key, without its secret."""

    id: str
    name: str
    scope: Scope
    created: Timestamp
    last_used: Timestamp | None
    revoked: bool


class KeyCreated(KeyView):
    """``POST /api/v1/keys``: the key and its token, shown this once."""

    key: str = Field(description="base64 of '<key id>:<secret>': send it as 'Authorization: Basic <key>'.")


class KeyList(Wire):
    """``GET /api/v1/keys``."""

    keys: list[KeyView]


class SecretView(Wire):
    """A secret as listed: the modes that have a value of their own, never a value."""

    name: str = Field(pattern=r"^[A-Za-z0-9_]{1,64}$")
    modes: list[Mode] = Field(description="`prod` first; a mode without its own value uses `prod`'s.")
    created: Timestamp
    updated: Timestamp


class SecretList(Wire):
    """``GET /api/v1/secrets``."""

    secrets: list[SecretView]


class NodeTypeView(Wire):
    """A registered node type: JSON schemas of its parameters and outputs, cost model, run policy."""

    type: str
    description: str
    params_schema: dict[str, Any]
    output_schema: dict[str, Any]
    cost: CostModel
    policy: RunPolicy
    extra: str | None = Field(description="The extra the type needs: `pip install 'graph-runtime[<extra>]'`.")
    available: bool = Field(description="False when that extra is not installed: a flow using the type is refused.")
    pool: str | None = Field(description="The worker pool its nodes run on (`--pool`), unless a node names "
                                         "its own; null: any worker.")


class NodeTypeList(Wire):
    """``GET /api/v1/node-types``."""

    node_types: list[NodeTypeView]


class Health(Wire):
    """``GET /healthz``: the database answered."""

    status: Literal["ok"]
    running_tasks: int = Field(ge=0)


class FileValue(Wire):
    """A file value as the API answers it (SPEC §7): the bytes live in the file store, ``url`` downloads them."""

    model_config = ConfigDict(populate_by_name=True)

    file: str = Field(alias="$file", description="The file's id.")
    name: str
    content_type: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern="^[0-9a-f]{64}$")
    url: str = Field(description="A signed download link, usable without a key until its `expires`.")


class FileUploaded(Wire):
    """``POST /api/v1/files``: the stored file."""

    file: FileValue


class MissingInput(Wire):
    node_id: str
    input: str
    from_: str = Field(alias="from")


class CostRangeView(Wire):
    """Credits a run may cost (``graph_runtime.plan_cost.estimate`` says how each end is counted)."""

    min: float = Field(ge=0)
    max: float | None = Field(ge=0, description="Null when nothing bounds it before the run: a `map` over items "
                                                "an upstream node makes, or child flows nested too deep to follow.")


class PlanView(Wire):
    """The dry run (SPEC §9 "Plan"): what execute would run, in parallel levels, at what cost."""

    run_set: list[str] = Field(description="The nodes that would run, in a topological order.")
    levels: list[list[str]] = Field(description="Topological generations: a level's nodes may run together.")
    missing_inputs: list[MissingInput] = Field(description="Always empty: a missing input is a 422, as for execute.")
    cached: list[str] = Field(description="Run-set nodes the output cache would answer now (only nodes none of whose "
                                          "inputs is made in this run); they count 0 in `estimated_cost`.")
    estimated_cost: CostRangeView


class CallbackAttempt(Wire):
    """One POST of a callback: its answer's status, or why there was none."""

    attempt: int = Field(ge=1)
    at: Timestamp
    duration_s: float = Field(ge=0)
    status_code: int | None = Field(description="The receiver's HTTP status; null when it did not answer.")
    error: str | None = Field(description="Why the attempt failed (`answered 500`, `timeout: …`, `ssrf_blocked: …`, "
                                          "`connection_error: …`); null when delivered.")


class CallbackDelivery(Wire):
    """A task's callback to one URL (its `callback_url`, or one of its flow's `on_end`)."""

    url: str
    webhook_id: str = Field(description="The `webhook-id` header of every attempt (the same across retries).")
    state: Literal["waiting", "pending", "delivered", "given_up"] = Field(
        description="waiting: the task has not ended; pending: due at `next_attempt`; delivered; given_up: 24 h of "
                    "retries failed.")
    delivered: bool
    given_up: bool
    next_attempt: Timestamp | None
    retry_until: Timestamp | None = Field(description="When retries stop: 24 h after the task ended.")
    attempts: list[CallbackAttempt]


class CallbackList(Wire):
    """``GET /api/v1/task/{task_id}/callbacks``."""

    callbacks: list[CallbackDelivery]


class WebhookSecret(Wire):
    """``POST /api/v1/webhook-secret``: the Standard Webhooks signing secret, shown this once."""

    secret: str = Field(pattern=r"^whsec_[A-Za-z0-9+/=]+$")


class ErrorDetail(BaseModel):
    """``code`` is stable snake_case; ``field`` a dotted path into the request, or null."""

    model_config = ConfigDict(extra="allow", frozen=True)

    code: str
    message: str
    field: str | None
    problems: list[str] | None = Field(default=None, description="flow_invalid: every problem found.")
    missing: list[MissingInput] | None = Field(default=None, description="missing_inputs: every input to give.")


class ErrorBody(Wire):
    """Every 4xx/5xx answer."""

    error: ErrorDetail

