"""The OpenAPI 3.1 document of SPEC §3, built from the models that validate requests and describe answers.

Request bodies come from ``schemas.py`` (``ExecuteBody``, ``KeyCreateBody``) and the flow model
(``graph_runtime.flow.Flow``), answers from ``wire.py``; pydantic's ``$defs`` are hoisted into
``components/schemas``. The operations are a table here, one entry per route of ``routes_*.py``;
``tests/http_api/test_openapi.py`` checks the two agree and runs schemathesis against a live server.
"""

from __future__ import annotations

import functools
import importlib.metadata
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from graph_runtime.flow import Flow
from http_api import routes_tasks, schemas, wire, yaml_body

OPENAPI_PATH = "/api/v1/openapi.json"
SCHEMA_REF = "#/components/schemas/{model}"
JSON = "application/json"

REQUEST_MODELS: tuple[type[BaseModel], ...] = (schemas.ExecuteBody, schemas.KeyCreateBody, schemas.SecretPutBody, Flow)
RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    wire.TaskView, wire.TaskList, wire.FlowList, wire.FlowView, wire.KeyCreated, wire.KeyList,
    wire.NodeTypeList, wire.Health, wire.ErrorBody, wire.FileUploaded, wire.SecretList, wire.PlanView,
    wire.CallbackList, wire.WebhookSecret,
)

# Path ids: what the server can route and store. Flow ids are the flow model's ids, except "." and
# "..", which clients collapse as path segments (the flow model refuses them too).
FLOW_ID = {"type": "string", "pattern": r"^(?:[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}|\.[A-Za-z0-9_-][A-Za-z0-9_.-]{0,62}"
                                        r"|\.\.[A-Za-z0-9_.-]{1,62})$"}
# Ids are numbers; the server reads up to 18 digits and answers 404 for anything else.
TASK_ID = {"type": "integer", "minimum": 1, "maximum": 10**18 - 1}
REVISION = {"type": "integer", "minimum": 1, "maximum": 2**31}

ERRORS: dict[int, str] = {
    400: "The body is not JSON (or YAML, where YAML is offered), or not an object.",
    401: "No valid server key: missing, unknown or revoked.",
    403: "The key's scope does not allow this; it needs an admin key.",
    404: "Unknown flow, revision, task, key or secret (or no such route: the id cannot be routed).",
    408: "The body did not arrive within GRAPH_RUNTIME_BODY_TIMEOUT_S; the connection is closed.",
    409: "Conflict: an Idempotency-Key reused with another request, or a task that already ended.",
    413: "The body is larger than the server accepts (GRAPH_RUNTIME_MAX_BODY_BYTES).",
    415: "The body is not sent as JSON, or its Content-Encoding is not gzip or deflate.",
    416: "The Range starts past the file's end; `Content-Range: bytes */<size>` gives its size.",
    422: "Valid JSON that does not make sense; `field` is a dotted path to the problem.",
    503: "The database is unavailable or the server is shutting down; retry shortly.",
    507: "The file store's disk is full; nothing was kept.",
}
ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"required": True, "schema": {"type": "string"},
                               "description": 'Basic realm="graph-runtime"'}},
    503: {"Retry-After": {"required": True, "schema": {"type": "string"}, "description": "Seconds to wait."}},
}
LOCATION = {"Location": {"required": True, "schema": {"type": "string"}, "description": "/api/v1/task/{id}"}}
BODY_ERRORS = (400, 408, 413, 415, 422)

SECURITY_SCHEMES = {
    "basicAuth": {"type": "http", "scheme": "basic", "description":
                  "A server key: the token after `Basic` is base64 of `<key id>:<secret>`, exactly as shown when "
                  "the key was created, so `curl -u <key id>:<secret>` works too."},
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "The same token after `Bearer`."},
    "executionKeyHeader": {"type": "apiKey", "in": "header", "name": "execution-key",
                           "description": "The same token in Ziggy's header."},
    "executionKeyQuery": {"type": "apiKey", "in": "query", "name": "execution-key",
                          "description": "The same token in the query (discouraged: URLs land in logs)."},
}
DOCUMENT_SCHEMA = {"type": "object", "required": ["openapi", "info", "paths", "components"]}
ANY_KEY: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]


@dataclass(frozen=True)
class Answer:
    """A success status: its description, its ``wire`` model or a plain schema (None: no body), headers, links."""

    description: str
    model: type[BaseModel] | dict[str, Any] | None
    headers: dict[str, Any] = field(default_factory=dict)
    links: dict[str, Any] = field(default_factory=dict)
    media: str = JSON  # the answer's media type (a download: "*/*")


