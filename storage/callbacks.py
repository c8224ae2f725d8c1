"""Callbacks (SPEC §11): the durable outbox of signed task-end deliveries, and the signing secret.

One ``callback_delivery`` row per (task, URL), each URL a task's ``callback_url`` or its flow
revision's ``on_end``. A row is made ``waiting`` when the sweep first sees the task (whatever its
status), and turns ``pending`` (due now, given up 24 h later) once the task has ended; a dispatcher
claims due rows, POSTs, and records each attempt in ``callback_attempt``: the row ends
``delivered`` or ``given_up``, or stays ``pending`` with its next retry time. Everything is in
the database, so a restart between a failed attempt and its retry loses nothing.

Which tasks are new is read by task id after a stored watermark (``callback_state.seen_task_id``),
a primary-key range: a sweep costs the tasks created since the last one, not the history. A
PostgreSQL sequence can hand out an id that commits after a higher one was seen, so there the
last :data:`LATE_COMMIT_IDS` ids are read again for :data:`LATE_COMMIT_S` after new ids appear
(rows are keyed by ``webhook_id``, so a second sighting inserts nothing). SQLite's writers are
serialised, so its ids commit in order.

Several processes share the database: the sweep runs in one process at a time (the state row is
locked ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's write transaction is exclusive), and a
due row is claimed by one dispatcher at a time (an ``UPDATE`` of rows selected ``FOR UPDATE SKIP
LOCKED``, with a lease that lets another process retry it if the claimer dies mid-attempt).
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from graph_runtime.models import TaskStatus
from nodes import codec
from storage import convert
from storage.repository_base import RepositoryBase
from storage.secrets import SecretCipher
from storage.tables import BigId, UTCDateTime, metadata
from storage.tables import flow_revision as flow_revision_t
from storage.tables import task as task_t

WAITING, PENDING, DELIVERED, GIVEN_UP = "waiting", "pending", "delivered", "given_up"
"""A delivery's states: its task has not ended; due (now or at ``next_at``); done; retried for 24 h in vain."""
RETRY_WINDOW = timedelta(hours=24)
LATE_COMMIT_IDS = 1000
LATE_COMMIT_S = 10.0
_SCAN_PAGE = 1000
_ENDED = [status.value for status in TaskStatus if status.ended]
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # Standard Webhooks: a secret of 24 to 64 random bytes
# The signing secret is sealed by the secrets cipher under a name no secret can have (a secret's
# name is letters, digits and underscores), so it cannot be opened as, or swapped with, a secret.
_SEAL_NAME, _SEAL_MODE = "webhook-signing-secret", "callbacks"

