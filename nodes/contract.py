"""The node-type contract that built-in and third-party node types implement.

A node type is a subclass of :class:`NodeType` with a unique dotted ``type`` name, a pydantic
``Params`` model, a pydantic ``Output`` model, a :class:`CostModel`, a description and one
``async def run(params, ctx)``. Register it with :class:`nodes.registry.Registry`, or ship it in a
package that declares it under the ``graph_runtime.nodes`` entry-point group.

Example::

    class Shout(NodeType):
        type = "acme.shout"
        description = "Upper-cases a text."

        class Params(BaseModel):
            model_config = ConfigDict(extra="forbid")
            text: str

        class Output(BaseModel):
            text: str

        async def run(self, params: Params, ctx: RunContext) -> Output:
            return self.Output(text=params.text.upper())
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import aiohttp
import pydantic
from pydantic import BaseModel, ConfigDict

from nodes import errors, file_params
from nodes.fanout import Children, ItemRuns
from nodes.files import FileStore
from nodes.limits import Limits

T = TypeVar("T")

POLICY_KEYS = ("timeout_s", "retries", "retry_backoff_s", "cache")


class CostModel(BaseModel):
    """How a node type is priced, in credits.

    Attributes:
        per_run: credits charged for each successful run.
        per_second: credits per second of running.
        per_unit: credits per unit of reported usage, e.g. ``{"tokens": 0.001}``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_run: float = 0.0
    per_second: float = 0.0
    per_unit: dict[str, float] = {}

    def price(self, seconds: float, usage: Mapping[str, float]) -> float:
        """The cost of one run that took ``seconds`` and reported ``usage``."""
        units = sum(self.per_unit.get(name, 0.0) * amount for name, amount in usage.items())
        return round(self.per_run + self.per_second * seconds + units, 9)


