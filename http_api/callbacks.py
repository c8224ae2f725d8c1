"""The callback dispatcher (SPEC §11): POSTs each ended task's JSON to its callback URLs, signed per
Standard Webhooks, from the durable outbox in :mod:`storage.callbacks`.

Every :data:`SWEEP_S` while idle (at once when :meth:`CallbackDispatcher.task_ended` wakes it) it
sweeps new tasks into the outbox, then claims due deliveries a batch at a time and sends them
concurrently through the process's SSRF-guarded HTTP session (``HTTP_ALLOW_PRIVATE`` and
``HTTP_ALLOW_HOSTS`` apply as to ``http_request``). A 2xx answer delivers; anything else (another
status, a timeout after :data:`ATTEMPT_TIMEOUT_S`, a refused or unreachable host) is a failed
attempt, retried after :data:`RETRY_DELAYS_S` (with jitter: each wait is 50-100 % of its entry)
until 24 h after the task ended, and then given up. Redirects are not followed: a receiver's
3xx is a failed attempt, so a signed body never travels to a URL nobody configured.

The signature is Standard Webhooks' exactly (the ``standardwebhooks`` package signs):
``webhook-signature: v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">``
under the ``whsec_`` secret, which never appears in a log, an error or an answer but
``POST /api/v1/webhook-secret``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import aiohttp
from standardwebhooks import Webhook
from yarl import URL

from graph_runtime import errors as flow_errors
from http_api.file_links import FileLinks
from http_api.views import FILE_MARK, task_view, with_file_links
from nodes import codec
from nodes import errors as node_errors
from nodes.builtin import ssrf
from nodes.builtin.http_client import shown_url, ssrf_cause
from nodes.errors import GraphRuntimeError
from storage import convert
from storage.callbacks import DELIVERED, GIVEN_UP, PENDING, CallbackStore, Due, Outcome
from storage.repository import Repository
from storage.secrets import SecretCipher

log = logging.getLogger(__name__)

SWEEP_S = 1.0
ATTEMPT_TIMEOUT_S = 10.0
RETRY_DELAYS_S: tuple[float, ...] = (4, 28, 120, 600, 1800, 3600, 7200, 14400, 21600)
"""The wait before retry 1, 2, …; the last repeats until the 24 h are up (a last try falls on the deadline).
With the jitter and the loop's tick (``SWEEP_S``), the first retry comes within 5 s, the second within 30 s."""
BATCH = 200
CONCURRENCY = 100
LEASE_S = 60.0  # a claim outlives an attempt (10 s) by far; past it, another process may retry the row
USER_AGENT = "graph-runtime-callbacks"
TASK_GONE = "the task no longer exists"


def retry_wait(attempts_made: int, delays: Sequence[float] = RETRY_DELAYS_S) -> float:
    """Seconds to wait after the ``attempts_made``-th attempt failed: the schedule's entry, less up to half."""
    base = delays[min(attempts_made, len(delays)) - 1]
    return base * random.uniform(0.5, 1.0)


