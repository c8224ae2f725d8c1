"""The dry run of a checked request, with this process's parts: the output cache, the executor's
parameter resolvers and the stored flows (``POST /flow/{id}/plan`` and ``flows show --plan``)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from graph_runtime import plan
from graph_runtime.flow import Flow
from graph_runtime.models import Task
from http_api.services import Checked, Services
from nodes.contract import NodeType


async def dry_run(services: Services, checked: Checked) -> plan.DryRun:
    """What executing ``checked`` would run, from the cache, at what cost; it writes nothing."""
    probe = _CacheProbe(services, checked) if services.executor.cache is not None else None

    async def load_flow(flow_id: str, revision: int | None) -> Flow:
        return (await services.repo.get_flow(flow_id, revision))[0]

    return await plan.dry_run(checked.plan, services.registry, services.executor.prices, cache=probe,
                              load_flow=load_flow)


@dataclass(frozen=True)
class _CacheProbe:
    """:class:`graph_runtime.plan_cached.CacheProbe` on the repository's ``node_cache`` and the
    executor's own resolvers, so a plan's keys are the run's keys (secrets of the request's mode,
    files by sha256). The resolvers only read here: a URL in a file slot, which would be fetched,
    never reaches them."""

    services: Services
    checked: Checked

    async def resolve(self, node_id: str, node_type: type[NodeType], params: dict[str, Any]) -> dict[str, Any]:
        # The task the resolvers see: not stored; they read its flow, revision and mode.
        task = Task(id=0, flow_id=self.checked.flow.id, revision=self.checked.revision, request=self.checked.request)
        for resolver in self.services.executor.resolvers:
            params = (await resolver.resolve(task, node_id, node_type, params)).params
        return params

    async def held(self, keys: Collection[str]) -> set[str]:
        return await self.services.repo.cache_has(keys)