@dataclass(frozen=True)
class Operation:
    """One route of ``routes_*.py`` as the document describes it."""

    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    answers: dict[int, Answer]
    errors: tuple[int, ...]
    scope: str = "execute"  # "public", "execute" or "admin"
    parameters: tuple[dict[str, Any], ...] = ()
    body: type[BaseModel] | str | None = None  # a model, or a component derived from one (FLOW_PUT)
    body_required: bool = True
    body_example: dict[str, Any] | None = None
    body_content: dict[str, Any] | None = None  # a request body that is not JSON (file uploads)
    body_yaml: bool = False  # the body may also be YAML (yaml_body.YAML_TYPES), read as a flow file is


def _param(name: str, where: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    # The server reads an empty query value (`?status=`, what a form's empty field sends) as no value.
    empty = {"allowEmptyValue": True} if where == "query" else {}
    return {"name": name, "in": where, "required": where == "path", "description": description,
            "schema": schema, **empty, **extra}


def _link(operation_id: str, parameter: str, description: str) -> dict[str, Any]:
    return {"operationId": operation_id, "parameters": {parameter: "$response.body#/id"}, "description": description}


FLOW_PATH = _param("flow_id", "path", FLOW_ID, "The flow's id.", example="caption-image")
TASK_PATH = _param("task_id", "path", TASK_ID, "The task's id.", example=1)
REVISION_QUERY = _param("revision", "query", REVISION, "Pin a revision of the flow (default: the latest).")
EXECUTE_PARAMS = (
    FLOW_PATH,
    REVISION_QUERY,
    _param("wait", "query", {"type": "integer", "minimum": 0, "maximum": 60, "default": 0},
           "Hold the answer until the task ends or this many seconds pass."),
    _param("Idempotency-Key", "header", {"type": "string", "maxLength": 255},
           "The same key on the same flow returns the task it created before (200) instead of starting another; "
           "the same key with another body or revision is a 409. Empty: no key."),
    _param("executionId", "query", {"type": "string", "minLength": 1, "maxLength": 255},
           "Ziggy's name for the Idempotency-Key header."),
    _param("executionEnvironmentMode", "query", {"type": "string", "pattern": "^(?i:dev|prod)$"},
           "Ziggy's name for the body's `mode` (DEV or PROD, any case); a body `mode` that disagrees is a 422."),
)
EXAMPLE_FLOW = {"id": "hello", "name": "Hello", "nodes": [{"id": "in", "type": "start", "settings": {"data": {"x": 1}}},
                                                     {"id": "out", "type": "end"}],
                "edges": [{"from": "in", "to": "out", "input": "x", "output": "x"}]}
PUT_FLOW_PATH = _param("flow_id", "path", FLOW_ID, "The flow's id; the body's `id`, if given, must be the same.",
                       example=EXAMPLE_FLOW["id"])
EXAMPLE_EXECUTE = {"start_node_id": "SYnn-start", "end_node_id": "y5iI-end", "result_node_id": "y5iI-end",
                   "node_settings": {"SYnn-start": {"data": {"image_url": "https://example.com/dog.jpg", "style": "long"}}}}
FLOW_LINKS = {"GetFlow": _link("getFlow", "flow_id", "Read the flow back."),
              "DeleteFlow": _link("deleteFlow", "flow_id", "Delete the flow.")}
TASK_LINKS = {"GetTask": _link("getTask", "task_id", "Poll the task."),
              "CancelTask": _link("cancelTask", "task_id", "Cancel the task.")}
EXECUTE_ERRORS = (*BODY_ERRORS, 401, 404, 409, 503)
FLOW_PUT = "FlowPut"  # the body of PUT /flows/{flow_id}: a Flow whose `id` the path gives (see _flow_put)
INCLUDE = {"type": "string", "pattern": r"^((data|result|nodes)(,(data|result|nodes))*)?$"}
MODE = {"enum": ["prod", "dev"]}
SECRET_NAME = _param("name", "path", {"type": "string", "pattern": "^[A-Za-z0-9_]{1,64}$"}, "The secret's name.",
                     example="OPENAI_API_KEY")
SECRET_MODE = _param("mode", "query", MODE, "The mode whose value this is (default prod; dev falls back to prod).")
FILE_ID = _param("file_id", "path", {"type": "string", "minLength": 1}, "The file's id (`$file`).")
FILE_NAME = {"type": "string", "maxLength": 255, "pattern": r"^[^/\\\x00-\x1f]*$"}
FILE_BYTES = {"type": "string", "format": "binary"}
UPLOAD_BODY = {"multipart/form-data": {"schema": {"type": "object", "required": ["file"], "additionalProperties": False,
                                                  "properties": {"file": FILE_BYTES}}},
               # Any other Content-Type is accepted as well (the file keeps it; see the operation's text). It
               # is not listed as */*: a client generating bodies would then pick types such as YAML and
               # expect the download, served with that type, to parse as one.
               "application/octet-stream": {"schema": FILE_BYTES}}
FILE_HEADERS = {name: {"required": True, "schema": {"type": "string"}, "description": text} for name, text in (
    ("ETag", "The file's SHA-256 in quotes."), ("Accept-Ranges", "bytes"),
    ("Content-Disposition", "attachment, with the file's name (RFC 6266 `filename*` beyond ASCII)."))}
FILE_LINKS = {name: {"operationId": op, "parameters": {"file_id": "$response.body#/file/$file"},
                      "description": text} for name, op, text in (
    ("DownloadFile", "downloadFile", "Download the file."), ("DeleteFile", "deleteFile", "Delete the file."))}
DOWNLOAD_PARAMS = (
    FILE_ID,
    _param("expires", "query", {"type": "string", "pattern": "^[0-9]{1,12}$"},
           "A signed link's expiry (unix seconds); with `signature`, no key is needed until then."),
    _param("signature", "query", {"type": "string"}, "A signed link's hex HMAC-SHA256 (see the answers' `url`)."),
    _param("Range", "header", {"type": "string"}, "One byte range, e.g. `bytes=0-1023` (206); several: the whole file."),
    _param("If-None-Match", "header", {"type": "string"}, "The ETag you have: 304 when it is still this file."),
)
STATUS_FILTER = {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 5},
                           {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]}]}


