"""Schedule, project and key changes land in the project's audit chain, which verifies."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from conveyor.client import AsyncClient
from conveyor.server.app import ConveyorServer
from conveyor.v1 import command_pb2, enums_pb2, project_pb2, schedule_pb2


async def verbs(client: AsyncClient, parent: str) -> list[str]:
    listed = await client.commands.ListCommands(
        command_pb2.ListCommandsRequest(parent=parent, page_size=100)
    )
    return [
        enums_pb2.CommandVerb.Name(c.verb).removeprefix("COMMAND_VERB_") for c in listed.commands
    ]


async def test_schedule_changes_are_audited(server: ConveyorServer, keys: dict[str, str]) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"]) as ops:
        created = await ops.schedules.CreateSchedule(
            schedule_pb2.CreateScheduleRequest(
                parent="projects/alpha",
                schedule_id="audited",
                schedule=schedule_pb2.Schedule(
                    spec=schedule_pb2.ScheduleSpec(
                        kind=enums_pb2.SCHEDULE_KIND_CRON, expression="0 0 1 1 *"
                    ),
                    task_template=schedule_pb2.TaskTemplate(kind="audit.me"),
                ),
            )
        )
        name = created.name
        await ops.schedules.UpdateSchedule(
            schedule_pb2.UpdateScheduleRequest(
                schedule=schedule_pb2.Schedule(name=name, title="t"),
                update_mask=field_mask_pb2.FieldMask(paths=["title"]),
            )
        )
        await ops.schedules.PauseSchedule(schedule_pb2.PauseScheduleRequest(name=name, notes="n"))
        await ops.schedules.ResumeSchedule(schedule_pb2.ResumeScheduleRequest(name=name))
        await ops.schedules.SnoozeSchedule(
            schedule_pb2.SnoozeScheduleRequest(name=name, delay=duration_pb2.Duration(seconds=60))
        )
        await ops.schedules.RunScheduleNow(schedule_pb2.RunScheduleNowRequest(name=name))
        await ops.schedules.CancelSchedule(schedule_pb2.CancelScheduleRequest(name=name))
        await ops.schedules.DeleteSchedule(schedule_pb2.DeleteScheduleRequest(name=name))
        recorded = await verbs(ops, "projects/alpha")
        verdict = await ops.commands.VerifyAuditLog(
            command_pb2.VerifyAuditLogRequest(parent="projects/alpha")
        )
    assert [v for v in recorded if v.endswith("SCHEDULE") or v.endswith("SCHEDULE_NOW")] == [
        "DELETE_SCHEDULE",
        "CANCEL_SCHEDULE",
        "RUN_SCHEDULE_NOW",
        "SNOOZE_SCHEDULE",
        "RESUME_SCHEDULE",
        "PAUSE_SCHEDULE",
        "UPDATE_SCHEDULE",
        "CREATE_SCHEDULE",
    ]
    assert verdict.ok


async def test_project_and_key_changes_are_audited_without_secrets(
    server: ConveyorServer, admin_key: str
) -> None:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as admin:
        await admin.create_project("audited")
        await admin.projects.UpdateProject(
            project_pb2.UpdateProjectRequest(
                project=project_pb2.Project(name="projects/audited", display_name="A"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        )
        key = await admin.create_api_key("projects/audited", enums_pb2.ROLE_VIEWER)
        await admin.projects.RotateWebhookSecret(
            project_pb2.RotateWebhookSecretRequest(name="projects/audited/webhookSecret")
        )
        await admin.delete_api_key(key.name)
        listed = await admin.commands.ListCommands(
            command_pb2.ListCommandsRequest(parent="projects/audited")
        )
        verdict = await admin.commands.VerifyAuditLog(
            command_pb2.VerifyAuditLogRequest(parent="projects/audited")
        )
    recorded = [enums_pb2.CommandVerb.Name(c.verb) for c in listed.commands]
    assert recorded == [
        "COMMAND_VERB_DELETE_API_KEY",
        "COMMAND_VERB_ROTATE_WEBHOOK_SECRET",
        "COMMAND_VERB_CREATE_API_KEY",
        "COMMAND_VERB_UPDATE_PROJECT",
        "COMMAND_VERB_CREATE_PROJECT",
    ]
    assert all(key.secret not in str(c) for c in listed.commands)
    assert all(c.issued_by.startswith("projects/default/apiKeys/") for c in listed.commands)
    assert verdict.ok and verdict.verified_count == 5


async def test_audited_changes_on_a_missing_project_are_not_found(
    server: ConveyorServer, admin_key: str
) -> None:
    from conveyor.client import NotFoundError
    from conveyor.v1 import task_pb2, task_service_pb2

    async with AsyncClient(server.grpc_target, api_key=admin_key) as admin:
        with pytest.raises(NotFoundError):
            await admin.tasks.BatchDeleteTasks(
                task_service_pb2.BatchDeleteTasksRequest(
                    parent="projects/nowhere", filter=task_pb2.TaskFilter()
                )
            )
