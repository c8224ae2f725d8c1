"""The flow model: a named DAG of nodes and edges, loaded from JSON or YAML and validated whole."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from graph_runtime import errors
from graph_runtime.cron import check_expression, zone
from nodes import codec
from nodes.builtin.http_client import HttpUrl

ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


def _id_to_str(value: Any) -> Any:
    # YAML reads `id: 1607` as an int; ids are strings everywhere.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _not_dots(value: str) -> str:
    # curl and browsers collapse "." and ".." path segments: such a flow could never be called.
    if value in (".", ".."):
        raise ValueError("'.' and '..' cannot be ids")
    return value


# Field first: the pattern must reach the JSON schema (OpenAPI), not only validation.
Id = Annotated[str, Field(pattern=ID_PATTERN), BeforeValidator(_id_to_str), AfterValidator(_not_dots)]

POOL_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"
PoolName = Annotated[str, Field(pattern=POOL_PATTERN)]
"""A worker pool's name (``gpu``, ``cpu-big``): what ``--pool`` names on the command line."""


class Node(BaseModel):
    """One node of a flow: its id, its type name and its settings (its parameters)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Id
    type: str = Field(min_length=1)
    settings: dict[str, Any] = {}
    overridable: list[str] = []
    description: str | None = None
    pool: PoolName | None = Field(
        default=None,
        description="Run this node only on a worker started with `--pool <name>` (a GPU box, say); "
                    "overrides its node type's pool. The rest of the task runs on any worker.",
    )
    join: Literal["all", "any"] | None = Field(
        default=None,
        description="`any`: run when at least one predecessor succeeded and the others were skipped "
                    "(the merge after a switch); `all` (the default): a skipped predecessor skips this node.",
    )

    @property
    def joins_any(self) -> bool:
        return self.join == "any"


class Edge(BaseModel):
    """A link: ``from``'s output ``output`` (all of it if absent) feeds ``to``'s input ``input``.

    Without ``input`` the value arrives under the upstream node's id. ``when`` (edges from a
    ``switch`` only) names the case this edge is taken for.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: Id = Field(alias="from")
    output: str | None = None
    target: Id = Field(alias="to")
    input: str | None = None
    when: str | None = Field(default=None, description="From a switch: the case this edge is taken for.")

    @property
    def input_name(self) -> str:
        return self.input if self.input is not None else self.source

    @property
    def carries_value(self) -> bool:
        """False for a control edge (``when`` with neither ``input`` nor ``output``): it only
        says the branch is taken, so any node type can follow a switch."""
        return self.when is None or self.input is not None or self.output is not None


class Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start_node_id: Id | None = None
    end_node_id: Id | None = None
    result_node_id: Id | None = None


NAMESPACE_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"
DEFAULT_NAMESPACE = "default"
WEBHOOK_KEY_PATTERN = r"^[A-Za-z0-9_.~-]{16,256}$"


def _webhook_key(value: str) -> str:
    if not re.fullmatch(WEBHOOK_KEY_PATTERN, value):
        raise ValueError("a webhook key is the hook's secret: give 16 to 256 characters of A-Z a-z 0-9 _ . ~ - "
                         "(e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(24))'`)")
    return value


class WebhookTrigger(BaseModel):
    """``{type: webhook, key}``: ``POST /api/v1/hooks/{flow_id}/{key}`` starts a task, no server key needed.

    The key is the credential, so it is at least 16 characters (URL-safe) and is shown only to admin keys.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["webhook"]
    key: Annotated[str, AfterValidator(_webhook_key)] = Field(
        repr=False,
        description="The secret part of the hook's URL: 16 to 256 of A-Z a-z 0-9 _ . ~ -; shown to admin keys "
                    "only (others see `***`).")


class OnEnd(BaseModel):
    """``on_end: [{url}]``: when any task of the flow ends, its JSON is POSTed there, signed (SPEC §11 callbacks)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpUrl = Field(max_length=2048, description="An absolute http(s) URL; reached through the SSRF guard.")