class RunPolicy(BaseModel):
    """Timeout and retry settings every node accepts (SPEC §4).

    Attributes:
        timeout_s: seconds one attempt may take; None means no limit.
        retries: how many times a transient failure is tried again.
        retry_backoff_s: base delay before a retry, doubled each time, with jitter.
        cache: whether a deterministic type's node may be served from the output cache (SPEC §9);
            ignored on a type that is not deterministic (it never is).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_s: float | None = pydantic.Field(default=None, gt=0)
    retries: int = pydantic.Field(default=0, ge=0, le=100, strict=True)
    retry_backoff_s: float = pydantic.Field(default=1.0, ge=0, le=3600)
    cache: bool = pydantic.Field(default=True, strict=True)


@dataclass
class RunContext:
    """What a running node may use besides its parameters.

    Attributes:
        task_id: the task this run belongs to.
        node_id: the node's id in its flow.
        flow_id: the flow's id.
        attempt: 1 for the first try, 2 for the first retry, and so on.
        timeout_s: this attempt's timeout, if any (``http_request`` uses it for its client).
        http: a shared aiohttp client session whose connector enforces the SSRF policy.
        allow_private: whether private and loopback addresses may be contacted.
        stop: a ``threading.Event`` set when the try is cancelled or times out, for code in a thread.
        limits: the server's ceilings (output size, response size, template resources); a
            node never lets a parameter raise them.
        files: the file store (:class:`nodes.files.FileStore`): read a ``File`` parameter's
            bytes, store the files the node produces. None only where no store is configured.
        prices: the server's model price table (``LLM_PRICES``): ``{model: {"input": …,
            "output": …}}`` in credits per 1M tokens, read once at start-up; empty when unset.
            ``llm.*`` nodes price the tokens an answer reports with it (unless their
            ``prices`` parameter is given) and report the result as usage.
        children: runs child tasks (``subflow``, ``map`` over a flow); None where the runtime
            cannot (see :mod:`nodes.fanout`).
        items: a ``map`` node's item runs; None for every other node.
        say: where :meth:`progress`, :meth:`log` and :meth:`token` go (the task's event stream);
            None: nowhere (a node run outside a task).
    """

    task_id: int
    node_id: str
    flow_id: str
    attempt: int = 1
    timeout_s: float | None = None
    http: aiohttp.ClientSession | None = None
    allow_private: bool = False
    usage: dict[str, float] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    files: FileStore | None = None
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    children: Children | None = None
    items: ItemRuns | None = None
    say: Callable[[str, dict[str, Any]], None] | None = None

    @functools.cached_property
    def stop(self) -> threading.Event:
        # Made on first use: most nodes never look, and an Event is a lock, a condition and a
        # deque for every node of a 10,000-node task to carry.
        return threading.Event()

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Tell whoever watches the task how far this node is: ``fraction`` from 0.0 to 1.0 (a
        ``progress`` event). Cheap enough to call per step; safe from a thread (``to_thread``)."""
        if self.say is not None:
            self.say("progress", {"node_id": self.node_id, "fraction": min(max(float(fraction), 0.0), 1.0),
                                  "message": message})

    def log(self, message: str, level: str = "info") -> None:
        """A line for the task's ``log`` events (the dashboard's log pane): ``level`` is ``debug``,
        ``info``, ``warning`` or ``error``. Never put a secret here."""
        if self.say is not None:
            self.say("log", {"node_id": self.node_id, "level": level, "message": str(message)})

    def token(self, text: str) -> None:
        """A piece of a model's streamed answer, as it arrives (a ``token`` event)."""
        if self.say is not None and text:
            self.say("token", {"node_id": self.node_id, "text": text})

    def report_usage(self, name: str, amount: float) -> None:
        """Add ``amount`` units of ``name`` (tokens, megapixels…) for the cost model to price."""
        self.usage[name] = self.usage.get(name, 0.0) + float(amount)

    async def to_thread(self, func: Callable[..., T], *args: Any) -> T:
        """Run CPU-heavy or blocking ``func(*args)`` off the event loop.

        When the node is cancelled, ``ctx.stop`` is set so cooperative code can return early;
        the node does not wait for the thread to finish.
        """
        stop = self.stop  # made here, on the loop, before the thread can race to make its own
        try:
            return await asyncio.to_thread(func, *args)
        except asyncio.CancelledError:
            stop.set()
            raise


class NodeType:
    """Base class of every node type. Subclasses set the class attributes and ``run``."""

    type: ClassVar[str]
    description: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]]
    Output: ClassVar[type[BaseModel]]
    cost: ClassVar[CostModel] = CostModel()
    policy: ClassVar[RunPolicy] = RunPolicy()
    extra: ClassVar[str | None] = None
    # The worker pool this type runs on (SPEC §10: ``gpu``…): only a worker started with
    # ``--pool <name>`` runs it; a flow node's own ``pool`` overrides it. None: any worker.
    pool: ClassVar[str | None] = None
    """The optional-dependency extra the type needs, e.g. ``"media"`` for ``graph-runtime[media]``."""
    requires: ClassVar[tuple[str, ...]] = ()
    """Modules that extra installs; the type is available when every one of them imports."""
    version: ClassVar[str] = "1"
    """Part of the output cache's key: change it when the same parameters start giving another output."""
    fans_out: ClassVar[bool] = False
    """Whether it runs items or child tasks (``ctx.items``, ``ctx.children``): ``map`` and ``subflow``."""
    deterministic: ClassVar[bool] = False
    """Whether equal parameters always give an equal output, so the output cache may serve it
    (SPEC §9). A type deterministic only for some parameters overrides :meth:`cacheable`."""

    @classmethod
    def available(cls) -> bool:
        """Whether every module in ``requires`` imports (the type's extra is installed)."""
        return all(_importable(name) for name in cls.requires)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None when the type can run; else a message naming the extra to install."""
        if cls.available():
            return None
        return f"node type {cls.type} needs the {cls.extra} extra: pip install 'graph-runtime[{cls.extra}]'"

    async def run(self, params: Any, ctx: RunContext) -> BaseModel:
        """Do the node's work and return an ``Output`` instance.

        A subclass may define a plain ``def run`` instead: the executor then calls it on a thread
        (SPEC §10), so blocking code never freezes the event loop; it should watch ``ctx.stop``.
        """
        raise NotImplementedError

    async def close(self) -> None:
        """Release resources at shutdown; the default does nothing.

        ``Registry.aclose`` calls it on the registry's instance when the server or the CLI
        stops (e.g. to stop worker processes). A registry may serve again afterwards, so
        resources closed here should start again lazily if ``run`` is called.
        """

    @classmethod
    def nested_problems(cls, settings: Mapping[str, Any], registry: Any) -> list[str]:
        """Problems in what the settings name beyond the type's own model (a map's item node
        type and its settings), as ``"<field>: <message>"``; checked when a flow is loaded."""
        return []

    @classmethod
    def cacheable(cls, params: Mapping[str, Any]) -> bool:
        """Whether a run with these (resolved) ``params`` may be served from the output cache."""
        return cls.deterministic

    def min_timeout(self, params: Any) -> float | None:
        """The least timeout a run with ``params`` needs (a delay never times out early)."""
        return None

    @classmethod
    def accepts_extra(cls) -> bool:
        """Whether parameters beyond the model's fields are allowed (template variables)."""
        return cls.Params.model_config.get("extra") == "allow"

    @classmethod
    def accepts_input(cls, name: str) -> bool:
        """Whether an edge may deliver a value under input ``name``."""
        return cls.accepts_extra() or name in cls.Params.model_fields


