"""WorkerService: the Connect stream, the unary lease calls, and the Worker resource."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc

from conveyor.server.domain import leases, names
from conveyor.server.domain.leases import MAX_TAKE, Completion, Failure, Leases, Take
from conveyor.server.domain.task_logs import TaskLogs
from conveyor.server.domain.worker_commands import WorkerCommands
from conveyor.server.domain.workers import Workers, check_hello, worker_id
from conveyor.server.errors import ConveyorError, InvalidArgument, ResourceExhausted, Violations
from conveyor.server.render.convert import timestamp
from conveyor.server.render.tasks import task_message
from conveyor.server.rpc import lease_messages
from conveyor.server.rpc.connect import ConnectSession
from conveyor.server.rpc.report_acks import ack_message, batch_items
from conveyor.server.store.workers import WorkerRow
from conveyor.server.wakeups.notifier import Notifier
from conveyor.v1 import enums_pb2, task_pb2, worker_pb2, worker_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]

MAX_WAIT = 60.0
"""Longest LeaseTasks wait_timeout, in seconds."""
MAX_REPORTS = 1000
"""Most completes and fails one ReportTasks call takes (the batch limit)."""
_DEADLINE_MARGIN = 0.05
"""A long poll answers this long before the caller's deadline instead of missing it."""


