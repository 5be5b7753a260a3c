"""The reports of a Worker's finished tasks, until the server has them.

On a stream whose Hello asked for batches, reports that finish within BATCH_WINDOW of
each other (or `max_batch` of them, the worker's concurrency) go in one ReportBatch,
answered by one ReportAckBatch: a task then costs the server a fraction of a message
and of a statement. A report sent on the stream is kept until its ack; when the stream breaks first
it is sent again with the unary RPCs (one that did arrive is refused as stale, which
changes nothing). Unary reports are retried with backoff while the server is
unavailable; any other refusal is logged and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from conveyor.client._async_client import AsyncClient
from conveyor.client._backoff import full_jitter
from conveyor.client._stream import Stream
from conveyor.client.errors import ConveyorError
from conveyor.v1 import task_pb2, worker_pb2

_log = logging.getLogger("conveyor.worker")

Key = tuple[str, str]
Report = worker_pb2.CompleteTaskRequest | worker_pb2.FailTaskRequest
"""A finished task's report, kept as is until sent: wrapped in a ConnectRequest only
when it goes alone, copied once into a ReportBatch otherwise."""

BATCH_WINDOW = 0.001
"""Seconds a report waits for others to go in the same ReportBatch."""
_OK = grpc.StatusCode.OK.value[0]
_INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def message_of(report: Report) -> worker_pb2.ConnectRequest:
    """The report alone on the stream."""
    if isinstance(report, worker_pb2.CompleteTaskRequest):
        return worker_pb2.ConnectRequest(complete=report)
    return worker_pb2.ConnectRequest(fail=report)


class Reports:
    def __init__(self, *, batches: bool = False, max_batch: int = 1) -> None:
        self.client: AsyncClient | None = None
        self._unacked: dict[Key, Report] = {}
        self._unary: set[asyncio.Task[None]] = set()
        self._settled = asyncio.Event()
        self.batches = batches
        """Reports on the stream go in ReportBatch messages."""
        self.max_batch = max_batch
        self._completes: list[worker_pb2.CompleteTaskRequest] = []
        self._fails: list[worker_pb2.FailTaskRequest] = []
        self._pending_stream: Stream | None = None
        self._timer: asyncio.TimerHandle | None = None

    def send(
        self,
        stream: Stream | None,
        generation: int,
        key: Key,
        report: Report,
        free_slot: bool,
    ) -> None:
        """On the open stream when the task came on it; else with the unary RPCs, and
        (with `free_slot`) the slot the task held on the open stream's window is free."""
        if stream is not None and stream.open and stream.generation == generation:
            self._unacked[key] = report
            if not self.batches:
                stream.send(message_of(report))
                return
            if self._pending_stream is not stream:
                self.flush()
                self._pending_stream = stream
            if isinstance(report, worker_pb2.CompleteTaskRequest):
                self._completes.append(report)
            else:
                self._fails.append(report)
            if len(self._completes) + len(self._fails) >= self.max_batch:
                self.flush()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(BATCH_WINDOW, self.flush)
            return
        if stream is not None and stream.open and free_slot:
            stream.grant(1)
        self.unary(report)

    def flush(self) -> None:
        """Sends the reports waiting for a batch, in one ReportBatch."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        completes, fails, stream = self._completes, self._fails, self._pending_stream
        self._completes, self._fails, self._pending_stream = [], [], None
        if not (completes or fails) or stream is None:
            return
        batch = worker_pb2.ReportBatch(completes=completes, fails=fails)
        stream.send(worker_pb2.ConnectRequest(reports=batch))

    def on_response(self, response: worker_pb2.ConnectResponse) -> None:
        """A `report_ack`, or the `report_acks` of a ReportBatch."""
        if response.WhichOneof("message") == "report_ack":
            self.on_ack(response.report_ack)
        else:
            for ack in response.report_acks.acks:
                self.on_ack(ack)
        self._settled.set()

    def on_ack(self, ack: worker_pb2.ReportAck) -> None:
        report = self._unacked.pop((ack.name, ack.lease_id), None)
        status = ack.status
        if status.code == _OK:
            return
        _log.warning("report on %s refused: %s", ack.name, status.message)
        # A result the server cannot store (too large, say) still ends the attempt.
        if isinstance(report, worker_pb2.CompleteTaskRequest) and (
            status.code == _INVALID_ARGUMENT
        ):
            failure = worker_pb2.FailTaskRequest(
                name=ack.name,
                lease_id=ack.lease_id,
                error=task_pb2.TaskError(type="InvalidResult", message=status.message),
                retryable=False,
            )
            self.unary(failure)

    def on_stream_end(self) -> None:
        """Sends what the lost stream may not have delivered with the unary RPCs."""
        # Reports still waiting for their batch are in _unacked too.
        self.flush()
        for key, report in list(self._unacked.items()):
            del self._unacked[key]
            self.unary(report)

    def unary(self, report: Report) -> None:
        task = asyncio.create_task(self._send_unary(report))
        self._unary.add(task)
        task.add_done_callback(self._unary_done)

    def _unary_done(self, task: asyncio.Task[None]) -> None:
        self._unary.discard(task)
        self._settled.set()

    async def _send_unary(self, report: Report) -> None:
        assert self.client is not None
        failures = 0
        while True:
            try:
                if isinstance(report, worker_pb2.CompleteTaskRequest):
                    await self.client.workers.CompleteTask(report)
                else:
                    await self.client.workers.FailTask(report)
                return
            except ConveyorError as error:
                code = error.code()
                if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    # A stale lease (the task moved on while we were away) is expected.
                    stale = code == grpc.StatusCode.FAILED_PRECONDITION
                    level = logging.INFO if stale else logging.WARNING
                    _log.log(level, "report on %s dropped: %s", report.name, error)
                    return
            failures += 1
            await asyncio.sleep(full_jitter(failures))

    async def wait(self, deadline: float) -> None:
        """Returns when every report is settled, or at `deadline` (loop time)."""
        loop = asyncio.get_running_loop()
        while (self._unacked or self._unary) and loop.time() < deadline:
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), deadline - loop.time())

    async def cancel(self) -> None:
        """Cancels the unary reports still running (the worker is going away)."""
        for task in list(self._unary):
            task.cancel()
        if self._unary:
            await asyncio.wait(list(self._unary), timeout=1.0)
