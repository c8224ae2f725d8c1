"""The registry of node types: built at start-up and passed in, never a module global."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata

from nodes import errors
from nodes.contract import CostModel, NodeType

ENTRY_POINT_GROUP = "graph_runtime.nodes"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginFailure:
    """An entry point that could not be loaded: its name, value, package and the error."""

    entry_point: str
    value: str
    distribution: str | None
    error: str


def _plugin_failed(entry_point: metadata.EntryPoint, exc: Exception) -> PluginFailure:
    """Record and log (once, one line) a plugin that failed; the traceback only at DEBUG."""
    dist = getattr(entry_point, "dist", None)
    package = f"{dist.name} {dist.version}" if dist is not None else None
    failure = PluginFailure(entry_point=entry_point.name, value=entry_point.value, distribution=package,
                            error=f"{type(exc).__name__}: {exc}")
    log.warning("plugin %s (entry point %r = %r in group %s) failed to load and is skipped: %s",
                package or entry_point.module, entry_point.name, entry_point.value, ENTRY_POINT_GROUP,
                failure.error, extra={"action": "plugin_failed", "entry_point": entry_point.name})
    log.debug("plugin %s failed", entry_point.name, exc_info=exc)
    return failure


class Registry:
    """Node types by their ``type`` name; registering a name twice is an error."""

    def __init__(self, node_types: Iterable[type[NodeType]] = ()) -> None:
        self._types: dict[str, type[NodeType]] = {}
        self._instances: dict[str, NodeType] = {}
        self.failed_plugins: list[PluginFailure] = []
        """Entry points that could not be loaded, in load order (see :meth:`load_entry_points`)."""
        for node_type in node_types:
            self.register(node_type)

    def register(self, node_type: type[NodeType]) -> type[NodeType]:
        """Add ``node_type``; usable as a class decorator.

        Raises:
            errors.DuplicateNodeType: the name is taken.
        """
        name = node_type.type
        if name in self._types:
            raise errors.DuplicateNodeType(f"node type {name!r} is already registered")
        self._types[name] = node_type
        self._instances[name] = node_type()
        return node_type

    def get(self, name: str) -> type[NodeType]:
        """The class registered as ``name``.

        Raises:
            errors.UnknownNodeType: nothing is registered under ``name``.
        """
        try:
            return self._types[name]
        except KeyError:
            raise errors.UnknownNodeType(f"unknown node type {name!r}") from None

    def instance(self, name: str) -> NodeType:
        """The shared instance whose ``run`` executes nodes of type ``name``."""
        self.get(name)
        return self._instances[name]

    def set_cost(self, name: str, cost: CostModel) -> None:
        """Price type ``name`` with ``cost`` in this registry only (a deployment's own rates).

        The registered class is replaced by a subclass that differs in ``cost`` alone, so other
        registries, and the class itself, keep the default.

        Raises:
            errors.UnknownNodeType: nothing is registered under ``name``.
        """
        base = self.get(name)
        priced = type(base.__name__, (base,), {"cost": cost, "__module__": base.__module__, "__doc__": base.__doc__})
        self._types[name] = priced
        self._instances[name] = priced()

    async def aclose(self) -> None:
        """Call every instance's ``close`` hook (at shutdown); one failing does not skip the rest."""
        for name, instance in self._instances.items():
            try:
                await instance.close()
            except Exception:
                log.exception("node type close failed", extra={"action": "node_type_close_failed", "type": name})

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[type[NodeType]]:
        return iter(sorted(self._types.values(), key=lambda t: t.type))

    def __len__(self) -> int:
        return len(self._types)

    def load_entry_points(self, entry_points: Iterable[metadata.EntryPoint] | None = None) -> None:
        """Register what third-party packages declare in the ``graph_runtime.nodes`` group.

        An entry point names either a :class:`NodeType` subclass or a callable that takes this
        registry and registers its types.

        A plugin that fails (its import raises, its callable raises, or it takes a registered
        name) is skipped whole and reported once, as a WARNING naming its package and the error,
        and kept in :attr:`failed_plugins`; every other type keeps working.
        """
        if entry_points is None:
            entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
        for entry_point in entry_points:
            try:
                self._load_plugin(entry_point)
            except Exception as exc:  # any error a third-party import can raise; BaseException still stops us
                self.failed_plugins.append(_plugin_failed(entry_point, exc))
                continue
            log.info("node types loaded from entry point %r = %r", entry_point.name, entry_point.value,
                     extra={"action": "plugin_loaded", "entry_point": entry_point.name})

    def _load_plugin(self, entry_point: metadata.EntryPoint) -> None:
        """Register one entry point's types, all or none: a callable that fails halfway is undone."""
        before = set(self._types)
        try:
            target = entry_point.load()
            if isinstance(target, type) and issubclass(target, NodeType):
                self.register(target)
            else:
                target(self)
        except Exception:
            for name in set(self._types) - before:
                del self._types[name], self._instances[name]
            raise


def default_registry(*, plugins: bool = True) -> Registry:
    """A registry with every core type and, unless ``plugins`` is false, installed plugins."""
    from nodes.builtin import CORE_TYPES

    registry = Registry(CORE_TYPES)
    if plugins:
        registry.load_entry_points()
    return registry