def worker_message(row: WorkerRow) -> worker_pb2.Worker:
    return worker_pb2.Worker(
        name=row.name,
        state=(
            enums_pb2.WORKER_STATE_CONNECTED
            if row.connected
            else enums_pb2.WORKER_STATE_DISCONNECTED
        ),
        queues=row.queues,
        capacity=row.capacity,
        labels=row.labels,
        active_tasks=[f"projects/{row.project}/tasks/{t}" for t in row.active_tasks],
        connect_time=timestamp(row.connect_time),
        last_seen_time=timestamp(row.last_seen_time),
        sdk_version=row.sdk_version,
    )


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    def __init__(
        self,
        leases: Leases,
        workers: Workers,
        notifier: Notifier,
        stopping: asyncio.Event,
        commands: WorkerCommands | None = None,
        logs: TaskLogs | None = None,
    ) -> None:
        self._commands = commands
        self._logs = logs
        self._leases = leases
        self._workers = workers
        self._notifier = notifier
        self._stopping = stopping
        self._sleepers: set[asyncio.Event] = set()
        self._watcher: asyncio.Task[None] | None = None

    def _sleeper(self, event: asyncio.Event) -> None:
        """Registers an event to set when the server starts shutting down."""
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch_stopping(), name="worker-shutdown")
        self._sleepers.add(event)

    async def _watch_stopping(self) -> None:
        await self._stopping.wait()
        for event in list(self._sleepers):
            event.set()

    async def Connect(
        self, request_iterator: AsyncIterator[worker_pb2.ConnectRequest], context: Context
    ) -> AsyncIterator[worker_pb2.ConnectResponse]:
        try:
            first = await anext(request_iterator)
        except StopAsyncIteration:
            raise InvalidArgument.of("hello", "the stream ended before its Hello") from None
        if first.WhichOneof("message") != "hello":
            raise InvalidArgument.of("hello", "the first message of a stream must be a Hello")
        h = first.hello
        hello = check_hello(
            parent=h.parent,
            worker=h.worker,
            queues=list(h.queues),
            capacity=h.capacity,
            labels=dict(h.labels),
            sdk_version=h.sdk_version,
            lease_duration=(
                (h.lease_duration.seconds, h.lease_duration.nanos)
                if h.HasField("lease_duration")
                else None
            ),
        )
        session = ConnectSession(
            hello,
            leases=self._leases,
            workers=self._workers,
            notifier=self._notifier,
            stopping=self._stopping,
            commands=self._commands,
            logs=self._logs,
            batches=h.batches,
            ack_tasks=h.ack_tasks,
        )
        self._sleeper(session.wake)
        try:
            async for response in session.run(request_iterator, context.done):
                yield response
        finally:
            self._sleepers.discard(session.wake)

    async def LeaseTasks(
        self, request: worker_pb2.LeaseTasksRequest, context: Context
    ) -> worker_pb2.LeaseTasksResponse:
        v = Violations()
        project = ""
        try:
            project = names.parse(request.parent, "parent").project
        except InvalidArgument as error:
            v.items.extend(error.violations)
        worker = ""
        try:
            worker = worker_id(request.worker, project, "worker")
        except InvalidArgument as error:
            v.items.extend(error.violations)
        queues = tuple(dict.fromkeys(request.queues))
        leases.check_queues(v, list(request.queues), "queues")
        if not 0 <= request.max_tasks <= MAX_TAKE:
            v.add("max_tasks", f"must be between 1 and {MAX_TAKE} (0 means 1)")
        wait = 0.0
        if request.HasField("wait_timeout"):
            wait = request.wait_timeout.ToTimedelta().total_seconds()
            if not 0 <= wait <= MAX_WAIT:
                v.add("wait_timeout", f"must be between 0 and {int(MAX_WAIT)}s")
        lease_ms = None
        if request.HasField("lease_duration"):
            lease_ms = leases.lease_ms(
                v, request.lease_duration.seconds, request.lease_duration.nanos, "lease_duration"
            )
        v.raise_if_any()
        remaining = context.time_remaining()
        if remaining is not None:
            wait = max(0.0, min(wait, remaining - _DEADLINE_MARGIN))
        deadline = time.monotonic() + wait
        await self._workers.seen(project, worker, queues)
        take = Take(worker, queues, request.max_tasks or 1, lease_ms)
        event = asyncio.Event()
        # Subscribed before the first look, so a task made ready during it is not missed.
        with self._notifier.subscribe(project, queues, event) as waiter:
            self._sleeper(event)
            try:
                while True:
                    settled = await self._leases.settle(project, (), take)
                    rows, retry_after = settled.leased, settled.retry_after
                    left = deadline - time.monotonic()
                    if not rows and retry_after is not None and wait == 0:
                        raise ResourceExhausted(
                            "the ready tasks of these queues are rate limited",
                            reason="RATE_LIMITED",
                            metadata={"queues": ",".join(queues)},
                            retry_after=timedelta(seconds=retry_after),
                        )
                    if rows or left <= 0 or self._stopping.is_set():
                        response = worker_pb2.LeaseTasksResponse()
                        for row in rows:
                            lease_messages.fill_lease(response.leases.add(), row)
                        return response
                    # No notification says a token is back: look again when it is.
                    await waiter.wait(left if retry_after is None else min(left, retry_after))
            finally:
                self._sleepers.discard(event)

    async def ExtendLease(
        self, request: worker_pb2.ExtendLeaseRequest, context: Context
    ) -> worker_pb2.ExtendLeaseResponse:
        extension = await self._leases.extend_one(lease_messages.heartbeat(request))
        return lease_messages.extension_message(request.name, request.lease_id, extension)

    async def CompleteTask(
        self, request: worker_pb2.CompleteTaskRequest, context: Context
    ) -> task_pb2.Task:
        return task_message(await self._leases.complete(lease_messages.completion(request)))

    async def FailTask(
        self, request: worker_pb2.FailTaskRequest, context: Context
    ) -> task_pb2.Task:
        return task_message(await self._leases.fail(lease_messages.failure(request)))

    async def ReportTasks(
        self, request: worker_pb2.ReportTasksRequest, context: Context
    ) -> worker_pb2.ReportTasksResponse:
        project = names.parse(request.parent, "parent").project
        if len(request.completes) + len(request.fails) > MAX_REPORTS:
            raise InvalidArgument.of(
                "completes", f"at most {MAX_REPORTS} completes and fails together"
            )
        items = batch_items(request.completes, request.fails, project, "")
        reports = [i.value for i in items if isinstance(i.value, Completion | Failure)]
        outcomes = iter(await self._leases.report(project, reports))
        return worker_pb2.ReportTasksResponse(
            acks=[
                ack_message(
                    item,
                    item.value if isinstance(item.value, ConveyorError) else next(outcomes),
                    request.ack_tasks,
                )
                for item in items
            ]
        )

    async def ListWorkers(
        self, request: worker_pb2.ListWorkersRequest, context: Context
    ) -> worker_pb2.ListWorkersResponse:
        rows, token = await self._workers.list_page(
            request.parent, request.page_size, request.page_token
        )
        return worker_pb2.ListWorkersResponse(
            workers=[worker_message(r) for r in rows], next_page_token=token
        )

    async def GetWorker(
        self, request: worker_pb2.GetWorkerRequest, context: Context
    ) -> worker_pb2.Worker:
        return worker_message(await self._workers.get(request.name))
