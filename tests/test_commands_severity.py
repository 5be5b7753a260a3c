"""CRITICAL commands (#21 point 5): the global rate limit and the forced purge carry
`severity: CRITICAL` on their audit row and are logged at critical."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from structlog.testing import capture_logs

from conveyor.client import AsyncClient
from conveyor.server.app import ConveyorServer
from conveyor.v1 import command_pb2, enums_pb2

P = "projects/alpha"
CRITICAL = enums_pb2.COMMAND_SEVERITY_CRITICAL
NORMAL = enums_pb2.COMMAND_SEVERITY_NORMAL


def _critical(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line.get("log_level") == "critical"]


async def test_global_rate_limit_and_forced_purge_are_critical_and_logged_so(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["admin"], project="alpha") as admin:
        with capture_logs() as logs:
            one_worker = await admin.commands.SetRateLimit(
                command_pb2.SetRateLimitRequest(
                    parent=P, kind="email.send", rate_limit="10/m", worker="w1"
                )
            )
        assert one_worker.severity == NORMAL
        assert _critical(logs) == []

        with capture_logs() as logs:
            every_worker = await admin.commands.SetRateLimit(
                command_pb2.SetRateLimitRequest(parent=P, kind="email.send", rate_limit="10/m")
            )
        assert every_worker.severity == CRITICAL
        (line,) = _critical(logs)
        assert line["command"] == every_worker.name
        assert line["verb"] == "SET_RATE_LIMIT"
        assert line["severity"] == "CRITICAL"
        assert line["issued_by"] == every_worker.issued_by

        await admin.create_task("job", 1, queue="q1")
        queue = await admin.get_queue("q1")
        with capture_logs() as logs:
            confirmed = await admin.commands.PurgeQueue(
                command_pb2.PurgeQueueRequest(
                    parent=P, queue="q1", confirm_token=queue.purge_confirm_token
                )
            )
        assert confirmed.severity == NORMAL
        assert _critical(logs) == []

        with capture_logs() as logs:
            forced = await admin.commands.PurgeQueue(
                command_pb2.PurgeQueueRequest(parent=P, queue="q1", force=True)
            )
        assert forced.severity == CRITICAL
        assert [line["command"] for line in _critical(logs)] == [forced.name]

        # The audit row reads back with the flag, and the chain still verifies.
        listed = await admin.commands.ListCommands(
            command_pb2.ListCommandsRequest(parent=P, page_size=100)
        )
        severities = {c.name: c.severity for c in listed.commands}
        assert severities[every_worker.name] == severities[forced.name] == CRITICAL
        assert severities[one_worker.name] == severities[confirmed.name] == NORMAL
        got = await admin.commands.GetCommand(command_pb2.GetCommandRequest(name=forced.name))
        assert got.severity == CRITICAL
        verdict = await admin.commands.VerifyAuditLog(command_pb2.VerifyAuditLogRequest(parent=P))
        assert verdict.ok
