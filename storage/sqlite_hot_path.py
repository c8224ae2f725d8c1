"""The hot path on SQLite: stdlib ``sqlite3`` transactions run inline on the event loop
(:class:`storage.sqlite_inline.SqliteInline`), statements in :mod:`storage.sqlite_statements`."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from graph_runtime import errors
from graph_runtime.events import EventBatch, TaskEvent
from graph_runtime.models import Fenced, Lease, NodeRun, Task, TaskOutcome, TaskStatus
from storage import convert, rows
from storage import sqlite_statements as lite
from storage.hot_path import CacheRow, encoded, outcome_raised, outcome_values
from storage.sqlite_inline import SqliteInline

_CODEC = rows.SQLITE


class SqliteHotPath:
    """:class:`storage.hot_path.HotPath` on a SQLite file."""

    def __init__(self, inline: SqliteInline) -> None:
        self._lite = inline
        self.write_lock = inline.write_lock

    async def create_task(self, values: dict[str, Any], node_ids: Sequence[str], if_latest: bool = False) -> int | None:
        key = values["idempotency_key"]
        params = (values["flow_id"], values["revision"], rows.json_text(values["data"]), lite.dt(values["created"]),
                  key, values["request_fingerprint"], values["key_id"], values["mode"], values["parent_id"],
                  values["status"], values["claims"], values["started"] and lite.dt(values["started"]),
                  values["lease_owner"], values["lease_expires"] and lite.dt(values["lease_expires"]))
        try:
            return await self._lite.write(lambda c: lite.create_task_work(c, params, key is not None, node_ids, if_latest))
        except sqlite3.IntegrityError:
            raise errors.RevisionNotFound(f"flow {values['flow_id']!r} has no revision {values['revision']}") from None

    def wake_workers(self) -> None:
        pass  # one machine: the process that queues a task wakes its own scheduler; the others poll

    async def earlier_task(self, flow_id: str, key: str) -> tuple[Task, str | None] | None:
        return await self._lite.read(lambda c: lite.earlier_task_work(c, flow_id, key))

    async def get_task(self, task_id: int, items: bool) -> Task | None:
        return await self._lite.read(lambda c: lite.task_work(c, task_id, items))

    async def claim_tasks(self, worker: str, lease_s: float, limit: int, pools: Sequence[str]) -> list[Task]:
        if not await self._lite.read(lambda c: lite.any_claimable_work(c, pools)):
            # The scheduler looks after every task end and every submit; most looks find nothing,
            # and a read is far cheaper than an empty write transaction.
            return []
        now = convert.utcnow()
        expires = now + timedelta(seconds=lease_s)
        return await self._lite.write(lambda c: lite.claim_many_work(c, limit, pools, now, worker, expires))

    async def claim_task(self, task_id: int, worker: str, lease_s: float) -> Task | None:
        now = convert.utcnow()
        expires = now + timedelta(seconds=lease_s)
        return await self._lite.write(lambda c: lite.claim_work(c, task_id, now, worker, expires))

    async def save_runs(self, runs: Sequence[tuple[int, NodeRun]], leases: Mapping[int, Lease],
                        events: Sequence[EventBatch] = ()) -> Fenced:
        params = await encoded(_CODEC, runs)
        fences = dict(leases)
        event_rows = rows.event_params(events)
        try:
            return await self._lite.write(lambda c: lite.upsert_runs_work(c, params, fences, event_rows),
                                          size=rows.params_size(params) + sum(len(row[rows.EVENTS_JSON]) for row in event_rows))
        except sqlite3.IntegrityError:
            raise errors.TaskNotFound("a node run names a task that does not exist") from None

    async def events_since(self, cursors: Mapping[int, int]) -> list[TaskEvent]:
        return await self._lite.read(lambda c: lite.events_since_work(c, list(cursors.items())))

    async def last_event_seq(self, task_id: int) -> int:
        return await self._lite.read(lambda c: lite.last_event_work(c, task_id))

    async def finish_task(self, task_id: int, outcome: TaskOutcome, runs: Sequence[NodeRun], lease: Lease | None,
                          events: Sequence[EventBatch] = ()) -> None:
        row = (*outcome_values(outcome, _CODEC), task_id)
        params = await encoded(_CODEC, [(task_id, run) for run in runs])
        event_rows = rows.event_params(events)
        size = len(row[4] or "") + rows.params_size(params) + sum(len(event[rows.EVENTS_JSON]) for event in event_rows)
        outcome_raised(await self._lite.write(lambda c: lite.finish_work(c, row, params, lease, event_rows), size=size),
                       task_id)

    async def park_task(self, task_id: int, pool: str, runs: Sequence[NodeRun], lease: Lease) -> None:
        params = await encoded(_CODEC, [(task_id, run) for run in runs])
        outcome = await self._lite.write(lambda c: lite.park_work(c, task_id, pool, params, lease),
                                         size=rows.params_size(params))
        outcome_raised(outcome, task_id)

    async def cancel_flag(self, task_id: int) -> bool | None:
        return await self._lite.read(lambda c: lite.cancel_flag_work(c, task_id))

    async def task_status(self, task_id: int) -> TaskStatus | None:
        found = await self._lite.read(lambda c: lite.task_status_work(c, task_id))
        return None if found is None else TaskStatus(found)

    async def renew_leases(self, worker: str, task_ids: Sequence[int], lease_s: float) -> set[int]:
        # The expiry is taken inside the transaction: a renewal that queued behind writers must not land expired.
        return await self._lite.write(
            lambda c: lite.renew_work(c, worker, task_ids, convert.utcnow() + timedelta(seconds=lease_s)))

    async def flow_revision(self, flow_id: str, revision: int | None) -> tuple[bool, int | None, datetime | None] | None:
        return await self._lite.read(lambda c: lite.flow_revision_work(c, flow_id, revision))

    async def flow_definition(self, flow_id: str, revision: int) -> dict[str, Any]:
        found = await self._lite.read(lambda c: lite.definition_work(c, flow_id, revision))
        if found == "no flow":
            raise errors.FlowNotFound(f"no flow has the id {flow_id!r}")
        if found == "no revision":
            raise errors.RevisionNotFound(f"flow {flow_id!r} has no revision {revision}")
        assert isinstance(found, dict)
        return found

    async def cache_get(self, key: str) -> tuple[str, float, datetime] | None:
        return await self._lite.read(lambda c: lite.cache_get_work(c, key))

    async def cache_touch(self, key: str, now: datetime) -> None:
        await self._lite.write(lambda c: lite.cache_touch_work(c, key, now))

    async def cache_put(self, row: CacheRow, evict_to: int | None) -> int | None:
        return await self._lite.write(lambda c: lite.cache_put_work(c, row, evict_to), size=row[4])

    async def cache_evict(self, max_bytes: int) -> int:
        return await self._lite.write(lambda c: lite.cache_evict_work(c, max_bytes))

    async def close(self) -> None:
        await self._lite.close()
