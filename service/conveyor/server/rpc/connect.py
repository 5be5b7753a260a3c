"""One worker's Connect stream: credit-based pushing of leases, heartbeats, reports.

Protocol (server side):

- The first message is a Hello; the answer is a Welcome. The window starts at 0.
- Credit{tasks: n} adds n to the window (negative shrinks it, never below 0). While the
  worker holds fewer unreported assignments than the window, the server leases ready
  tasks of the Hello's queues and pushes them (`assignment`). It learns that tasks are
  ready from NOTIFY (events.Notifier), never by spinning.
- complete / fail are answered by a ReportAck each, in the order they were sent; a
  ReportBatch (`reports`) by one ReportAckBatch, each item fenced and answered on its
  own (rpc/report_acks.py). A report of a task pushed on this stream frees its slot,
  whether it was accepted or refused as stale; when that leaves room, the next tasks
  are leased in the same statement (one round trip, one commit) and pushed right
  after the acks. A Hello with `batches` gets its tasks as LeaseBatch messages.
- logs (a TaskLogBatch) are not answered: they are stored, fenced by lease item by item,
  before the messages after them are handled (domain/task_logs.py).
- heartbeat is answered by an ExtendLeaseResponse carrying name and lease_id. A lease
  that is no longer current (or a bad heartbeat) is answered without lease_expire_time
  and with cancel_requested set: the handler should stop; its report will be refused.
- Worker control: commands addressed to this worker (CommandService) are pushed as
  `command` when the stream opens (also those DISPATCHED to an earlier stream and not
  acknowledged) and whenever a NOTIFY '<project>/@<worker>' (or the notifier's
  periodic backstop) says one was issued; each goes DISPATCHED, and the worker's
  command_ack makes it SUCCEEDED or FAILED.

Messages that arrive while the server is busy are handled together: consecutive reports
settle in one statement, consecutive heartbeats extend in one statement. The stream
ends when the worker half-closes (after every report already sent is answered), when the
server shuts down, or with INVALID_ARGUMENT (MALFORMED_REQUEST) when a message cannot be
decoded (after the messages before it are answered); the worker is then marked
disconnected and its tasks stay leased until they are reported (after a reconnect) or
their leases expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

from google.protobuf import struct_pb2

from conveyor.client._json import from_struct
from conveyor.server.domain.leases import MAX_TAKE, Heartbeat, Leases, Report, Take
from conveyor.server.domain.task_logs import TaskLogs
from conveyor.server.domain.worker_commands import WorkerCommands
from conveyor.server.domain.workers import TOUCH_INTERVAL, Hello, Workers
from conveyor.server.errors import ConveyorError, InvalidArgument
from conveyor.server.logging import get_logger
from conveyor.server.render.convert import duration
from conveyor.server.rpc import lease_messages
from conveyor.server.rpc.report_acks import (
    Item,
    Pushed,
    Replies,
    assignment,
    batch_items,
    lease_batch,
    parse_item,
)
from conveyor.server.store.commands import Dispatched
from conveyor.server.wakeups.notifier import Notifier
from conveyor.v1 import enums_pb2, worker_pb2

__all__ = ["ConnectSession", "heartbeat_interval"]

_log = get_logger(__name__)

DEFAULT_LEASE_MS = 30_000
"""The lease the Welcome's heartbeat interval assumes when the Hello sets none."""


def heartbeat_interval(lease_ms: int | None) -> timedelta:
    """A third of the lease: two heartbeats may be lost before it expires."""
    return timedelta(milliseconds=(lease_ms or DEFAULT_LEASE_MS) / 3)


def _command_message(hello: Hello, command: Dispatched) -> worker_pb2.WorkerCommand:
    args = struct_pb2.Struct()
    args.update(command.args)
    return worker_pb2.WorkerCommand(
        command=f"projects/{hello.project}/commands/{command.sequence}",
        verb=enums_pb2.CommandVerb.Value(f"COMMAND_VERB_{command.verb}"),
        args=args,
    )