class CallbackDispatcher:
    """Delivers the outbox; one per serving process, started and stopped with the services."""

    def __init__(self, store: CallbackStore, repo: Repository, cipher: SecretCipher, links: FileLinks,
                 http: aiohttp.ClientSession, *, sweep_s: float = SWEEP_S,
                 delays: Sequence[float] = RETRY_DELAYS_S) -> None:
        self.store = store
        self.repo = repo
        self.cipher = cipher
        self.links = links
        self.http = http
        self.sweep_s = sweep_s
        self.delays = tuple(delays)
        self.claim = f"{uuid.uuid4().hex}"  # this dispatcher's claims; another process's are other
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._gate = asyncio.Semaphore(CONCURRENCY)
        # Told each batch's attempts once they are made (the metrics count them by outcome).
        self.on_outcomes: list[Callable[[Sequence[Outcome]], None]] = []

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="callbacks")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop after the batch in flight (its attempts are recorded); what is left stays due in the outbox."""
        self._stop.set()
        self._wake.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace_s)
        except TimeoutError:  # a stuck database: the claims lapse after LEASE_S and are retried
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def task_ended(self, task_id: int) -> None:
        """A task ended in this process (the task-events hub says so): deliver now, not at the next sweep."""
        self.wake()

    def wake(self) -> None:
        """Sweep and deliver now (:meth:`task_ended` from a synchronous caller)."""
        self._wake.set()

    async def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                await self.run_once()
            except (GraphRuntimeError, OSError) as exc:  # the database is busy or away: the next tick retries
                log.warning("callback sweep failed, next in %.0f s: %s", self.sweep_s, exc,
                            extra={"action": "callbacks_failed"})
            except Exception:  # a bug: said loudly, and the outbox keeps being delivered
                log.exception("callback dispatcher error", extra={"action": "callbacks_failed"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.sweep_s)

    async def run_once(self) -> int:
        """A sweep if there is anything new, then every due delivery a batch at a time; returns how
        many attempts were made."""
        outlook = await self.store.look()
        swept = await self.store.sweep() if outlook.sweep else None
        if not outlook.due and not (swept and swept.due):
            return 0
        made = 0
        while not self._stop.is_set():
            due = await self.store.claim_due(self.claim, BATCH, LEASE_S)
            if not due:
                break
            made += await self._deliver(due)
            if len(due) < BATCH:
                break
        return made

    async def _deliver(self, due: list[Due]) -> int:
        secret = Webhook(await self.store.signing_secret(self.cipher))
        task_ids = list(dict.fromkeys(d.task_id for d in due))  # a task with several URLs is read once
        bodies = dict(zip(task_ids, await asyncio.gather(*(self._body(t) for t in task_ids)), strict=True))
        outcomes = await asyncio.gather(*(self._attempt(secret, d, bodies[d.task_id]) for d in due))
        for observe in self.on_outcomes:
            observe(outcomes)
        return await self.store.record(self.claim, outcomes)

    async def _body(self, task_id: int) -> bytes | None:
        """The task's JSON as ``GET /api/v1/task/{id}`` answers it (file values with signed links)."""
        try:
            task = await self.repo.get_task(task_id)
        except flow_errors.TaskNotFound:
            return None
        view = task_view(task)
        data = codec.dumps(view)
        if FILE_MARK in data:
            data = codec.dumps(with_file_links(view, self.links.url_for))
        return data

    async def _attempt(self, secret: Webhook, due: Due, body: bytes | None) -> Outcome:
        number = due.attempts + 1
        started, at = time.monotonic(), convert.utcnow()
        status: int | None = None
        if body is None:
            error: str | None = TASK_GONE
        else:
            async with self._gate:
                status, error = await self._post(secret, due, body, at)
        duration = time.monotonic() - started
        if error is None:
            return Outcome(due.id, number, at, duration, status, None, DELIVERED, None)
        log.info("callback attempt %d to %s failed: %s", number, shown_url(URL(due.url)), error,
                 extra={"action": "callback_failed", "task_id": due.task_id})
        return self._failed(due, number, at, duration, status, error)

    def _failed(self, due: Due, number: int, at: datetime, duration: float, status: int | None,
                error: str) -> Outcome:
        now = convert.utcnow()
        if error == TASK_GONE or now >= due.deadline:
            return Outcome(due.id, number, at, duration, status, error, GIVEN_UP, None)
        next_at = min(now + timedelta(seconds=retry_wait(number, self.delays)), due.deadline)
        return Outcome(due.id, number, at, duration, status, error, PENDING, next_at)

    async def _post(self, secret: Webhook, due: Due, body: bytes, at: datetime) -> tuple[int | None, str | None]:
        """``(status code, error)`` of one POST; error None on a 2xx."""
        url = URL(due.url)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "webhook-id": due.webhook_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": secret.sign(due.webhook_id, at, body.decode()),
        }
        try:
            ssrf.check_session_url(self.http, url, allow_private=False)
            async with self.http.post(url, data=body, headers=headers, allow_redirects=False,
                                      timeout=aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT_S)) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return resp.status, None
                redirect = " (redirects are not followed)" if 300 <= resp.status < 400 else ""
                return resp.status, f"answered {resp.status}{redirect}"
        except node_errors.SsrfBlocked as exc:
            return None, _refused(exc)
        except TimeoutError:
            return None, f"timeout: no answer within {ATTEMPT_TIMEOUT_S:.0f} s"
        except aiohttp.ClientError as exc:
            blocked = ssrf_cause(exc)
            return None, _refused(blocked) if blocked is not None else f"connection_error: {type(exc).__name__}: {exc}"[:500]


def _refused(exc: node_errors.SsrfBlocked) -> str:
    return f"ssrf_blocked: {exc.message} (HTTP_ALLOW_HOSTS or HTTP_ALLOW_PRIVATE let it through)"