def _timezone(value: str) -> str:
    zone(value)
    return value


class ScheduleTrigger(BaseModel):
    """``{type: schedule, cron, timezone, node_settings}``: a task at each slot of ``cron`` in ``timezone``.

    Each slot starts one task whatever the number of processes; after downtime only the latest
    missed slot runs (``http_api.schedule`` says how).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["schedule"]
    cron: Annotated[str, AfterValidator(check_expression)] = Field(
        description="Five fields (minute hour day-of-month month day-of-week), e.g. `*/15 * * * *`, or "
                    "@hourly, @daily, @weekly, @monthly, @yearly.")
    timezone: Annotated[str, AfterValidator(_timezone)] = Field(
        default="UTC", description="The IANA timezone the cron's wall-clock times are in (`Europe/Berlin`).")
    node_settings: dict[str, dict[str, Any]] = Field(
        default={}, description="As execute's `node_settings`: merged into the flow's settings for each task.")


# YAML reads `flow_id: 1607` as a number, which is taken as the id "1607": the schema says so.
_ID_OR_NUMBER = {"anyOf": [{"type": "string", "pattern": ID_PATTERN}, {"type": "integer"}]}
EndStatus = Literal["succeeded", "failed", "cancelled"]
ENDED_STATUSES: tuple[EndStatus, ...] = ("succeeded", "failed", "cancelled")


class FlowEndTrigger(BaseModel):
    """``{type: flow, flow_id, status}``: a task when a task of flow ``flow_id`` ends with one of ``status``.

    The ended task's JSON (as ``GET /api/v1/task/{id}`` answers it) is the start node's ``data``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["flow"]
    flow_id: Annotated[Id, WithJsonSchema(_ID_OR_NUMBER)] = Field(description="The flow whose tasks' ends are watched.")
    status: list[EndStatus] = Field(
        default=list(ENDED_STATUSES), min_length=1,
        description="The ends that start a task (its `status_name`); all three when left out. A crashed task "
                    "is `failed` (error code `crashed`).")


Trigger = Annotated[WebhookTrigger | ScheduleTrigger | FlowEndTrigger, Field(discriminator="type")]
TRIGGER_TYPES = ("webhook", "schedule", "flow")