@functools.cache
def _importable(module: str) -> bool:
    # Cached for the process's life: installing an extra needs a restart anyway, and a failed
    # import is slow to repeat on every flow load. Any error counts: a broken install of an
    # extra makes its types unavailable, never the node-types listing a 500.
    try:
        importlib.import_module(module)
    except Exception:
        return False
    return True


def split_policy(settings: Mapping[str, Any], default: RunPolicy) -> tuple[RunPolicy, dict[str, Any]]:
    """Take ``timeout_s``/``retries``/``retry_backoff_s``/``cache`` out of ``settings``.

    Raises:
        errors.InvalidParams: with ``field`` naming the bad key.
    """
    rest = {k: v for k, v in settings.items() if k not in POLICY_KEYS}
    given = {k: settings[k] for k in POLICY_KEYS if k in settings}
    if not given:
        return default, rest
    try:
        policy = RunPolicy.model_validate({**default.model_dump(), **given})
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        raise errors.InvalidParams(
            f"{first['loc'][0]}: {first['msg']}", field=str(first["loc"][0])
        ) from None
    return policy, rest


SECRET_KEY = "$secret"
SECRET_PLACEHOLDER = "[secret]"


def _secret_placeholders(value: Any) -> Any:
    """``value`` with each ``{"$secret": NAME}`` replaced by a placeholder string (a copy)."""
    if isinstance(value, Mapping):
        if len(value) == 1 and isinstance(value.get(SECRET_KEY), str):
            return SECRET_PLACEHOLDER
        return {key: _secret_placeholders(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_secret_placeholders(item) for item in value]
    return value


def validate_params(
    node_type: type[NodeType],
    params: Mapping[str, Any],
    linked: frozenset[str] = frozenset(),
    *,
    limits: Limits | None = None,
    unresolved: bool = False,
) -> BaseModel | None:
    """Validate ``params`` against the type's ``Params`` model.

    Parameters named in ``linked`` are fed by edges and may be missing; when any of them is
    missing, nothing is returned (the model cannot be built yet) but everything else is checked.

    A file parameter (:mod:`nodes.file_params`) may hold an ``http(s)`` URL instead of a file
    value: it is fetched before the node runs, so it is valid here.

    ``unresolved``: ``params`` are settings whose references are not resolved yet (at flow load
    and execute): a flow's ``{"$secret": NAME}`` becomes a string just before the node runs, so
    it counts as a string here. At run time references are resolved and this walk is skipped.

    ``limits`` are the server's ceilings, given to the model's validators as pydantic's
    validation context (``info.context``), so a parameter above a ceiling is refused before
    the node runs; ``run`` must check again, as the context is None where it is not given.

    Raises:
        errors.InvalidParams: the first problem, with ``field`` as a dotted path inside the node.
    """
    shapes = file_params.file_params(node_type.Params)
    if shapes:  # a URL where a file goes is fetched before the node runs: valid here
        params = file_params.with_url_placeholders(params, shapes)
    if unresolved:
        params = _secret_placeholders(params)
    try:
        return node_type.Params.model_validate(dict(params), context=limits)
    except pydantic.ValidationError as exc:
        problems = [
            e for e in exc.errors()
            if not (e["type"] == "missing" and len(e["loc"]) == 1 and e["loc"][0] in linked)
        ]
        if not problems:
            return None
        first = problems[0]
        path = ".".join(str(part) for part in first["loc"])
        message = f"{path}: {first['msg']}" if path else first["msg"]
        raise errors.InvalidParams(message, field=path or None) from None