EXECUTE_FORM = {"multipart/form-data": {"schema": {
    "type": "object", "additionalProperties": False,
    "description": "Execute with files in one request: the JSON body in part `body` (or `json`), and each file in "
                   "a part named by the setting it fills, e.g. `node_settings.SYnn-start.data.image`.",
    "properties": {name: {"contentMediaType": "application/json", "description": "The execute body as JSON."}
                   for name in ("body", "json")},
    "patternProperties": {r"^node_settings\.[^.]+\.[^.]+(\.[^.]+)*$": FILE_BYTES}}}}


def _execute(path: str, operation_id: str, created: int, summary: str) -> Operation:
    replay = "The task this Idempotency-Key created before."
    answers = {created: Answer("The task, queued (or as it is after `wait`).", wire.TaskView, LOCATION, TASK_LINKS)}
    answers.setdefault(200, Answer(replay, wire.TaskView, LOCATION, TASK_LINKS))
    return Operation("post", path, operation_id, summary, "tasks", answers, EXECUTE_ERRORS,
                     parameters=EXECUTE_PARAMS, body=schemas.ExecuteBody, body_required=False,
                     body_example=EXAMPLE_EXECUTE, body_content=EXECUTE_FORM)


SSE_EVENT = {  # one event of the stream, as server-sent-event readers (and schemathesis) see it
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"enum": ["task", "node", "progress", "log", "token"]},
        "data": {"type": "string", "description": "JSON: the task, the node run (with `node_id`), or what the node said."},
    },
    "required": ["id", "event", "data"],
}

