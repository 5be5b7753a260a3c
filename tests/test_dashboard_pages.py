"""The dashboard's other pages in a real browser: schedules, tasks with paging and export,
workers with their control commands, the audit log and its verification."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import zipfile
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from google.protobuf import field_mask_pb2

from conveyor.client import AsyncClient, Worker
from conveyor.server.app import ConveyorServer
from conveyor.v1 import enums_pb2, schedule_pb2

S = enums_pb2


async def test_schedules_create_preview_edit_and_steer(
    server: ConveyorServer, keys: dict[str, str], signed_in: Any
) -> None:
    page = await signed_in("operator")
    await page.goto(server.http_base_url + "/ui/schedules")
    await page.get_by_text("New schedule").click()
    form = page.locator("form[action='/ui/schedules']")
    await form.get_by_label("Id").fill("nightly-report")
    await form.get_by_label("Title").fill("Nightly report")
    await form.get_by_label("Expression").fill("30 2 * * *")
    await form.get_by_label("Time zone").fill("America/New_York")
    await form.get_by_label("Queue").fill("reports")
    await form.get_by_label("Task kind").fill("report.build")
    await form.get_by_label("Input (JSON)").fill('{"scope": "daily"}')
    await form.get_by_role("button", name="Preview").click()
    preview = page.locator(".preview li")
    await preview.first.wait_for()
    assert await preview.count() == 5
    # Shown on the schedule's wall clock: 02:30 in New York, whatever UTC says.
    assert "02:30 E" in await preview.first.inner_text()
    await page.locator("form[action='/ui/schedules']").get_by_role("button", name="Create").click()
    await page.get_by_role("status").filter(has_text="Schedule created.").wait_for()
    assert await page.locator("ol.preview li").count() == 10

    name = "projects/alpha/schedules/nightly-report"
    async with AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops:
        # Someone else changes the description while the page is open; saving the title
        # from the page must not send (and so must not undo) the description.
        await ops.schedules.UpdateSchedule(
            schedule_pb2.UpdateScheduleRequest(
                schedule=schedule_pb2.Schedule(name=name, description="owned by data team"),
                update_mask=field_mask_pb2.FieldMask(paths=["description"]),
            )
        )
        edit = page.locator("form[action$='/update']")
        await edit.get_by_label("Title").fill("Nightly sales report")
        await edit.get_by_role("button", name="Save changes").click()
        await page.get_by_role("status").filter(has_text="Schedule saved.").wait_for()
        saved = await ops.schedules.GetSchedule(schedule_pb2.GetScheduleRequest(name=name))
        assert saved.title == "Nightly sales report"
        assert saved.description == "owned by data team"
        assert saved.task_template.input.struct_value.fields["scope"].string_value == "daily"

        await page.goto(server.http_base_url + "/ui/schedules")
        row = page.locator("tr[data-schedule='nightly-report']")
        await row.get_by_text("Pause…").click()
        await row.get_by_placeholder("note (why)").fill("migrating the warehouse")
        await row.get_by_role("button", name="Pause", exact=True).click()
        await page.get_by_role("status").filter(has_text="Schedule paused.").wait_for()
        paused = await ops.schedules.GetSchedule(schedule_pb2.GetScheduleRequest(name=name))
        assert paused.state == S.SCHEDULE_STATE_PAUSED
        assert paused.notes == "migrating the warehouse"
        assert "migrating the warehouse" in await row.inner_text()

        await row.get_by_role("button", name="Resume").click()
        await page.get_by_role("status").filter(has_text="Schedule resumed.").wait_for()
        await row.get_by_text("Snooze…").click()
        await row.get_by_placeholder("reason").fill("warehouse migration")
        await row.get_by_role("button", name="Snooze", exact=True).click()
        await page.get_by_role("status").filter(has_text="snoozed").wait_for()
        snoozed = await ops.schedules.GetSchedule(schedule_pb2.GetScheduleRequest(name=name))
        assert snoozed.HasField("snooze_until")

        await row.get_by_role("button", name="Run now").click()
        await page.get_by_role("status").filter(has_text="Schedule run now").wait_for()
        ran = await ops.schedules.GetSchedule(schedule_pb2.GetScheduleRequest(name=name))
        assert ran.run_count == 1

        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await row.get_by_role("button", name="Cancel").click()
        await page.get_by_role("status").filter(has_text="Schedule cancelled.").wait_for()
        done = await ops.schedules.GetSchedule(schedule_pb2.GetScheduleRequest(name=name))
        assert done.state == S.SCHEDULE_STATE_CANCELLED


_SHEET = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


def _xlsx_records(path: Path) -> list[dict[str, str]]:
    """The first sheet's rows as {header: text} (shared and inline strings alike; an
    empty cell is absent from the XML, so cells are placed by their column letters)."""
    with zipfile.ZipFile(path) as book:
        shared: list[str] = []
        if "xl/sharedStrings.xml" in book.namelist():
            strings = ElementTree.fromstring(book.read("xl/sharedStrings.xml"))
            shared = ["".join(t.text or "" for t in si.iter(_SHEET + "t")) for si in strings]
        sheet = ElementTree.fromstring(book.read("xl/worksheets/sheet1.xml"))
    rows: list[dict[str, str]] = []
    for row in sheet.iter(_SHEET + "row"):
        cells: dict[str, str] = {}
        for cell in row.iter(_SHEET + "c"):
            column = "".join(ch for ch in cell.get("r", "") if ch.isalpha())
            value = cell.find(_SHEET + "v")
            if cell.get("t") == "inlineStr":
                cells[column] = "".join(t.text or "" for t in cell.iter(_SHEET + "t"))
            elif value is not None and cell.get("t") == "s":
                cells[column] = shared[int(value.text or 0)]
            elif value is not None:
                cells[column] = value.text or ""
        rows.append(cells)
    header, *body = rows
    return [{name: cells.get(column, "") for column, name in header.items()} for cells in body]


async def test_tasks_filter_page_and_export(
    server: ConveyorServer, keys: dict[str, str], signed_in: Any
) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops:
        await ops.batch_create_tasks(
            [{"kind": "bulk.item", "queue": "many", "input": {"n": n}} for n in range(55)]
        )
        await ops.create_task("other.kind", {}, queue="few", labels={"env": "prod"})
    page = await signed_in("viewer")
    await page.goto(server.http_base_url + "/ui/tasks?queue=many&state=QUEUED")
    assert await page.locator("tbody tr[data-task]").count() == 50
    await page.get_by_role("link", name="Next page").click()
    assert await page.locator("tbody tr[data-task]").count() == 5
    assert await page.get_by_role("link", name="Next page").count() == 0

    await page.goto(server.http_base_url + "/ui/tasks")
    await page.get_by_label("Labels").fill("env=prod")
    await page.get_by_role("button", name="Filter").click()
    rows = page.locator("tbody tr[data-task]")
    assert await rows.count() == 1
    assert "other.kind" in await rows.first.inner_text()

    await page.goto(server.http_base_url + "/ui/tasks?queue=many")
    async with page.expect_download() as info:
        await page.get_by_role("link", name="CSV").click()
    download = await info.value
    assert download.suggested_filename.endswith(".csv")
    text = await asyncio.to_thread(Path(await download.path()).read_text)
    assert len(list(csv.DictReader(io.StringIO(text)))) == 55

    # The other two formats, of a filtered list: the rows are those the filter keeps.
    async with page.expect_download() as info:
        await page.get_by_role("link", name="XLSX").click()
    download = await info.value
    assert download.suggested_filename.endswith(".xlsx")
    sheet = await asyncio.to_thread(_xlsx_records, Path(await download.path()))
    assert len(sheet) == 55
    assert {(row["kind"], row["queue"]) for row in sheet} == {("bulk.item", "many")}

    await page.goto(server.http_base_url + "/ui/tasks?label=env%3Dprod")
    async with page.expect_download() as info:
        await page.get_by_role("link", name="NDJSON").click()
    download = await info.value
    assert download.suggested_filename.endswith(".ndjson")
    text = await asyncio.to_thread(Path(await download.path()).read_text)
    records = [json.loads(line) for line in text.splitlines()]
    assert [(r["kind"], r["queue"]) for r in records] == [("other.kind", "few")]

    bad = await page.goto(server.http_base_url + "/ui/tasks?state=bogus")
    assert bad is not None and bad.status == 400
    assert "QUEUED" in await page.get_by_role("alert").inner_text()


async def test_workers_commands_are_followed_to_their_end(
    server: ConveyorServer, keys: dict[str, str], signed_in: Any
) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["worker"], project="alpha") as work:
        worker = Worker(work, queues=["default"], concurrency=2, worker_id="w-ctl")
        run = asyncio.create_task(worker.arun())
        try:
            page = await signed_in("admin")
            await page.goto(server.http_base_url + "/ui/workers")
            row = page.locator("tr[data-worker='w-ctl']")
            while not await row.count():
                await page.reload()
            assert "default" in await row.inner_text()
            await row.get_by_role("button", name="Resize").click()
            status = page.locator("#command [data-status]")
            await page.locator("#command [data-status='SUCCEEDED']").wait_for()
            assert "RESIZE_POOL" in await page.locator("#command").inner_text()
            assert await status.inner_text() == "SUCCEEDED"

            rate = page.locator("form[action='/ui/workers/rate-limit']")
            await rate.get_by_placeholder("email.send").fill("email.send")
            await rate.get_by_placeholder("100/m (0 clears)").fill("10/s")
            await rate.get_by_role("button", name="Set rate limit").click()
            await page.locator("#command [data-status='SUCCEEDED']").wait_for()
            assert "SET_RATE_LIMIT" in await page.locator("#command").inner_text()

            viewer = await signed_in("viewer")
            await viewer.goto(server.http_base_url + "/ui/workers")
            assert await viewer.locator("tr[data-worker='w-ctl']").count() == 1
            assert await viewer.get_by_role("button").filter(has_text="Resize").count() == 0
        finally:
            await worker.stop(5)
            await run


async def _followed(page: Any, verb: str) -> str:
    """The command the page follows, once it is final: it is shown on its way (ISSUED,
    DISPATCHED) or already done, then the page polls it to SUCCEEDED without a reload."""
    card = page.locator("#command")
    first = await card.locator("[data-status]").inner_text()
    assert first in ("ISSUED", "DISPATCHED", "SUCCEEDED"), first
    await page.locator("#command [data-status='SUCCEEDED']").wait_for()
    text = str(await card.inner_text())
    assert verb in text
    return text


async def _queues_shown(page: Any, worker: str, queues: str) -> None:
    """Reloads until the worker's row shows these queues (it reconnects with a new Hello)."""
    cell = page.locator(f"tr[data-worker='{worker}'] td:nth-child(3)")
    while not await cell.count() or await cell.inner_text() != queues:
        await page.goto(page.url.split("?", 1)[0])