class ConnectSession:
    def __init__(
        self,
        hello: Hello,
        *,
        leases: Leases,
        workers: Workers,
        notifier: Notifier,
        stopping: asyncio.Event,
        touch_interval: float = TOUCH_INTERVAL,
        commands: WorkerCommands | None = None,
        logs: TaskLogs | None = None,
        batches: bool = False,
        ack_tasks: bool = False,
    ) -> None:
        self.hello = hello
        self._batches = batches
        self._ack_tasks = ack_tasks
        self._commands = commands
        self._logs = logs
        self.id = uuid.uuid4()
        self.wake = asyncio.Event()
        """Set by whatever gives the session something to do (messages, NOTIFY, shutdown)."""
        self._leases = leases
        self._workers = workers
        self._notifier = notifier
        self._stopping = stopping
        self._touch_interval = touch_interval
        self._inbox: deque[worker_pb2.ConnectRequest] = deque()
        self._reading = True
        self._malformed: ConveyorError | None = None
        """Why the request stream broke, when a message after the Hello could not be
        decoded; raised once the messages read before it are answered."""
        self._window = 0
        self._outstanding: set[uuid.UUID] = set()
        """Lease ids pushed on this stream and not reported on it yet."""
        self._pushed = Pushed()
        """The same leases as sent, so that their reports need no parsing."""
        self._want = False
        """Tasks may be ready without a notification saying so (credit grew, last lease full)."""
        self._retry_timer: asyncio.TimerHandle | None = None

    async def run(
        self,
        requests: AsyncIterator[worker_pb2.ConnectRequest],
        gone: Callable[[], bool] = lambda: False,
    ) -> AsyncIterator[worker_pb2.ConnectResponse]:
        """The response stream; `requests` continues after the Hello."""
        hello = self.hello
        await self._workers.connect(hello, self.id)
        reader = asyncio.create_task(self._read(requests), name=f"connect-read-{hello.worker}")
        waiter = self._notifier.subscribe(hello.project, hello.queues, self.wake)
        # Commands have their own waiter, so task notifications never cost a look at them.
        command_waiter = self._notifier.subscribe(hello.project, ["@" + hello.worker], self.wake)
        redeliver = True
        reason = "stream ended"
        try:
            yield worker_pb2.ConnectResponse(
                welcome=worker_pb2.Welcome(
                    worker=hello.name,
                    heartbeat_interval=duration(heartbeat_interval(hello.lease_ms)),
                )
            )
            next_touch = time.monotonic() + self._touch_interval
            while True:
                # Cleared before looking, so anything arriving after the look wakes us.
                self.wake.clear()
                if self._inbox:
                    batch = list(self._inbox)
                    self._inbox.clear()
                    for response in await self._process(batch, gone):
                        yield response
                    continue
                if self._malformed is not None:
                    # Ends the call with the decoder's INVALID_ARGUMENT (through the
                    # interceptor); the finally below disconnects as for any other end.
                    reason = "malformed request"
                    raise self._malformed
                if self._stopping.is_set():
                    reason = "server shutting down"
                    break
                if not self._reading or gone():
                    break
                limit = min(self._window - len(self._outstanding), MAX_TAKE)
                if self._commands is not None and (command_waiter.take() or redeliver):
                    found = await self._commands.dispatch(
                        hello.project, hello.worker, redeliver=redeliver
                    )
                    redeliver = False
                    for command in found:
                        yield worker_pb2.ConnectResponse(command=_command_message(hello, command))
                    if found:
                        continue
                notified = waiter.take()
                if limit > 0 and (self._want or notified):
                    settled = await self._leases.settle(hello.project, (), self._take(limit))
                    rows = settled.leased
                    self._want = len(rows) == limit
                    self._retry_later(settled.retry_after)
                    for row in rows:
                        self._outstanding.add(row.lease_id)  # type: ignore[arg-type]
                    if self._batches and rows:
                        yield lease_batch(rows, self._pushed)
                        continue
                    for row in rows:
                        yield assignment(row, self._pushed)
                    continue
                now = time.monotonic()
                if now >= next_touch:
                    await self._touch()
                    next_touch = now + self._touch_interval
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(next_touch - now):
                        await self.wake.wait()
        finally:
            reader.cancel()
            waiter.close()
            command_waiter.close()
            if self._retry_timer is not None:
                self._retry_timer.cancel()
            # Shielded: a cancelled stream (the client went away) still records it.
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self._workers.disconnect(hello.project, hello.worker, self.id, reason)
                )

    def _retry_later(self, delay: float | None) -> None:
        """Looks again once a rate limit has a token (no notification says so)."""
        if delay is None or self._retry_timer is not None:
            return

        def fire() -> None:
            self._retry_timer = None
            self._want = True
            self.wake.set()

        self._retry_timer = asyncio.get_running_loop().call_later(delay, fire)

    def _take(self, limit: int) -> Take:
        return Take(self.hello.worker, self.hello.queues, limit, self.hello.lease_ms)

    async def _read(self, requests: AsyncIterator[worker_pb2.ConnectRequest]) -> None:
        try:
            async for request in requests:
                self._inbox.append(request)
                self.wake.set()
        except asyncio.CancelledError:
            raise
        except ConveyorError as error:
            # A message the interceptor could not decode: the call must end with its
            # error, not as if the worker had half-closed.
            self._malformed = error
        except Exception as error:
            # The stream broke (the client reset it); the response side ends too.
            _log.info("connect stream read failed", worker=self.hello.worker, error=str(error))
        finally:
            self._reading = False
            self.wake.set()

    async def _touch(self) -> None:
        if not await self._workers.touch(self.hello.project, self.hello.worker, self.id):
            # The reaper (or a lost race) marked us gone: say hello again.
            await self._workers.connect(self.hello, self.id)

    async def _process(
        self, batch: list[worker_pb2.ConnectRequest], gone: Callable[[], bool]
    ) -> list[worker_pb2.ConnectResponse]:
        replies = Replies(self._batches, self._ack_tasks, self._pushed)
        group: list[Item] = []
        group_kind = ""
        ids: set[uuid.UUID] = set()
        project = self.hello.project
        batches = 0
        for message in batch:
            which = message.WhichOneof("message")
            if which == "credit":
                self._window = max(0, self._window + message.credit.tasks)
                if message.credit.tasks > 0:
                    self._want = True
                continue
            if which == "hello":
                raise InvalidArgument.of("hello", "may only be the first message of a stream")
            if which == "command_ack":
                await self._acknowledge(message.command_ack)
                continue
            if which == "logs":
                # Stored before the reports after them are settled: a handler's last
                # lines precede its complete, which would make their lease stale.
                if group:
                    await self._flush(group_kind, group, gone, replies)
                    group, ids = [], set()
                if self._logs is not None:
                    await self._logs.append_batch(project, message.logs.appends)
                continue
            if which == "reports":
                batches += 1
                items = batch_items(
                    message.reports.completes,
                    message.reports.fails,
                    project,
                    "reports.",
                    batches,
                    self._pushed,
                )
            elif which in ("complete", "fail", "heartbeat"):
                items = [
                    parse_item(
                        which, getattr(message, which), project, f"{which}.", 0, self._pushed
                    )
                ]
            else:
                continue
            for item in items:
                kind = "beat" if item.which == "heartbeat" else "report"
                task_id = None if isinstance(item.value, ConveyorError) else item.value.task.id
                # One statement changes a row once: a repeated task starts a new group.
                if group and (kind != group_kind or (task_id is not None and task_id in ids)):
                    await self._flush(group_kind, group, gone, replies)
                    group, ids = [], set()
                group_kind = kind
                group.append(item)
                if task_id is not None:
                    ids.add(task_id)
        if group:
            await self._flush(group_kind, group, gone, replies)
        return replies.finish()

    async def _acknowledge(self, ack: worker_pb2.CommandAck) -> None:
        if self._commands is None:
            return
        applied = await self._commands.acknowledge(
            self.hello.project,
            self.hello.worker,
            ack.command,
            ok=ack.ok,
            error=ack.error,
            result=from_struct(ack.result),
        )
        if not applied:
            _log.info("command ack ignored", worker=self.hello.worker, command=ack.command)

    async def _flush(
        self, kind: str, items: list[Item], gone: Callable[[], bool], replies: Replies
    ) -> None:
        if kind == "beat":
            await self._flush_beats(items, replies)
        else:
            await self._flush_reports(items, gone, replies)

    async def _flush_beats(self, items: list[Item], replies: Replies) -> None:
        beats = [i.value for i in items if isinstance(i.value, Heartbeat)]
        results = iter(await self._leases.extend(self.hello.project, beats) if beats else [])
        for item in items:
            extension = None
            if isinstance(item.value, Heartbeat):
                result = next(results)
                extension = None if isinstance(result, ConveyorError) else result
            replies.add(
                worker_pb2.ConnectResponse(
                    heartbeat=lease_messages.extension_message(item.name, item.lease_id, extension)
                )
            )

    async def _flush_reports(
        self, items: list[Item], gone: Callable[[], bool], replies: Replies
    ) -> None:
        reports: list[Report] = [
            i.value for i in items if not isinstance(i.value, ConveyorError | Heartbeat)
        ]
        freed = sum(1 for r in reports if r.lease_id in self._outstanding)
        limit = min(self._window - (len(self._outstanding) - freed), MAX_TAKE)
        # No new work for a stream that is draining or gone.
        may_lease = limit > 0 and self._reading and not self._stopping.is_set() and not gone()
        take = self._take(limit) if may_lease else None
        outcomes = []
        leased = []
        if reports or take is not None:
            # A single report's ack carries the task; a batch's only when the Hello asks.
            ended_tasks = self._ack_tasks or any(not item.batch for item in items)
            settled = await self._leases.settle(
                self.hello.project, reports, take, ended_tasks=ended_tasks
            )
            outcomes, leased = settled.outcomes, settled.leased
            if take is not None:
                self._want = len(leased) == limit
                self._retry_later(settled.retry_after)
        for report in reports:
            self._outstanding.discard(report.lease_id)
        for item in items:
            self._pushed.forget(item)
        results = iter(outcomes)
        for item in items:
            value = item.value
            replies.ack(item, value if isinstance(value, ConveyorError) else next(results))
        for row in leased:
            self._outstanding.add(row.lease_id)  # type: ignore[arg-type]
        replies.leases(leased)