class Flow(BaseModel):
    """A stored DAG. Validated against the registry by :func:`graph_runtime.validation.validate`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Id
    name: str | None = None
    description: str | None = None
    override_policy: Literal["permissive", "declared", "off"] = "permissive"
    defaults: Defaults = Defaults()
    nodes: list[Node] = Field(min_length=1)
    edges: list[Edge] = []
    inputs: dict[str, Any] | None = Field(
        default=None,
        description="A JSON Schema for the `data` of the flow's only start node, or {start node id: schema}.",
    )
    # None rather than a default value: definition() leaves None out, so the flows stored before
    # these fields existed keep their digest and do not become new revisions.
    namespace: str | None = Field(default=None, pattern=NAMESPACE_PATTERN,
                                  description="Kestra's namespace (default `default`).")
    triggers: list[Trigger] | None = Field(default=None, description="What starts a task besides execute.")
    on_end: list[OnEnd] | None = Field(default=None, description="Where each task's JSON is POSTed, signed, when it ends.")

    @pydantic.model_validator(mode="after")
    def _triggers_fit(self) -> Flow:
        ids = {node.id for node in self.nodes}
        for index, trigger in enumerate(self.triggers or ()):
            if isinstance(trigger, ScheduleTrigger):
                for node_id in trigger.node_settings:
                    if node_id not in ids:
                        raise ValueError(f"triggers.{index}.node_settings: no node has id {node_id!r}")
            elif isinstance(trigger, FlowEndTrigger) and trigger.flow_id == self.id:
                raise ValueError(f"triggers.{index}.flow_id: a flow cannot start on its own end (each of its tasks "
                                 "would start the next, forever)")
        return self

    @property
    def namespace_name(self) -> str:
        """The flow's namespace, ``default`` when it names none."""
        return self.namespace or DEFAULT_NAMESPACE

    @functools.cached_property
    def _by_id(self) -> dict[str, Node]:
        return {node.id: node for node in self.nodes}

    @functools.cached_property
    def input_schemas(self) -> dict[str, Any]:
        """``inputs`` keyed by start node id, whichever form the flow uses; ``{}`` without inputs.

        The keyed form is recognised by every key naming a ``start`` node; otherwise ``inputs`` is
        one schema for the flow's only start node (with several, it is keyed by nobody: validation
        reports it).
        """
        if not self.inputs:
            return {}
        starts = [node.id for node in self.nodes if node.type == "start"]
        if all(key in starts for key in self.inputs):
            return dict(self.inputs)
        return {starts[0]: self.inputs} if len(starts) == 1 else {}

    def node(self, node_id: str) -> Node:
        return self._by_id[node_id]

    @functools.cached_property
    def memo(self) -> dict[Any, Any]:
        """Data derived from this (immutable) flow, kept by whoever derives it (selection's topologies)."""
        return {}

    def definition(self) -> dict[str, Any]:
        """The definition as JSON-ready data (edges with ``from``/``to``)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def digest(self) -> str:
        """A hash of the canonical definition: equal digests mean the same revision."""
        canonical = codec.dumps(_sorted(self.definition()))
        return hashlib.sha256(canonical).hexdigest()


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def parse(data: Any, *, flow_id: str | None = None) -> Flow:
    """Build a :class:`Flow` from parsed JSON/YAML, listing every shape problem at once.

    Args:
        data: the parsed document.
        flow_id: when given (a PUT to ``/flows/{id}``), the id the document must have or gets.

    Raises:
        errors.FlowInvalid: with one entry per problem.
    """
    if not isinstance(data, Mapping):
        raise errors.FlowInvalid(["a flow must be an object with id, nodes and edges"])
    data = dict(data)
    if flow_id is not None:
        given = _id_to_str(data.get("id", flow_id))
        if given != flow_id:
            raise errors.FlowInvalid([f"id: {given!r} does not match the flow id {flow_id!r} in the path"], field="id")
        data["id"] = flow_id
    try:
        return Flow.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors():
            path = _field_path(err["loc"])
            problems.append(f"{path}: {err['msg']}" if path else err["msg"])
        first = _field_path(exc.errors()[0]["loc"]) or None
        raise errors.FlowInvalid(problems, field=first) from None


def _field_path(loc: tuple[int | str, ...]) -> str:
    """A dotted field path; a trigger's ``type`` tag, which pydantic puts in its union's path, left out
    (``triggers.0.key``, not ``triggers.0.webhook.key``)."""
    if len(loc) > 2 and loc[0] == "triggers" and loc[2] in TRIGGER_TYPES:
        loc = loc[:2] + loc[3:]
    return ".".join(str(part) for part in loc)


class FlowYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's plain scalars.

    YAML 1.1 reads ``0123`` as octal 83, ``1_000`` as 1000, ``12:30`` as 750 and ``no`` as false;
    ids are strings, so those stay text here. Canonical numbers and true/false still parse.
    """


FlowYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if not tag.endswith((":int", ":float", ":bool"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
FlowYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
FlowYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789"))
FlowYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$|^[-+]?[0-9]+[eE][-+]?[0-9]+$"
               r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def read_file(path: Path) -> Flow:
    """Parse a ``.json``, ``.yaml`` or ``.yml`` flow file (shape only; see ``validation``)."""
    text = path.read_text(encoding="utf-8")
    try:
        data = codec.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=FlowYamlLoader)
    except (codec.DecodeError, yaml.YAMLError) as exc:
        raise errors.FlowInvalid([f"{path.name}: not valid {path.suffix.lstrip('.').upper()}: {exc}"]) from None
    return parse(data)


FLOW_SUFFIXES = (".json", ".yaml", ".yml")
