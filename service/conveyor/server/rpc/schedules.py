"""ScheduleService: thin translation between messages and domain.schedules,
domain.schedule_states and domain.schedule_firing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import empty_pb2

from conveyor.server.domain.request_ids import request_hash
from conveyor.server.domain.schedule_firing import ScheduleFiring
from conveyor.server.domain.schedule_states import ScheduleStates
from conveyor.server.domain.schedules import Schedules
from conveyor.server.render.convert import to_datetime
from conveyor.server.render.schedules import schedule_message
from conveyor.server.rpc import principal
from conveyor.v1 import schedule_pb2, task_pb2

Context = grpc.aio.ServicerContext[Any, Any]
TaskLoader = Callable[[str], Awaitable[task_pb2.Task]]


class ScheduleServicer:
    """Implements conveyor.v1.ScheduleService (registered method by method)."""

    def __init__(
        self,
        schedules: Schedules,
        states: ScheduleStates,
        firing: ScheduleFiring,
        get_task: TaskLoader,
    ) -> None:
        self._schedules = schedules
        self._states = states
        self._firing = firing
        self._get_task = get_task

    async def CreateSchedule(
        self, request: schedule_pb2.CreateScheduleRequest, context: Context
    ) -> schedule_pb2.Schedule:
        caller = principal.current()
        row = await self._schedules.create(
            request.parent,
            request.schedule_id,
            request.schedule,
            caller.key_name,
            caller,
            request.request_id,
            request_hash(request),
        )
        return schedule_message(row)

    async def GetSchedule(
        self, request: schedule_pb2.GetScheduleRequest, context: Context
    ) -> schedule_pb2.Schedule:
        row, runs = await self._schedules.get(request.name)
        return schedule_message(row, runs)

    async def ListSchedules(
        self, request: schedule_pb2.ListSchedulesRequest, context: Context
    ) -> schedule_pb2.ListSchedulesResponse:
        rows, token = await self._schedules.list_page(
            request.parent,
            request.filter,
            request.page_size,
            request.page_token,
            me=principal.current().key_name,
        )
        return schedule_pb2.ListSchedulesResponse(
            schedules=[schedule_message(r) for r in rows], next_page_token=token
        )

    async def UpdateSchedule(
        self, request: schedule_pb2.UpdateScheduleRequest, context: Context
    ) -> schedule_pb2.Schedule:
        row = await self._schedules.update(
            request.schedule, list(request.update_mask.paths), principal.current()
        )
        return schedule_message(row)

    async def DeleteSchedule(
        self, request: schedule_pb2.DeleteScheduleRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._schedules.delete(request.name, principal.current())
        return empty_pb2.Empty()

    async def PauseSchedule(
        self, request: schedule_pb2.PauseScheduleRequest, context: Context
    ) -> schedule_pb2.Schedule:
        return schedule_message(
            await self._states.pause(request.name, request.notes, principal.current())
        )

    async def ResumeSchedule(
        self, request: schedule_pb2.ResumeScheduleRequest, context: Context
    ) -> schedule_pb2.Schedule:
        return schedule_message(await self._states.resume(request.name, principal.current()))

    async def CancelSchedule(
        self, request: schedule_pb2.CancelScheduleRequest, context: Context
    ) -> schedule_pb2.Schedule:
        return schedule_message(await self._states.cancel(request.name, principal.current()))

    async def SnoozeSchedule(
        self, request: schedule_pb2.SnoozeScheduleRequest, context: Context
    ) -> schedule_pb2.Schedule:
        row = await self._states.snooze(
            request.name, request.delay.ToTimedelta(), request.reason, principal.current()
        )
        return schedule_message(row)

    async def RunScheduleNow(
        self, request: schedule_pb2.RunScheduleNowRequest, context: Context
    ) -> task_pb2.Task:
        task_id = await self._firing.run_now(
            request.name, request.overlap_policy, principal.current()
        )
        project = request.name.split("/")[1]
        return await self._get_task(f"projects/{project}/tasks/{task_id}")

    async def PreviewSchedule(
        self, request: schedule_pb2.PreviewScheduleRequest, context: Context
    ) -> schedule_pb2.PreviewScheduleResponse:
        start = to_datetime(request.start_time) if request.HasField("start_time") else None
        times = await self._schedules.preview(
            request.name,
            request.parent,
            request.schedule if request.HasField("schedule") else None,
            request.count,
            start,
        )
        response = schedule_pb2.PreviewScheduleResponse()
        for instant in times:
            response.fire_times.add().FromDatetime(instant)
        return response