OPERATIONS: tuple[Operation, ...] = (
    _execute("/api/v1/flow/{flow_id}/execute", "executeFlow", 201,
             "Queue a task for the selected subgraph (201 and Location)."),
    _execute("/api/v1/scade/flow/{flow_id}/execute", "executeFlowScade", 200,
             "Scade's path: the same, answering 200 because Scade's clients check for exactly 200."),
    Operation("post", "/api/v1/flow/{flow_id}/plan", "planFlow", "The dry run: what execute would run, in which "
              "parallel levels, at what cost; the same 4xx as execute. Writes nothing; JSON body only.", "tasks",
              {200: Answer("The run set, its levels and the estimated cost range.", wire.PlanView)},
              (*BODY_ERRORS, 401, 404, 503), parameters=(FLOW_PATH, REVISION_QUERY, EXECUTE_PARAMS[-1]),
              body=schemas.ExecuteBody, body_required=False, body_example=EXAMPLE_EXECUTE),
    Operation("get", "/api/v1/task/{task_id}", "getTask", "The task: poll until `status` is 3 (or 4, 5).", "tasks",
              {200: Answer("The task.", wire.TaskView)}, (401, 404, 422, 503),
              parameters=(TASK_PATH, _param("include", "query",
                                            {"type": "string", "pattern": "^(outputs|items)(,(outputs|items))?$"},
                                            "Also each node's `output` (`outputs`) and each map item's run "
                                            "(`items`), comma-separated."))),
    Operation("get", "/api/v1/task/{task_id}/events", "taskEvents",
              "The task's events as server-sent events: `task` (each status change, data = the task), `node` (each "
              "node status change), `progress`, `log` and `token` (what a running node says). Each has an `id:`; "
              "send the last one received as `Last-Event-ID` to resume with no gap. History first, then live; "
              "the stream closes after the final `task` event.", "tasks",
              {200: Answer("`text/event-stream`: `id:`, `event:` and one `data:` line of JSON per event.",
                           SSE_EVENT, media="text/event-stream")}, (401, 404, 422, 503),
              parameters=(TASK_PATH, _param("Last-Event-ID", "header", {"type": "string", "pattern": "^[0-9]{0,18}$"},
                                            "Resume after this event (the last id received; empty or 0: the whole history)."))),
    Operation("post", "/api/v1/task/{task_id}/cancel", "cancelTask", "Cancel a queued or running task.", "tasks",
              {202: Answer("The task, cancelled (or still stopping).", wire.TaskView)}, (401, 404, 409, 503),
              parameters=(TASK_PATH,)),
    Operation("get", "/api/v1/tasks", "listTasks", "Task history, newest first, as summaries.", "tasks",
              {200: Answer("A page of task summaries; `next_before` gives the next.", wire.TaskList)},
              (401, 422, 503),
              parameters=(
                  _param("flow_id", "query", {"type": "string"}, "Only this flow's tasks."),
                  _param("status", "query", STATUS_FILTER, "Only tasks in this status (number or name)."),
                  _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": routes_tasks.HISTORY_MAX_LIMIT,
                                             "default": routes_tasks.HISTORY_DEFAULT_LIMIT},
                         "Page size (a page with `include` may hold fewer: see `include`)."),
                  _param("include", "query", INCLUDE, "What summaries also carry, comma-separated: `data`, "
                         f"`result`, `nodes`. Then a page holds at most {routes_tasks.HISTORY_PAGE_BYTES // 2**20} MiB "
                         "of them (at least one task); `next_before` continues."),
                  _param("before", "query", {"type": "integer", "minimum": 1, "maximum": 10**18 - 1},
                         "Only tasks with a smaller id (the previous page's `next_before`)."),
                  _param("mode", "query", MODE, "Only tasks run in this mode."),
                  _param("parent_id", "query", {"type": "integer", "minimum": 1, "maximum": 2**62},
                         "Only the child tasks of this task (its subflows, its maps over a flow)."),
              )),
    Operation("get", "/api/v1/flows", "listFlows", "Every flow, with its latest revision and run defaults.", "flows",
              {200: Answer("The flows.", wire.FlowList)}, (401, 503)),
    Operation("get", "/api/v1/flows/{flow_id}", "getFlow",
              "A flow's definition, revision, run defaults and typed inputs (JSON Schemas by start node).",
              "flows", {200: Answer("The flow.", wire.FlowView)}, (401, 404, 422, 503),
              parameters=(FLOW_PATH, REVISION_QUERY)),
    Operation("put", "/api/v1/flows/{flow_id}", "putFlow", "Create a flow or add a revision (validated).", "flows",
              {201: Answer("A revision was added.", wire.FlowView, links=FLOW_LINKS),
               200: Answer("The definition was unchanged.", wire.FlowView)},
              (*BODY_ERRORS, 401, 403, 404, 503), scope="admin",
              parameters=(PUT_FLOW_PATH,), body=FLOW_PUT, body_example=EXAMPLE_FLOW, body_yaml=True),
    Operation("delete", "/api/v1/flows/{flow_id}", "deleteFlow", "Delete a flow; its tasks stay readable.", "flows",
              {204: Answer("Deleted.", None)}, (401, 403, 404, 503), scope="admin",
              parameters=(_param("flow_id", "path", FLOW_ID, "The flow's id.", example=EXAMPLE_FLOW["id"]),)),
    Operation("post", "/api/v1/keys", "createKey", "Create a server key; its token is shown this once.", "keys",
              {201: Answer("The key and its token.", wire.KeyCreated,
                           links={"RevokeKey": _link("revokeKey", "key_id", "Revoke the key.")})},
              (*BODY_ERRORS, 401, 403, 503), scope="admin", body=schemas.KeyCreateBody),
    Operation("get", "/api/v1/keys", "listKeys", "Every server key, without secrets.", "keys",
              {200: Answer("The keys.", wire.KeyList)}, (401, 403, 503), scope="admin"),
    Operation("delete", "/api/v1/keys/{key_id}", "revokeKey", "Revoke a server key (refused within a second everywhere).",
              "keys", {200: Answer("The key, revoked.", wire.KeyView)}, (401, 403, 404, 503), scope="admin",
              parameters=(_param("key_id", "path", {"type": "string", "minLength": 1}, "The key's id."),)),
    Operation("put", "/api/v1/secrets/{name}", "putSecret", "Set a secret's value for a mode (stored encrypted).",
              "secrets", {204: Answer("Stored; the value is never shown again.", None)},
              (*BODY_ERRORS, 401, 403, 503), scope="admin", parameters=(SECRET_NAME, SECRET_MODE),
              body=schemas.SecretPutBody, body_example={"value": "sk-…"}),
    Operation("get", "/api/v1/secrets", "listSecrets", "Every secret's name and modes, never a value.", "secrets",
              {200: Answer("The secrets.", wire.SecretList)}, (401, 403, 503), scope="admin"),
    Operation("delete", "/api/v1/secrets/{name}", "deleteSecret", "Delete a secret (every mode, or `?mode=`'s).",
              "secrets", {204: Answer("Deleted.", None)}, (401, 403, 404, 422, 503), scope="admin",
              parameters=(SECRET_NAME, _param("mode", "query", MODE, "Delete only this mode's value."))),
    Operation("post", "/api/v1/files", "uploadFile", "Store a file (multipart part `file`, or the raw body with "
              "any Content-Type, which the file keeps), streamed; 413 past GRAPH_RUNTIME_MAX_FILE_BYTES.", "files",
              {201: Answer("The file value, with its signed `url`.", wire.FileUploaded,
                           {"Location": {"required": True, "schema": {"type": "string"},
                                         "description": "/api/v1/files/{id}"}}, FILE_LINKS)},
              (400, 408, 413, 415, 422, 401, 503, 507),
              parameters=(_param("name", "query", FILE_NAME, "The file's name (a raw body's; default `file`)."),),
              body_content=UPLOAD_BODY),
    Operation("get", "/api/v1/files/{file_id}", "downloadFile", "The file's bytes (any key, or a signed link).", "files",
              {200: Answer("The bytes, with the file's Content-Type.", FILE_BYTES, FILE_HEADERS, media="*/*"),
               206: Answer("The requested range, with Content-Range.", FILE_BYTES, FILE_HEADERS, media="*/*"),
               304: Answer("The file is the one your If-None-Match names.", None)},
              (401, 403, 404, 416, 503), parameters=DOWNLOAD_PARAMS),
    Operation("delete", "/api/v1/files/{file_id}", "deleteFile", "Delete a file; its bytes go once no other file "
              "shares them.", "files", {204: Answer("Deleted.", None)}, (401, 404, 503), scope="admin",
              parameters=(FILE_ID,)),
    Operation("get", "/api/v1/node-types", "listNodeTypes", "Every registered node type.", "node-types",
              {200: Answer("Parameter and output JSON schemas, cost model, run policy.", wire.NodeTypeList)},
              (401, 503)),
    Operation("get", "/healthz", "health", "200 when the database answers with this release's schema; 503 "
              "(`store_unavailable`, `schema_not_current`) otherwise.", "health",
              {200: Answer("Healthy.", wire.Health)}, (503,), scope="public"),
    Operation("get", "/metrics", "metrics", "Prometheus metrics in the text format (no key needed when the "
              "server runs with GRAPH_RUNTIME_METRICS_PUBLIC=true).", "health",
              {200: Answer("Tasks, nodes, costs, database and HTTP latency.", {"type": "string"},
                           media="text/plain")}, (401, 503)),
    Operation("get", OPENAPI_PATH, "openapi", "This document.", "health",
              {200: Answer("The OpenAPI 3.1 document.", DOCUMENT_SCHEMA)}, (), scope="public"),
)


