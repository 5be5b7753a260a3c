"""Wires the contract's services into a grpc.aio server.

`Services` is built before the server (the interceptor must be passed at
construction) and bound to the running AppContext in `register`, once the pool
exists. Services not built yet are served by the UNIMPLEMENTED handler, so every
contract method answers and is authorised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from conveyor.server.context import AppContext
from conveyor.server.domain.auth import Principal
from conveyor.server.domain.command_log import CommandLog
from conveyor.server.domain.keys import Authenticator, ensure_bootstrap_key
from conveyor.server.domain.leases import Leases
from conveyor.server.domain.projects import Projects
from conveyor.server.domain.queues import Queues
from conveyor.server.domain.redaction import Redactions
from conveyor.server.domain.request_limiter import RequestLimiter
from conveyor.server.domain.schedule_firing import ScheduleFiring
from conveyor.server.domain.schedule_states import ScheduleStates
from conveyor.server.domain.schedule_tasks import ScheduledTasks
from conveyor.server.domain.schedules import Schedules
from conveyor.server.domain.task_commands import TaskCommands
from conveyor.server.domain.task_logs import TaskLogs
from conveyor.server.domain.tasks import Tasks
from conveyor.server.domain.worker_commands import WorkerCommands
from conveyor.server.domain.workers import Workers
from conveyor.server.event_wiring import wire_events
from conveyor.server.loops.approvals import ApprovalTimeouts
from conveyor.server.loops.command_timeouts import CommandTimeouts
from conveyor.server.loops.promoter import Promoter
from conveyor.server.loops.queue_metrics import QueueMetricsLoop
from conveyor.server.loops.reaper import Reaper
from conveyor.server.loops.replicas import ReplicaRegistry
from conveyor.server.loops.scheduler import SchedulerLoop
from conveyor.server.loops.statistics import StatisticsLoop
from conveyor.server.rpc import unimplemented
from conveyor.server.rpc.commands import CommandServicer
from conveyor.server.rpc.export import ExportServicer
from conveyor.server.rpc.interceptor import ConveyorInterceptor
from conveyor.server.rpc.projects import ProjectServicer
from conveyor.server.rpc.queues import QueueServicer
from conveyor.server.rpc.redacting import ResponseRedaction
from conveyor.server.rpc.rules import SERVICES, method_rules, request_types
from conveyor.server.rpc.schedules import ScheduleServicer
from conveyor.server.rpc.task_logs import TaskLogServicer
from conveyor.server.rpc.tasks import TaskServicer
from conveyor.server.rpc.workers import WorkerServicer
from conveyor.server.store.task_batcher import CreateBatcher
from conveyor.server.streams.listener import EventListener
from conveyor.server.wakeups.notifier import Notifier
from conveyor.v1 import task_pb2, task_service_pb2


class _LateAuthenticator(Authenticator):
    """Stands in for the Authenticator until register() binds the real one."""

    def __init__(self) -> None:
        self.bound: Authenticator | None = None

    async def authenticate(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal:
        assert self.bound is not None, "register() binds the authenticator before serving"
        return await self.bound.authenticate(metadata)

    def known(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal | None:
        return self.bound.known(metadata) if self.bound is not None else None

    def forget(self, key_id: str) -> None:
        if self.bound is not None:
            self.bound.forget(key_id)

    def forget_project(self, project: str) -> None:
        if self.bound is not None:
            self.bound.forget_project(project)


class Services:
    def __init__(self) -> None:
        self._authenticator = _LateAuthenticator()
        self.limiter = RequestLimiter()
        self.interceptor = ConveyorInterceptor(
            self._authenticator, method_rules(), request_types(), self.limiter
        )

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [self.interceptor]

    def register(self, server: grpc.aio.Server, ctx: AppContext) -> list[str]:
        """Adds every contract service; returns their full names for health and reflection."""
        self._authenticator.bound = Authenticator(ctx.pool)
        self.interceptor.bind(ctx)
        # Each replica enforces its share of every key's budget (request_limiter.py).
        ctx.loops.append(ReplicaRegistry(ctx.pool, self.limiter.share_with))
        # One cache of redaction rules per replica: settings updates forget their project.
        redactions = Redactions(ctx.pool)
        self.interceptor.redaction = ResponseRedaction(redactions)
        # Service full name -> servicers. Each method is served by the first servicer
        # whose class defines it; the rest answer UNIMPLEMENTED with an ErrorInfo.
        create_batcher = CreateBatcher(ctx.pool)
        ctx.loops.append(create_batcher)
        # One LISTEN connection per replica, shared by leasing, watchers and webhooks; on
        # its own URL when set, so it can bypass a transaction-mode pooler.
        listener = EventListener(
            ctx.settings.listen_database_url or ctx.database_url,
            prepare=ctx.settings.database_prepare,
        )
        notifier = Notifier(listener)
        create_batcher.on_ready, create_batcher.origin = notifier.ready, notifier.origin
        create_batcher.tracing = ctx.tracing
        promoter = Promoter(ctx.pool)
        ctx.loops += [notifier, promoter, Reaper(ctx.pool, on_retry=promoter.poke)]
        ctx.loops += [ApprovalTimeouts(ctx.pool), StatisticsLoop(ctx.pool)]
        ctx.loops.append(QueueMetricsLoop(ctx.pool))
        leases = Leases(ctx.pool, on_retry=promoter.poke)
        task_logs = TaskLogs(ctx.pool, stopping=ctx.shutting_down)
        task_servicer = TaskServicer(
            Tasks(ctx.pool, create_batcher, server_key=ctx.server_key), ctx.tracing
        )
        firing = ScheduleFiring(
            ctx.pool, ScheduledTasks(tracing=ctx.tracing), server_key=ctx.server_key
        )
        ctx.loops.append(SchedulerLoop(ctx.pool, firing))

        async def get_task(name: str) -> task_pb2.Task:
            # GetTask reads no context; the servicer is reused so the answer is the same.
            no_context: Any = None
            return await task_servicer.GetTask(
                task_service_pb2.GetTaskRequest(name=name), no_context
            )

        task_commands = TaskCommands(ctx.pool, ctx.server_key)
        worker_commands = WorkerCommands(ctx.pool, ctx.server_key)
        ctx.loops += [task_commands.jobs, CommandTimeouts(ctx.pool)]

        implemented: dict[str, list[object]] = {
            "conveyor.v1.CommandService": [
                CommandServicer(
                    CommandLog(ctx.pool, ctx.server_key), task_commands, worker_commands
                )
            ],
            "conveyor.v1.ScheduleService": [
                ScheduleServicer(
                    Schedules(ctx.pool, server_key=ctx.server_key),
                    ScheduleStates(ctx.pool, server_key=ctx.server_key),
                    firing,
                    get_task,
                )
            ],
            "conveyor.v1.TaskService": [
                task_servicer,
                ExportServicer(ctx.pool, redactions),
                TaskLogServicer(task_logs),
            ],
            "conveyor.v1.QueueService": [
                QueueServicer(Queues(ctx.pool, ctx.server_key, redactions))
            ],
            "conveyor.v1.WorkerService": [
                WorkerServicer(
                    leases,
                    Workers(ctx.pool),
                    notifier,
                    ctx.shutting_down,
                    worker_commands,
                    logs=task_logs,
                )
            ],
            "conveyor.v1.ProjectService": [
                ProjectServicer(
                    Projects(ctx.pool, self._authenticator, ctx.server_key, redactions)
                ),
            ],
            "conveyor.v1.EventService": [wire_events(ctx, listener, redactions)],
        }
        for service in SERVICES:
            server.add_generic_rpc_handlers(
                (unimplemented.generic_handler(service, implemented.get(service.full_name, [])),)
            )
        return [service.full_name for service in SERVICES]

    async def bootstrap(self, ctx: AppContext) -> None:
        await ensure_bootstrap_key(ctx.pool, ctx.settings.data_dir)
