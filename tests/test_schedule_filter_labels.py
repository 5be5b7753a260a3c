"""ScheduleFilter.labels: ListSchedules keeps the schedules whose task template carries
every label named, over gRPC and over REST (`filter.labels[key]=value`)."""

from __future__ import annotations

import httpx
import pytest

from conveyor.client import AsyncClient, InvalidArgumentError
from conveyor.server.app import ConveyorServer
from conveyor.v1 import enums_pb2, schedule_pb2

PARENT = "projects/alpha"


def _labelled(**labels: str) -> schedule_pb2.Schedule:
    return schedule_pb2.Schedule(
        spec=schedule_pb2.ScheduleSpec(kind=enums_pb2.SCHEDULE_KIND_CRON, expression="@hourly"),
        task_template=schedule_pb2.TaskTemplate(kind="report.build", labels=labels),
    )


async def test_list_schedules_filters_on_template_labels(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"]) as client:
        for schedule_id, labels in (
            ("prod-eu", {"env": "prod", "region": "eu"}),
            ("prod-us", {"env": "prod", "region": "us"}),
            ("dev", {"env": "dev"}),
            ("bare", {}),
        ):
            await client.schedules.CreateSchedule(
                schedule_pb2.CreateScheduleRequest(
                    parent=PARENT, schedule_id=schedule_id, schedule=_labelled(**labels)
                )
            )

        async def names(**labels: str) -> list[str]:
            page = await client.schedules.ListSchedules(
                schedule_pb2.ListSchedulesRequest(
                    parent=PARENT, filter=schedule_pb2.ScheduleFilter(labels=labels)
                )
            )
            return [s.name.rsplit("/", 1)[-1] for s in page.schedules]

        assert await names(env="prod") == ["prod-eu", "prod-us"]
        assert await names(env="prod", region="us") == ["prod-us"]
        assert await names(env="prod", region="asia") == []
        assert await names() == ["bare", "dev", "prod-eu", "prod-us"]
        with pytest.raises(InvalidArgumentError) as caught:
            await names(env="a\x00b")
        assert [f for f, _ in caught.value.field_violations] == ["filter.labels[env]"]

    async with httpx.AsyncClient(
        base_url=server.http_base_url,
        headers={"Authorization": f"Bearer {keys['viewer']}"},
        timeout=10,
    ) as http:
        listed = await http.get(
            f"/v1/{PARENT}/schedules",
            params=[("filter.labels[env]", "prod"), ("filter.labels[region]", "eu")],
        )
        assert listed.status_code == 200, listed.text
        assert [s["name"] for s in listed.json()["schedules"]] == [f"{PARENT}/schedules/prod-eu"]
        bad = await http.get(f"/v1/{PARENT}/schedules", params={"filter.labels[env]": "a\x00"})
        assert bad.status_code == 400, bad.text
        assert bad.headers["content-type"] == "application/problem+json"