async def test_workers_restart_consume_and_stop_consuming_from_the_page(
    server: ConveyorServer, keys: dict[str, str], signed_in: Any
) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["worker"], project="alpha") as work:
        worker = Worker(work, queues=["default"], concurrency=2, worker_id="w-verbs")
        worker.task("report.build")(lambda ctx: {"built": True})
        run = asyncio.create_task(worker.arun())
        try:
            page = await signed_in("admin")
            await page.goto(server.http_base_url + "/ui/workers")
            await _queues_shown(page, "w-verbs", "default")
            row = page.locator("tr[data-worker='w-verbs']")

            await row.get_by_placeholder("queue").fill("reports")
            await row.get_by_role("button", name="Consume").click()
            assert "reports" in await _followed(page, "ADD_CONSUMER")
            assert worker.queues == ["default", "reports"]
            await _queues_shown(page, "w-verbs", "default, reports")

            await row.get_by_placeholder("queue").fill("default")
            await row.get_by_role("button", name="Stop consuming").click()
            await _followed(page, "CANCEL_CONSUMER")
            assert worker.queues == ["reports"]
            await _queues_shown(page, "w-verbs", "reports")

            page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await row.get_by_role("button", name="Restart").click()
            await _followed(page, "RESTART_WORKER")
            # It reconnects with the same queues and takes work again.
            async with AsyncClient(
                server.grpc_target, api_key=keys["operator"], project="alpha"
            ) as ops:
                task = await ops.create_task("report.build", {}, queue="reports")
                done = await ops.wait_for_task(task.name)
                assert done.state == S.TASK_STATE_SUCCEEDED
        finally:
            await worker.stop(5)
            await run


