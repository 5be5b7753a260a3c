"""Leases: handing ready tasks to workers and taking their reports, fenced by lease_id.

A lease is an attempt: leasing a QUEUED task makes it RUNNING with `attempt + 1`, a new
`lease_id` (the fencing token) and a deadline of now + lease duration by the database
clock. Every report (complete, fail, heartbeat) must carry the current lease_id; one
that does not (the lease expired and the task moved on, or it never was the task's)
is refused with FAILED_PRECONDITION and changes nothing. Retrying the very report that
was applied (same lease, same outcome) answers with the task instead, so a worker may
retry a report whose answer it lost.

A failure with attempts left (and `retryable`) goes back to SCHEDULED after the task's
backoff; the formula lives in SQL (`conveyor_backoff_ms`) because the lease reaper
applies it too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain import metrics
from conveyor.server.domain.lease_requests import (
    MAX_LEASE_MS,
    MIN_LEASE_MS,
    TaskRef,
    check_queues,
    lease_ms,
    lease_token,
    task_ref,
)
from conveyor.server.errors import (
    ConveyorError,
    FailedPrecondition,
    NotFound,
    PreconditionViolation,
    Violations,
)
from conveyor.server.store import leases as lease_store
from conveyor.server.store.task_rows import TaskRow

__all__ = [
    "MAX_LEASE_MS",
    "MAX_TAKE",
    "MIN_LEASE_MS",
    "Completion",
    "Extension",
    "Failure",
    "Heartbeat",
    "Leases",
    "Report",
    "Take",
    "TaskRef",
    "check_queues",
    "lease_ms",
    "lease_token",
    "stale_lease",
    "task_ref",
]

MAX_TAKE = 100
"""Most tasks one lease call (or one push on a stream) hands out."""
MAX_SUMMARY = 4096
MAX_RESUME_TOKEN = 64 * 1024
MAX_RESULT_BYTES = 1024 * 1024
MAX_ERROR_TYPE = 200
MAX_ERROR_MESSAGE = 64 * 1024


def stale_lease(ref: TaskRef, lease_id: uuid.UUID, state: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"lease {lease_id} is not the current lease of {ref.name}",
        reason="LEASE_STALE",
        metadata={"task": ref.name, "lease_id": str(lease_id), "state": state},
        violations=[
            PreconditionViolation(
                "LEASE", ref.name, "the lease expired or was never this task's; the task moved on"
            )
        ],
    )


def _not_found(ref: TaskRef) -> NotFound:
    return NotFound(f"{ref.name} does not exist", metadata={"resource": ref.name})


@dataclass(frozen=True, slots=True)
class Completion:
    """A success report: the handler's result (JSON text, or None), summary, resume token."""

    task: TaskRef
    lease_id: uuid.UUID
    result_json: str | None = None
    summary: str = ""
    resume_token: str = ""
    """Empty keeps the task's token."""

    @classmethod
    def check(
        cls,
        task: TaskRef,
        lease_id: uuid.UUID,
        result_json: str | None,
        summary: str,
        resume_token: str,
        prefix: str = "",
    ) -> Completion:
        too_large = result_json is not None and len(result_json) > MAX_RESULT_BYTES
        # Violations only when one is found: most reports have none.
        if too_large or len(summary) > MAX_SUMMARY or len(resume_token) > MAX_RESUME_TOKEN:
            v = Violations()
            if too_large:
                v.add(f"{prefix}result", f"must be at most {MAX_RESULT_BYTES} bytes as JSON")
            if len(summary) > MAX_SUMMARY:
                v.add(f"{prefix}summary", f"must be at most {MAX_SUMMARY} characters")
            if len(resume_token) > MAX_RESUME_TOKEN:
                v.add(f"{prefix}resume_token", f"must be at most {MAX_RESUME_TOKEN} characters")
            v.raise_if_any()
        return cls(task, lease_id, result_json, summary, resume_token)