# Triggers and the seed systems' APIs (SPEC §11): routes_hooks, compat_ziggy, compat_kestra.
HOOK_KEY = _param("key", "path", {"type": "string", "minLength": 1}, "The webhook trigger's key (its secret).")
HOOK_STARTED = {"type": "object", "required": ["id", "flow_id", "status", "status_name"],
                "properties": {"id": {"type": "integer"}, "flow_id": {"type": "string"},
                               "status": {"type": "integer"}, "status_name": {"type": "string"}}}
HOOK_BODY = {"application/json": {"schema": {}}, "text/plain": {"schema": {"type": "string"}},
             "application/x-www-form-urlencoded": {"schema": {"type": "object",
                                                              "additionalProperties": {"type": "string"}}}}
HOOK_ERRORS = (400, 404, 408, 413, 415, 422, 503)
_SLOT = {"type": "string", "format": "date-time"}
TRIGGER_LIST = {"type": "object", "required": ["triggers"], "properties": {"triggers": {"type": "array", "items": {
    "type": "object", "additionalProperties": False,
    "required": ["flow_id", "namespace", "index", "type", "path", "cron", "timezone", "next", "next_slots", "watch"],
    "properties": {"flow_id": {"type": "string"}, "namespace": {"type": "string"}, "index": {"type": "integer"},
                   "type": {"enum": ["webhook", "schedule", "flow"]},
                   "path": {"type": ["string", "null"], "description": "A webhook's path, its key shown as `***`."},
                   "cron": {"type": ["string", "null"]}, "timezone": {"type": ["string", "null"]},
                   "next": {"oneOf": [_SLOT, {"type": "null"}], "description": "A schedule trigger's next slot."},
                   "next_slots": {"type": "array", "items": _SLOT, "description": "A schedule's next slots."},
                   "watch": {"oneOf": [{"type": "null"}, {
                       "type": "object", "required": ["flow_id", "status"],
                       "properties": {"flow_id": {"type": "string"}, "status": {"type": "array", "items": {
                           "enum": ["succeeded", "failed", "cancelled"]}}}}],
                       "description": "A flow trigger's watched flow and the ends that start a task."}}}}}}