async def test_audit_lists_commands_and_verifies_the_chain(
    server: ConveyorServer, keys: dict[str, str], signed_in: Any
) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops:
        task = await ops.create_task("email.send", {}, queue="mail")
        await ops.cancel_task(task.name, reason="typo")
    page = await signed_in("viewer")
    await page.goto(server.http_base_url + "/ui/audit")
    assert "CANCEL_TASK" in await page.locator("tbody").inner_text()
    await page.get_by_role("link", name="Verify chain").click()
    verdict = page.locator(".verify")
    assert "Chain verified" in await verdict.inner_text()


async def test_retry_from_the_task_page_with_an_input_override(
    server: ConveyorServer, keys: dict[str, str], signed_in: Any
) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops:
        task = await ops.create_task("email.send", {"to": "typo@example.con"}, queue="mail")
        await ops.cancel_task(task.name, reason="wrong address")
        page = await signed_in("operator")
        await page.goto(f"{server.http_base_url}/ui/tasks/{task.name.rsplit('/', 1)[-1]}")
        await page.locator("summary", has_text="Retry").click()
        await page.locator("textarea[name=override_input]").fill('{"to": "ada@example.com"}')
        await page.get_by_role("button", name="Retry").click()
        await page.get_by_role("status").filter(has_text="Retry requested").wait_for()
        retried = await ops.get_task(task.name)
        assert retried.state == S.TASK_STATE_QUEUED
        assert retried.input.struct_value.fields["to"].string_value == "ada@example.com"

        await page.goto(f"{server.http_base_url}/ui/tasks/{task.name.rsplit('/', 1)[-1]}")
        assert "ada@example.com" in await page.locator("pre.json").first.inner_text()