@dataclass(frozen=True, slots=True)
class Failure:
    """A failure report; `error` is the TaskError as JSON ({type, message, details, retryable})."""

    task: TaskRef
    lease_id: uuid.UUID
    error: dict[str, Any]
    retryable: bool

    @classmethod
    def check(
        cls,
        task: TaskRef,
        lease_id: uuid.UUID,
        error: dict[str, Any],
        retryable: bool,
        prefix: str = "",
    ) -> Failure:
        v = Violations()
        if len(str(error.get("type", ""))) > MAX_ERROR_TYPE:
            v.add(f"{prefix}error.type", f"must be at most {MAX_ERROR_TYPE} characters")
        if len(str(error.get("message", ""))) > MAX_ERROR_MESSAGE:
            v.add(f"{prefix}error.message", f"must be at most {MAX_ERROR_MESSAGE} characters")
        v.raise_if_any()
        return cls(task, lease_id, error, retryable)


Report = Completion | Failure


@dataclass(frozen=True, slots=True)
class Heartbeat:
    task: TaskRef
    lease_id: uuid.UUID
    lease_ms: int | None = None
    """None extends by the task's lease_duration."""
    progress: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Extension:
    """The answer to a heartbeat whose lease is current."""

    lease_expire_time: datetime
    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class Take:
    """What a worker asks for: up to `limit` ready tasks of `queues`."""

    worker: str
    queues: tuple[str, ...]
    limit: int
    lease_ms: int | None = None
    """None leases each task for its own lease_duration."""


@dataclass(frozen=True, slots=True)
class Settled:
    outcomes: list[TaskRow | ConveyorError]
    """Per report, in order: the task after it, or why it was refused."""
    leased: list[TaskRow]
    """The tasks leased in the same commit, in lease order."""
    retry_after: float | None = None
    """Fewer tasks than asked for were leased and a rate limit held back a ready one:
    seconds until its next token (also when some were leased: no notification says the
    token is back, so a stream with room left must look again by itself)."""


