"""How a seed API calls v1: through the gateway's gRPC channel, as the caller.

A compat adapter never reaches the domain or the store: it builds the v1 request
message, calls it here over the same channel the REST gateway uses (so the interceptor
authenticates, authorises, validates, audits, rate-limits and maps errors exactly as
for any v1 call), and renders the answer in the seed's shape. A refused call raises
`V1Failed` carrying the google.rpc.Status, which compat/problems.py renders.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from google.rpc import status_pb2

from conveyor.server.gateway.dispatch import Gateway
from conveyor.server.gateway.problems import status_of
from conveyor.server.gateway.routes import Binding
from conveyor.server.gateway.upstream import call_metadata
from conveyor.v1 import project_pb2, task_pb2, task_service_pb2

__all__ = ["V1", "Caller", "V1Failed"]

DEFAULT_PROJECT = "default"
"""The project of the bootstrap (system) key and of anonymous callers."""

_PROJECT_TTL = 5.0
"""Seconds a key's project is remembered (keys never change project; this bounds memory
churn, not correctness)."""


@dataclass(frozen=True)
class Caller:
    """Who makes a seed request: the bearer forwarded to v1, and the request id."""

    authorization: str | None
    request_id: str
    anonymous: bool = False
    """Acting with the server's anonymous key (`--compat-anonymous`, loopback only)."""
    traceparent: str | None = None
    """The trace context the v1 calls carry (Gateway.trace_context)."""

    def metadata(self) -> list[tuple[str, str]]:
        return call_metadata(self.authorization, self.request_id, self.traceparent)


class V1Failed(Exception):
    """A v1 call was refused: its rich status and the request that was sent."""

    def __init__(self, rpc: str, status: status_pb2.Status, request: Message) -> None:
        super().__init__(status.message)
        self.rpc = rpc
        self.status = status
        self.request = request


class V1:
    """The v1 methods, called over the gateway's upstream channel."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.router = gateway.router
        self._projects: dict[str, tuple[float, str]] = {}

    def binding(self, rpc: str) -> Binding:
        found = self.router.by_rpc(rpc)
        if found is None:
            raise KeyError(f"{rpc} has no REST binding")
        return found

    async def call(self, rpc: str, request: Message, caller: Caller) -> Any:
        """Calls a unary method (`conveyor.v1.TaskService.CreateTask`) as `caller`."""
        method = self.gateway.upstream.unary(self.binding(rpc).method)
        try:
            return await method(
                request, metadata=caller.metadata(), timeout=self.gateway.options.timeout
            )
        except grpc.aio.AioRpcError as error:
            raise V1Failed(rpc, status_of(error), request) from None

    async def create_task(self, caller: Caller, task: task_pb2.Task) -> task_pb2.Task:
        """CreateTask of `task` in the caller's project (the enqueue of most seeds)."""
        project = await self.project(caller)
        request = task_service_pb2.CreateTaskRequest(parent=f"projects/{project}", task=task)
        created: task_pb2.Task = await self.call(
            "conveyor.v1.TaskService.CreateTask", request, caller
        )
        return created

    def stream(self, rpc: str, request: Message, caller: Caller) -> Any:
        """Starts a server-streaming call (WatchEvents) as `caller`."""
        method = self.gateway.upstream.server_stream(self.binding(rpc).method)
        return method(
            request, metadata=caller.metadata(), timeout=self.gateway.options.stream_timeout
        )

    async def project(self, caller: Caller) -> str:
        """The caller's project: `default` for anonymous callers, else the key's own.

        ListProjects shows a project key its own project only; a system key (the
        bootstrap admin, which belongs to `default`) sees them all. A caller without a
        key gets the interceptor's UNAUTHENTICATED from this call.
        """
        if caller.anonymous:
            return DEFAULT_PROJECT
        key = caller.authorization or ""
        now = time.monotonic()
        cached = self._projects.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        listed = await self.call(
            "conveyor.v1.ProjectService.ListProjects",
            project_pb2.ListProjectsRequest(page_size=2),
            caller,
        )
        projects = [p.name.removeprefix("projects/") for p in listed.projects]
        project = projects[0] if len(projects) == 1 and not listed.next_page_token else ""
        project = project or DEFAULT_PROJECT
        if len(self._projects) > 10_000:
            self._projects.clear()
        self._projects[key] = (now + _PROJECT_TTL, project)
        return project
