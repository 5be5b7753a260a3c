"""The audit log as CommandService reads it: one command, a filtered page, and the
verification of a project's whole chain (domain/audit.py holds the chain's rules)."""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from conveyor.server.domain import audit, paging, task_input
from conveyor.server.domain.command_input import command_sequence, parent_project
from conveyor.server.errors import InvalidArgument, NotFound, Violations
from conveyor.server.store import commands as command_store
from conveyor.server.store.commands import CommandQuery, CommandRow
from conveyor.v1 import command_pb2, enums_pb2

__all__ = ["CommandLog"]

_VERIFY_PAGE = 1000


class CommandLog:
    def __init__(self, pool: AsyncConnectionPool[Any], server_key: bytes) -> None:
        self._pool = pool
        self._key = server_key

    async def get(self, name: str) -> CommandRow:
        project, sequence = command_sequence(name)
        async with self._pool.connection() as conn:
            row = await command_store.get(conn, project, sequence)
        if row is None:
            raise NotFound(f"{name} does not exist", metadata={"resource": name})
        return row

    async def list_page(
        self, request: command_pb2.ListCommandsRequest
    ) -> tuple[list[CommandRow], str]:
        project = parent_project(request.parent)
        v = Violations()
        limit = paging.DEFAULT_PAGE_SIZE
        try:
            limit = paging.page_size(request.page_size)
        except InvalidArgument as error:
            v.items.extend(error.violations)
        f = request.filter
        statuses = []
        for status in f.statuses:
            if status == enums_pb2.COMMAND_STATUS_UNSPECIFIED or (
                status not in enums_pb2.CommandStatus.values()
            ):
                v.add("filter.statuses", f"{status} is not a command status")
            else:
                statuses.append(
                    enums_pb2.CommandStatus.Name(status).removeprefix("COMMAND_STATUS_")
                )
        verbs = []
        for verb in f.verbs:
            if (
                verb == enums_pb2.COMMAND_VERB_UNSPECIFIED
                or verb not in enums_pb2.CommandVerb.values()
            ):
                v.add("filter.verbs", f"{verb} is not a command verb")
            else:
                verbs.append(audit.verb_name(verb))
        after = before = None
        if f.HasField("create_time_after"):
            after = task_input.timestamp(v, f.create_time_after, "filter.create_time_after")
        if f.HasField("create_time_before"):
            before = task_input.timestamp(v, f.create_time_before, "filter.create_time_before")
        v.raise_if_any()
        fingerprint = f.SerializeToString(deterministic=True).hex()[:64]
        before_sequence = None
        if request.page_token:
            position = paging.decode_token(request.page_token, ("s", "fp"))
            if position["fp"] != fingerprint or not isinstance(position["s"], int):
                raise InvalidArgument.of("page_token", "was made for another filter")
            before_sequence = position["s"]
        query = CommandQuery(
            project=project,
            limit=limit + 1,
            statuses=statuses,
            verbs=verbs,
            issued_by=f.issued_by or None,
            create_time_after=after,
            create_time_before=before,
            before_sequence=before_sequence,
        )
        async with self._pool.connection() as conn:
            rows = await command_store.list_page(conn, query)
        token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            token = paging.encode_token({"s": rows[-1].sequence, "fp": fingerprint})
        return rows, token

    async def verify(self, parent: str) -> audit.Verdict:
        """Recomputes the project's chain, a page at a time (a consistent snapshot)."""
        project = parent_project(parent)
        rows: list[CommandRow] = []
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            head = await command_store.head_sequence(conn, project)
            after = 0
            while True:
                page = await command_store.chain(conn, project, after=after, limit=_VERIFY_PAGE)
                rows.extend(page)
                if len(page) < _VERIFY_PAGE:
                    break
                after = page[-1].sequence
        return audit.verify_rows(self._key, rows, head)