class Leases:
    """Leasing and reports over the pool; each call is one statement (plus a lookup when a
    report is refused). Flow control (max_concurrency, concurrency keys, rate limits) is
    decided in that statement, under advisory locks: store/migrations/0009."""

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        *,
        rand: Callable[[], float] | None = None,
        on_retry: Callable[[], None] | None = None,
    ) -> None:
        self._pool = pool
        # None: the database draws the jitter per task; tests inject a fixed draw.
        self._rand = rand
        # Tells the promoter a retry was scheduled, perhaps sooner than it meant to look.
        self._on_retry = on_retry

    async def take(self, project: str, take: Take) -> list[TaskRow]:
        """Leases up to take.limit ready tasks (none when nothing is ready)."""
        return (await self.settle(project, (), take)).leased

    async def settle(
        self,
        project: str,
        reports: Sequence[Report],
        take: Take | None = None,
        *,
        ended_tasks: bool = True,
    ) -> Settled:
        """Applies reports of one project, then leases for `take`, in one commit.

        Task ids in `reports` must be distinct. Reports that match no current lease are
        looked up afterwards to tell a stale lease (FAILED_PRECONDITION), a replay of the
        report that was applied (the task), and an unknown task (NOT_FOUND) apart.
        `ended_tasks=False` is for a caller that answers an applied report without its
        task: the row of an applied report then holds only the task's name, queue, state,
        attempt and times (store/leases.py), the others None.
        """
        completes = [
            lease_store.CompleteRow(
                r.task.id, r.lease_id, r.result_json, r.summary, r.resume_token or None
            )
            for r in reports
            if isinstance(r, Completion)
        ]
        fails = [
            lease_store.FailRow(r.task.id, r.lease_id, r.error, r.retryable)
            for r in reports
            if isinstance(r, Failure)
        ]
        take_row = (
            lease_store.TakeRow(take.worker, take.queues, take.limit, take.lease_ms)
            if take is not None and take.limit > 0
            else None
        )
        async with self._pool.connection() as conn:
            settled = await lease_store.settle(
                conn,
                project=project,
                completes=completes,
                fails=fails,
                take=take_row,
                rand=self._rand() if self._rand is not None else None,
                ended_rows=ended_tasks,
            )
            outcomes: list[TaskRow | ConveyorError | None] = []
            missed: list[int] = []
            for i, report in enumerate(reports):
                applied = (
                    settled.succeeded if isinstance(report, Completion) else settled.failed
                ).get(report.task.id)
                outcomes.append(applied)
                if applied is None:
                    missed.append(i)
            if missed:
                found = await lease_store.lookup(
                    conn, project, [(reports[i].task.id, reports[i].lease_id) for i in missed]
                )
                for i, lookup in zip(missed, found, strict=True):
                    outcomes[i] = _refusal(reports[i], lookup)
        leased = settled.leased
        metrics.count_settled(leased, [*settled.succeeded.values(), *settled.failed.values()])
        retry_after = settled.rate_wait if take is not None and len(leased) < take.limit else None
        if self._on_retry is not None and any(
            row.state == "SCHEDULED" for row in settled.failed.values()
        ):
            self._on_retry()
        return Settled([o for o in outcomes if o is not None], leased, retry_after)

    async def report(
        self, project: str, reports: Sequence[Report]
    ) -> list[TaskRow | ConveyorError]:
        """Settles reports in order; a task reported again starts the next statement."""
        outcomes: list[TaskRow | ConveyorError] = []
        group: dict[uuid.UUID, Report] = {}
        for r in [*reports, None]:
            if r is None or r.task.id in group:
                if group:
                    outcomes.extend((await self.settle(project, list(group.values()))).outcomes)
                group = {}
            if r is not None:
                group[r.task.id] = r
        return outcomes

    async def complete(self, report: Completion) -> TaskRow:
        return _single(await self.settle(report.task.project, [report]))

    async def fail(self, report: Failure) -> TaskRow:
        return _single(await self.settle(report.task.project, [report]))

    async def extend(
        self, project: str, beats: Sequence[Heartbeat]
    ) -> list[Extension | ConveyorError]:
        """Extends each lease that is current; the others get why not (stale, not found)."""
        async with self._pool.connection() as conn:
            extended = await lease_store.extend(
                conn,
                project,
                [(b.task.id, b.lease_id, b.lease_ms, b.progress) for b in beats],
            )
            results: list[Extension | ConveyorError | None] = []
            missed: list[int] = []
            for i, beat in enumerate(beats):
                row = extended.get(beat.task.id)
                if row is not None and row.lease_id == beat.lease_id:
                    results.append(Extension(row.lease_expire_time, row.cancel_requested))
                else:
                    results.append(None)
                    missed.append(i)
            if missed:
                found = await lease_store.lookup(
                    conn, project, [(beats[i].task.id, beats[i].lease_id) for i in missed]
                )
                for i, lookup in zip(missed, found, strict=True):
                    ref = beats[i].task
                    results[i] = (
                        _not_found(ref)
                        if lookup.task is None
                        else stale_lease(ref, beats[i].lease_id, lookup.task.state)
                    )
        return [r for r in results if r is not None]

    async def extend_one(self, beat: Heartbeat) -> Extension:
        (result,) = await self.extend(beat.task.project, [beat])
        if isinstance(result, ConveyorError):
            raise result
        return result


def _refusal(report: Report, lookup: lease_store.Lookup) -> TaskRow | ConveyorError:
    if lookup.task is None:
        return _not_found(report.task)
    replayed = "SUCCEEDED" if isinstance(report, Completion) else "FAILED"
    if lookup.attempt_outcome == replayed:
        # The same report was applied before and its answer lost: answer it again.
        return lookup.task
    return stale_lease(report.task, report.lease_id, lookup.task.state)


def _single(settled: Settled) -> TaskRow:
    (outcome,) = settled.outcomes
    if isinstance(outcome, ConveyorError):
        raise outcome
    return outcome