ZIGGY_STARTED = {"type": "object", "required": ["executionId", "flowUuid", "taskId"],
                 "properties": {"executionId": {"type": "string"}, "flowUuid": {"type": "string"},
                                "taskId": {"type": "integer"}}}
ZIGGY_STATUS = {"type": "object", "required": ["executionId", "terminationStatus", "ms", "executionEnvironmentMode",
                                               "createdAt", "flowUuid", "flowName"],
                "properties": {"executionId": {"type": "string"},
                               "terminationStatus": {"enum": ["SUCCESS", "FATAL", "TIMED OUT", "KILLED"]},
                               "ms": {"type": "integer", "minimum": 0},
                               "executionEnvironmentMode": {"enum": ["DEV", "PROD"]},
                               "createdAt": {"type": "string", "format": "date-time"}, "flowUuid": {"type": "string"},
                               "flowName": {"type": "string"}}}
KESTRA_STATE = {"type": "object", "required": ["current", "histories"],
                "properties": {"current": {"enum": ["CREATED", "RUNNING", "SUCCESS", "FAILED", "KILLED"]},
                               "histories": {"type": "array", "items": {"type": "object",
                                                                        "required": ["state", "date"]}}}}
KESTRA_EXECUTION = {"type": "object",
                    "required": ["id", "namespace", "flowId", "flowRevision", "state", "originalId", "deleted",
                                 "metadata"],
                    "properties": {"id": {"type": "string"}, "namespace": {"type": "string"},
                                   "flowId": {"type": "string"}, "flowRevision": {"type": "integer"},
                                   "state": KESTRA_STATE, "inputs": {"type": "object"}, "outputs": {},
                                   "originalId": {"type": "string"}, "deleted": {"type": "boolean"},
                                   "metadata": {"type": "object"}}}
