"""The registry of node types: built at start-up and passed in, never a module global."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from importlib import metadata

from nodes import errors
from nodes.contract import NodeType

ENTRY_POINT_GROUP = "graph_runtime.nodes"

log = logging.getLogger(__name__)


class Registry:
    """Node types by their ``type`` name; registering a name twice is an error."""

    def __init__(self, node_types: Iterable[type[NodeType]] = ()) -> None:
        self._types: dict[str, type[NodeType]] = {}
        self._instances: dict[str, NodeType] = {}
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
        """
        if entry_points is None:
            entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
        for entry_point in entry_points:
            target = entry_point.load()
            if isinstance(target, type) and issubclass(target, NodeType):
                self.register(target)
            else:
                target(self)
            log.info("node types loaded", extra={"action": "plugin_loaded", "entry_point": entry_point.name})


def default_registry(*, plugins: bool = True) -> Registry:
    """A registry with every core type and, unless ``plugins`` is false, installed plugins."""
    from nodes.builtin import CORE_TYPES

    registry = Registry(CORE_TYPES)
    if plugins:
        registry.load_entry_points()
    return registry
