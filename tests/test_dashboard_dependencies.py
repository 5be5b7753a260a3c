"""The task page shows what a task depends on, and the tree card the dependencies
outside its tree (GetTaskTree's dependencies)."""

from __future__ import annotations

from typing import Any

from conveyor.client import AsyncClient
from conveyor.server.app import ConveyorServer


async def test_task_page_lists_dependencies(
    server: ConveyorServer, keys: dict[str, str], signed_in: Any
) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops:
        fetch = await ops.create_task("report.fetch", queue="reports")
        build = await ops.create_task(
            "report.build",
            queue="reports",
            depends_on=[fetch.name],
            dependency_failure_policy="run_anyway",
        )
    page = await signed_in("viewer")
    await page.goto(f"{server.http_base_url}/ui/tasks/{build.name.rsplit('/', 1)[-1]}")
    listed = page.locator("dd.depends-on")
    fetch_id = fetch.name.rsplit("/", 1)[-1]
    assert await listed.locator("a").get_attribute("href") == f"/ui/tasks/{fetch_id}"
    assert "counts as done" in await listed.inner_text()
    outside = page.locator("ul.dependencies li")
    assert await outside.count() == 1
    assert "report.fetch" in await outside.inner_text()