TENANT = _param("tenant", "path", {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                "Kestra's tenant (this server has one: any name is accepted).")
NAMESPACE = _param("namespace", "path", {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$"},
                   "The flow's namespace (`default` unless the flow names one).")
EXECUTION_ID = _param("execution_id", "path", {"type": "string", "pattern": "^[0-9]{1,18}$"},
                      "The execution's id: the task's id.")
KESTRA_INPUTS = {"multipart/form-data": {"schema": {
    "type": "object", "description": "One part per input: text, or a file (a part with a filename; named `files`, "
                                     "the filename is the input's name)."}}}


def _kestra_operations(prefix: str, suffix: str) -> tuple[Operation, ...]:
    tenant = (TENANT,) if "{tenant}" in prefix else ()
    webhook = f"{prefix}/executions/webhook/{{namespace}}/{{flow_id}}/{{key}}"
    hooks = tuple(Operation(method, webhook, f"kestraWebhook{method.title()}{suffix}",
                            "Kestra's webhook path: the flow's webhook trigger with this key (no key needed).",
                            "kestra", {200: Answer("The execution started.", {"type": "object"})}, HOOK_ERRORS,
                            scope="public", parameters=(*tenant, NAMESPACE, FLOW_PATH, HOOK_KEY),
                            body_required=False, body_content=HOOK_BODY if method != "get" else None)
                  for method in ("get", "post"))
    return (*hooks,
            Operation("post", f"{prefix}/executions/{{namespace}}/{{flow_id}}", f"kestraCreateExecution{suffix}",
                      "Kestra's create execution: inputs as multipart form data merged over the start node's data.",
                      "kestra", {200: Answer("The execution (after `wait=true`, as it ended).", KESTRA_EXECUTION)},
                      (*BODY_ERRORS, 401, 404, 503), parameters=(
                          *tenant, NAMESPACE, FLOW_PATH, REVISION_QUERY,
                          _param("wait", "query", {"enum": ["true", "false"]}, "Answer once the task ended (≤ 60 s)."),
                          _param("labels", "query", {"type": "string", "pattern": "^[^:]+:.+$"}, "A label, key:value.")),
                      body_required=False, body_content=KESTRA_INPUTS),
            Operation("get", f"{prefix}/executions/{{execution_id}}", f"kestraGetExecution{suffix}",
                      "Kestra's execution: `state.current` and `state.histories`.", "kestra",
                      {200: Answer("The execution.", KESTRA_EXECUTION)}, (401, 404, 503),
                      parameters=(*tenant, EXECUTION_ID)),
            Operation("get", f"{prefix}/logs/{{execution_id}}/download", f"kestraDownloadLogs{suffix}",
                      "The execution's log lines (made from the task's and nodes' status changes).", "kestra",
                      {200: Answer("Log lines.", {"type": "string"}, media="text/plain")}, (401, 404, 503),
                      parameters=(*tenant, EXECUTION_ID)))


SEED_OPERATIONS: tuple[Operation, ...] = (
    Operation("post", "/api/v1/hooks/{flow_id}/{key}", "fireHook", "Start a task from the flow's webhook trigger: "
              "`{body, headers, query}` become the start node's data. No server key: the key is the secret.",
              "triggers", {201: Answer("The task, queued.", HOOK_STARTED),
                           200: Answer("A redelivery (same `webhook-id` or Idempotency-Key): the task it started.",
                                       HOOK_STARTED)}, HOOK_ERRORS, scope="public",
              parameters=(FLOW_PATH, HOOK_KEY), body_required=False, body_content=HOOK_BODY),
    Operation("get", "/api/v1/triggers", "listTriggers", "Every flow's triggers (keys never shown).", "triggers",
              {200: Answer("The triggers.", TRIGGER_LIST)}, (401, 503)),
    Operation("post", "/api", "ziggyLaunch", "Ziggy's launch: the JSON body is the start node's data; `executionId` "
              "is the idempotency key.", "ziggy",
              {201: Answer("Queued.", ZIGGY_STARTED), 200: Answer("This executionId's earlier task.", ZIGGY_STARTED)},
              (*BODY_ERRORS, 401, 404, 409, 503), parameters=(
                  _param("flowUuid", "query", FLOW_ID, "The flow's id.", required=True),
                  _param("executionId", "query", {"type": "string", "minLength": 1, "maxLength": 255},
                         "Your id for this execution (a UUID is made when left out)."),
                  _param("executionEnvironmentMode", "query", {"type": "string", "pattern": "^(?i:dev|prod)$"},
                         "DEV (Ziggy's default) or PROD.")),
              body_required=False, body_content={JSON: {"schema": {"type": "object"}}}),
    Operation("get", "/api/ziggy/execution-status/{execution_id}", "ziggyExecutionStatus",
              "How a Ziggy execution ended; 404 `execution_not_finished` while it is queued or running.", "ziggy",
              {200: Answer("Ziggy's fields, then ours (taskId, data, error).", ZIGGY_STATUS)}, (401, 404, 503),
              parameters=(_param("execution_id", "path", {"type": "string", "minLength": 1}, "The executionId."),)),
    *_kestra_operations("/api/v1", ""),
    *_kestra_operations("/api/v1/{tenant}", "Tenant"),
)
CALLBACK_OPERATIONS: tuple[Operation, ...] = (
    Operation("get", "/api/v1/task/{task_id}/callbacks", "listTaskCallbacks",
              "The task's callbacks (its `callback_url`, its flow's `on_end`): state and every attempt.", "tasks",
              {200: Answer("The callbacks.", wire.CallbackList)}, (401, 404, 503), parameters=(TASK_PATH,)),
    Operation("post", "/api/v1/webhook-secret", "revealWebhookSecret",
              "The callbacks' signing secret: the current one if never shown, else a new one (a rotation).", "keys",
              {200: Answer("The secret, shown this once.", wire.WebhookSecret)}, (401, 403, 503), scope="admin",
              body_required=False),
)
OPERATIONS = (*OPERATIONS, *SEED_OPERATIONS, *CALLBACK_OPERATIONS)


def component_schemas() -> dict[str, Any]:
    """Every request and response model's JSON schema, by name, with refs into ``components/schemas``."""
    models: list[tuple[type[BaseModel], Literal["validation"]]] = [
        (model, "validation") for model in (*REQUEST_MODELS, *RESPONSE_MODELS)]
    _, defs = models_json_schema(models, by_alias=True, ref_template=SCHEMA_REF)
    return {**defs["$defs"], FLOW_PUT: _flow_put(defs["$defs"][Flow.__name__])}


def _flow_put(flow: dict[str, Any]) -> dict[str, Any]:
    """``Flow`` with ``id`` optional: what ``flow.parse(data, flow_id=<the path's id>)`` accepts."""
    return {**flow, "title": FLOW_PUT, "required": [name for name in flow["required"] if name != "id"],
            "description": "A flow for `PUT /api/v1/flows/{flow_id}`: `id` may be left out, the path gives it; "
                           "an `id` other than the path's is a 422 naming `id`."}


def _ref(model: type[BaseModel] | str) -> dict[str, str]:
    return {"$ref": SCHEMA_REF.format(model=model if isinstance(model, str) else model.__name__)}


def _answer(answer: Answer) -> dict[str, Any]:
    out: dict[str, Any] = {"description": answer.description}
    if isinstance(answer.model, dict):
        out["content"] = {answer.media: {"schema": answer.model}}
    elif answer.model is not None:
        out["content"] = {answer.media: {"schema": _ref(answer.model)}}
    if answer.headers:
        out["headers"] = answer.headers
    if answer.links:
        out["links"] = answer.links
    return out


def _error_responses() -> dict[str, Any]:
    return {str(status): {"description": text, "content": {JSON: {"schema": _ref(wire.ErrorBody)}},
                          **({"headers": ERROR_HEADERS[status]} if status in ERROR_HEADERS else {})}
            for status, text in ERRORS.items()}


def _operation(op: Operation) -> dict[str, Any]:
    errors = set(op.errors) | ({403} if op.scope == "admin" else set())
    responses = {str(s): _answer(a) for s, a in sorted(op.answers.items())}
    responses.update({str(s): {"$ref": f"#/components/responses/{s}"} for s in sorted(errors)})
    out: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag]}
    if op.scope == "public":
        out["security"] = []
    elif op.scope == "admin":
        out["description"] = "Needs a key with scope `admin`."
    if op.parameters:
        out["parameters"] = list(op.parameters)
    if op.body is not None:
        media: dict[str, Any] = {"schema": _ref(op.body)}
        if op.body_example is not None:
            media["example"] = op.body_example
        content = {JSON: media, **{yaml: {"schema": media["schema"]} for yaml in yaml_body.YAML_TYPES if op.body_yaml}}
        out["requestBody"] = {"required": op.body_required, "content": content}
    if op.body_content is not None:  # beside the JSON body (execute's form), or the only one (uploads)
        content = out.get("requestBody", {}).get("content", {})
        out["requestBody"] = {"required": op.body_required, "content": {**content, **op.body_content}}
    out["responses"] = responses
    return out


@functools.cache
def document() -> dict[str, Any]:
    """The whole document (built once; pure, so cached for the process)."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "graph-runtime", "version": importlib.metadata.version("graph-runtime"),
                 "description": "Launch any part of a node graph with one request and poll the task. "
                                "Errors are `{\"error\": {\"code\", \"message\", \"field\"}}`. An empty query "
                                "parameter (`?status=`) is the same as leaving it out."},
        "security": ANY_KEY,
        "tags": [{"name": name} for name in dict.fromkeys(op.tag for op in OPERATIONS)],
        "paths": paths,
        "components": {"schemas": component_schemas(), "responses": _error_responses(),
                       "securitySchemes": SECURITY_SCHEMES},
    }