callback_delivery = sa.Table(
    "callback_delivery", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("task_id", BigId, sa.ForeignKey("task.id", ondelete="CASCADE"), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    # Stable per task and URL across retries (Standard Webhooks' idempotency key for receivers);
    # unique, it is also what makes a task's URL one row however often the sweep sees the task.
    sa.Column("webhook_id", sa.String(64), nullable=False, unique=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_at", UTCDateTime, nullable=True),
    sa.Column("deadline", UTCDateTime, nullable=True),
    sa.Column("claim", sa.String(64), nullable=True),
    sa.Column("claimed_until", UTCDateTime, nullable=True),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Index("ix_callback_delivery_state_next_at", "state", "next_at"),
    sa.Index("ix_callback_delivery_task_id", "task_id"),
)

callback_attempt = sa.Table(
    "callback_attempt", metadata,
    sa.Column("delivery_id", BigId, sa.ForeignKey("callback_delivery.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
)

callback_state = sa.Table(
    "callback_state", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),  # one row, id 1
    sa.Column("seen_task_id", BigId, nullable=False),
    sa.Column("secret_nonce", sa.LargeBinary, nullable=True),
    sa.Column("secret_ciphertext", sa.LargeBinary, nullable=True),
    sa.Column("secret_created", UTCDateTime, nullable=True),
    sa.Column("secret_shown", sa.Boolean, nullable=False),
)


def webhook_id(task_id: int, url: str) -> str:
    """The delivery's ``webhook-id``: the same for every attempt of this task to this URL."""
    return f"msg_{task_id}_{hashlib.sha256(url.encode()).hexdigest()[:24]}"


@dataclass(frozen=True)
class Due:
    """A claimed delivery: what one attempt needs."""

    id: int
    task_id: int
    url: str
    webhook_id: str
    attempts: int  # made before this one
    deadline: datetime


@dataclass(frozen=True)
class Outcome:
    """One attempt's result, and what follows: ``state`` and, while ``pending``, ``next_at``."""

    delivery_id: int
    number: int
    at: datetime
    duration_s: float
    status_code: int | None
    error: str | None
    state: str
    next_at: datetime | None


@dataclass(frozen=True)
class Attempt:
    number: int
    at: datetime
    duration_s: float
    status_code: int | None
    error: str | None


@dataclass(frozen=True)
class Delivery:
    """A delivery as listed (``GET /task/{id}/callbacks``)."""

    url: str
    webhook_id: str
    state: str
    next_at: datetime | None
    deadline: datetime | None
    attempts: tuple[Attempt, ...]


@dataclass(frozen=True)
class Outlook:
    sweep: bool  # new tasks, or rows of tasks that ended since
    due: bool  # deliveries due now


@dataclass(frozen=True)
class SweepReport:
    seen: int  # tasks read
    added: int  # delivery rows made
    due: int  # rows of ended tasks made due


class CallbackStore(RepositoryBase):
    """The outbox's rows and the signing secret, on either engine (SQLAlchemy Core: not a hot path)."""

    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self._on_end: dict[tuple[str, int], tuple[str, ...]] = {}  # flow revisions are immutable
        self._new_ids_at = float("-inf")  # monotonic time new task ids last appeared (PostgreSQL's rescan)

    # -- the signing secret ---------------------------------------------------------------------

    async def signing_secret(self, cipher: SecretCipher) -> str:
        """The ``whsec_…`` secret deliveries are signed with, made (unshown) if there is none yet."""
        async with self._read() as conn:
            row = (await conn.execute(sa.select(callback_state).where(callback_state.c.id == 1))).first()
        if row is not None and row.secret_ciphertext is not None:
            return cipher.open(_SEAL_NAME, _SEAL_MODE, row.secret_nonce, row.secret_ciphertext)
        async with self._write() as conn:  # none yet: made now, shown by the first reveal
            row = (await conn.execute(self._locked_state())).first()
            if row is not None and row.secret_ciphertext is not None:  # another process made it meanwhile
                return cipher.open(_SEAL_NAME, _SEAL_MODE, row.secret_nonce, row.secret_ciphertext)
            return await self._write_secret(conn, cipher, shown=False)

    async def reveal_secret(self, cipher: SecretCipher) -> str:
        """For ``POST /webhook-secret`` and the CLI: the secret if it was never shown, else a new one.

        So the first call shows the secret the deliveries so far were signed with, and every later
        call rotates it (the old one stops being used at once) and shows the new one.
        """
        async with self._write() as conn:
            row = (await conn.execute(self._locked_state())).first()
            if row is not None and row.secret_ciphertext is not None and not row.secret_shown:
                await conn.execute(sa.update(callback_state).where(callback_state.c.id == 1).values(secret_shown=True))
                return cipher.open(_SEAL_NAME, _SEAL_MODE, row.secret_nonce, row.secret_ciphertext)
            return await self._write_secret(conn, cipher, shown=True)

    async def _write_secret(self, conn: Any, cipher: SecretCipher, *, shown: bool) -> str:
        secret = SECRET_PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode()
        nonce, sealed = cipher.seal(_SEAL_NAME, _SEAL_MODE, secret)
        values = {"secret_nonce": nonce, "secret_ciphertext": sealed, "secret_created": convert.utcnow(),
                  "secret_shown": shown}
        done = await conn.execute(sa.update(callback_state).where(callback_state.c.id == 1).values(**values))
        if not done.rowcount:  # the migration made the row; a database without it starts from id 0
            await conn.execute(sa.insert(callback_state).values(id=1, seen_task_id=0, **values))
        return secret

    def _locked_state(self) -> sa.Select[Any]:
        return sa.select(callback_state).where(callback_state.c.id == 1).with_for_update()

    # -- the sweep: rows for new tasks, due once their task ended ---------------------------------

    async def look(self) -> Outlook:
        """Whether a sweep or a claim has anything to do: one read (an idle server makes one a second)."""
        now = convert.utcnow()
        async with self._read() as conn:
            seen, newest, waiting_ended, due = (await conn.execute(sa.select(
                sa.select(callback_state.c.seen_task_id).where(callback_state.c.id == 1).scalar_subquery(),
                sa.select(sa.func.max(task_t.c.id)).scalar_subquery(),
                sa.exists(self._waiting_ended()), sa.exists(self._due(now))))).one()
        rescan = self._dialect == "postgresql" and time.monotonic() - self._new_ids_at < LATE_COMMIT_S
        return Outlook(sweep=(newest or 0) > (seen or 0) or rescan or bool(waiting_ended), due=bool(due))

    async def sweep(self) -> SweepReport:
        """Make rows for the tasks created since the watermark that carry callbacks, and make the
        rows of ended tasks due. Skips when another process is sweeping."""
        rescan = self._dialect == "postgresql" and time.monotonic() - self._new_ids_at < LATE_COMMIT_S
        async with self._write() as conn:
            # One sweeper at a time: another process holding the row is sweeping now.
            state = (await conn.execute(self._locked_state().with_for_update(skip_locked=True))).first()
            if state is None:
                if self._dialect == "postgresql":
                    return SweepReport(0, 0, 0)  # locked (or never made: the migration makes it)
                await conn.execute(sa.insert(callback_state).values(id=1, seen_task_id=0, secret_shown=False))
                seen = 0
            else:
                seen = state.seen_task_id
            after = max(0, seen - LATE_COMMIT_IDS) if rescan else seen
            read, rows, top = await self._new_rows(conn, after)
            if top > seen:
                self._new_ids_at = time.monotonic()
                await conn.execute(sa.update(callback_state).where(callback_state.c.id == 1).values(seen_task_id=top))
            if rows:
                await conn.execute(self._insert(callback_delivery).on_conflict_do_nothing(
                    index_elements=[callback_delivery.c.webhook_id]), rows)
            now = convert.utcnow()
            made_due = await conn.execute(
                sa.update(callback_delivery)
                .where(callback_delivery.c.id.in_(self._waiting_ended().scalar_subquery()))
                .values(state=PENDING, next_at=now, deadline=now + RETRY_WINDOW))
        return SweepReport(read, len(rows), made_due.rowcount or 0)

    def _waiting_ended(self) -> sa.Select[Any]:
        return (sa.select(callback_delivery.c.id)
                .join(task_t, task_t.c.id == callback_delivery.c.task_id)
                .where(callback_delivery.c.state == WAITING, task_t.c.status.in_(_ENDED)))

    async def _new_rows(self, conn: Any, after: int) -> tuple[int, list[dict[str, Any]], int]:
        """``(tasks read, delivery rows to insert, highest id read)`` for the tasks after id ``after``."""
        flagged = sa.cast(task_t.c.data, sa.Text).like('%"callback_url"%')
        read, top, rows = 0, after, []
        now = convert.utcnow()
        while True:
            page = (await conn.execute(
                sa.select(task_t.c.id, task_t.c.flow_id, task_t.c.revision, flagged.label("flagged"))
                .where(task_t.c.id > top).order_by(task_t.c.id).limit(_SCAN_PAGE))).all()
            if not page:
                break
            read += len(page)
            top = page[-1].id
            await self._learn_on_end(conn, {(row.flow_id, row.revision) for row in page})
            asked = await self._callback_urls(conn, [row.id for row in page if row.flagged])
            for row in page:
                urls = dict.fromkeys([*([asked[row.id]] if row.id in asked else []),
                                      *self._on_end[(row.flow_id, row.revision)]])
                rows += [{"task_id": row.id, "url": url, "webhook_id": webhook_id(row.id, url), "state": WAITING,
                          "attempts": 0, "created": now} for url in urls]
            if len(page) < _SCAN_PAGE:
                break
        return read, rows, top

    async def _learn_on_end(self, conn: Any, revisions: set[tuple[str, int]]) -> None:
        unknown = revisions - self._on_end.keys()
        if not unknown:
            return
        query = sa.select(flow_revision_t.c.flow_id, flow_revision_t.c.revision, flow_revision_t.c.definition).where(
            sa.tuple_(flow_revision_t.c.flow_id, flow_revision_t.c.revision).in_(sorted(unknown)))
        for row in (await conn.execute(query)).all():
            definition = row.definition if isinstance(row.definition, dict) else codec.loads(row.definition)
            self._on_end[(row.flow_id, row.revision)] = tuple(str(hook["url"]) for hook in definition.get("on_end") or ())
        for missing in unknown - self._on_end.keys():  # a revision being created: none yet, ask again later
            self._on_end.setdefault(missing, ())

    async def _callback_urls(self, conn: Any, task_ids: Sequence[int]) -> dict[int, str]:
        if not task_ids:
            return {}
        rows = (await conn.execute(sa.select(task_t.c.id, task_t.c.data).where(task_t.c.id.in_(task_ids)))).all()
        found = {}
        for row in rows:
            data = row.data if isinstance(row.data, dict) else codec.loads(row.data)
            if isinstance(data.get("callback_url"), str):
                found[row.id] = data["callback_url"]
        return found

    # -- claims and attempts ----------------------------------------------------------------------

    def _due(self, now: datetime) -> sa.Select[Any]:
        return (sa.select(callback_delivery.c.id)
                .where(callback_delivery.c.state == PENDING, callback_delivery.c.next_at <= now,
                       sa.or_(callback_delivery.c.claimed_until.is_(None), callback_delivery.c.claimed_until < now)))

    async def claim_due(self, claim: str, limit: int, lease_s: float) -> list[Due]:
        """Up to ``limit`` due deliveries, held by ``claim`` for ``lease_s`` (no other dispatcher takes them)."""
        now = convert.utcnow()
        due = self._due(now).order_by(callback_delivery.c.next_at).limit(limit).with_for_update(skip_locked=True)
        d = callback_delivery
        async with self._write() as conn:
            rows = (await conn.execute(
                sa.update(d).where(d.c.id.in_(due.scalar_subquery()))
                .values(claim=claim, claimed_until=now + timedelta(seconds=lease_s))
                .returning(d.c.id, d.c.task_id, d.c.url, d.c.webhook_id, d.c.attempts, d.c.deadline))).all()
        return [Due(r.id, r.task_id, r.url, r.webhook_id, r.attempts, r.deadline) for r in rows]

    async def record(self, claim: str, outcomes: Sequence[Outcome]) -> int:
        """Write the attempts made under ``claim`` and what follows each; returns how many were recorded.

        An attempt whose claim was lost (its lease ran out and another dispatcher took the row) is
        not recorded: the other one's attempt is.
        """
        if not outcomes:
            return 0
        d = callback_delivery
        update = (sa.update(d).where(d.c.id == sa.bindparam("b_id"), d.c.claim == claim)
                  .values(attempts=sa.bindparam("b_number"), state=sa.bindparam("b_state"),
                          next_at=sa.bindparam("b_next_at"), claim=None, claimed_until=None))
        async with self._write() as conn:
            held = set((await conn.execute(sa.select(d.c.id).where(
                d.c.id.in_([o.delivery_id for o in outcomes]), d.c.claim == claim))).scalars())
            kept = [o for o in outcomes if o.delivery_id in held]
            if not kept:
                return 0
            await conn.execute(sa.insert(callback_attempt), [
                {"delivery_id": o.delivery_id, "number": o.number, "at": o.at, "duration_s": o.duration_s,
                 "status_code": o.status_code, "error": o.error} for o in kept])
            await conn.execute(update, [{"b_id": o.delivery_id, "b_number": o.number, "b_state": o.state,
                                         "b_next_at": o.next_at} for o in kept])
        return len(kept)

    async def release(self, claim: str, delivery_ids: Sequence[int]) -> None:
        """Give claimed rows back unattempted (shutting down): due again at once, elsewhere or after a restart."""
        if delivery_ids:
            async with self._write() as conn:
                await conn.execute(sa.update(callback_delivery).where(
                    callback_delivery.c.id.in_(delivery_ids), callback_delivery.c.claim == claim)
                    .values(claim=None, claimed_until=None))

    async def deliveries(self, task_id: int) -> list[Delivery]:
        """The task's deliveries with their attempts, in the order they were made."""
        d, a = callback_delivery, callback_attempt
        async with self._read() as conn:
            rows = (await conn.execute(sa.select(d).where(d.c.task_id == task_id).order_by(d.c.id))).all()
            attempts = (await conn.execute(sa.select(a).where(a.c.delivery_id.in_([r.id for r in rows]))
                                           .order_by(a.c.delivery_id, a.c.number))).all() if rows else []
        by_delivery: dict[int, list[Attempt]] = {}
        for row in attempts:
            by_delivery.setdefault(row.delivery_id, []).append(
                Attempt(row.number, row.at, row.duration_s, row.status_code, row.error))
        return [Delivery(r.url, r.webhook_id, r.state, r.next_at, r.deadline, tuple(by_delivery.get(r.id, ())))
                for r in rows]
