"""Schedules: list, create, edit (only the changed fields are sent), preview of the next
runs in the schedule's time zone, pause with a note, resume, snooze, run now, cancel."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.protobuf import duration_pb2, field_mask_pb2, json_format
from starlette.datastructures import ImmutableMultiDict
from starlette.responses import Response

from conveyor.server.dashboard.web import View, back
from conveyor.v1 import enums_pb2, schedule_pb2

PREVIEW_COUNT = 5
KINDS = ["CRON", "RRULE", "ONCE", "EVENT"]
OVERLAPS = ["SKIP", "BUFFER_ONE", "ALLOW_ALL", "CANCEL_OTHER"]
SNOOZES = {"15m": 900, "1h": 3600, "4h": 4 * 3600, "1d": 86400}


class BadForm(ValueError):
    pass


def _id(view: View) -> str:
    return str(view.request.path_params["schedule"])


def _name(view: View) -> str:
    return f"{view.parent}/schedules/{_id(view)}"


def fire_times(times: Any, timezone: str) -> list[dict[str, str]]:
    """Fire times as the schedule's wall clock and as UTC."""
    try:
        zone = ZoneInfo(timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    shown = []
    for stamp in times:
        moment = stamp.ToDatetime(tzinfo=ZoneInfo("UTC"))
        shown.append(
            {
                "local": moment.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z"),
                "utc": moment.strftime("%Y-%m-%d %H:%M:%SZ"),
            }
        )
    return shown


def _apply(schedule: schedule_pb2.Schedule, form: ImmutableMultiDict[str, str]) -> list[str]:
    """Copies the form's values into `schedule`; returns the top-level fields that
    differ from the form's `old_*` values (all of them when there are none)."""
    changed: list[str] = []

    def differs(field: str) -> bool:
        old = form.get(f"old_{field}")
        return old is None or old != form.get(field, "")

    if differs("title"):
        schedule.title = form.get("title", "")
        changed.append("title")
    if differs("description"):
        schedule.description = form.get("description", "")
        changed.append("description")
    if any(differs(f) for f in ("spec_kind", "expression", "timezone")):
        kind = form.get("spec_kind", "CRON")
        if kind not in KINDS:
            raise BadForm(f"kind must be one of {', '.join(KINDS)}")
        schedule.spec.kind = enums_pb2.ScheduleKind.Value(f"SCHEDULE_KIND_{kind}")
        schedule.spec.expression = form.get("expression", "")
        schedule.spec.timezone = form.get("timezone", "")
        changed.append("spec")
    if any(differs(f) for f in ("queue", "task_kind", "input")):
        template = schedule.task_template
        template.queue = form.get("queue", "")
        template.kind = form.get("task_kind", "")
        text = form.get("input", "").strip()
        template.ClearField("input")
        if text:
            try:
                json_format.Parse(text, template.input)
            except json_format.ParseError as error:
                raise BadForm(f"the task input is not JSON: {error}") from None
        changed.append("task_template")
    if differs("overlap_policy"):
        overlap = form.get("overlap_policy", "SKIP")
        if overlap not in OVERLAPS:
            raise BadForm(f"overlap policy must be one of {', '.join(OVERLAPS)}")
        schedule.overlap_policy = enums_pb2.OverlapPolicy.Value(f"OVERLAP_POLICY_{overlap}")
        changed.append("overlap_policy")
    return changed


async def schedule_list(view: View) -> Response:
    return await _list_page(view, {}, None)


async def preview(view: View) -> Response:
    """The create form again, filled in, with the next runs of the proposed spec."""
    proposed = schedule_pb2.Schedule()
    shown: list[dict[str, str]] | str
    try:
        _apply(proposed, view.form)
        answer = await view.call(
            view.api.schedules.PreviewSchedule,
            schedule_pb2.PreviewScheduleRequest(
                parent=view.parent, schedule=proposed, count=PREVIEW_COUNT
            ),
        )
        shown = fire_times(answer.fire_times, proposed.spec.timezone)
    except BadForm as error:
        shown = str(error)
    return await _list_page(view, dict(view.form), shown)


async def _list_page(
    view: View, form: dict[str, str], shown: list[dict[str, str]] | str | None
) -> Response:
    """The schedules, under the create form (open, with its preview, when given one)."""
    listed = await view.call(
        view.api.schedules.ListSchedules,
        schedule_pb2.ListSchedulesRequest(parent=view.parent, page_size=500),
    )
    return view.render(
        "schedules.html",
        schedules=list(listed.schedules),
        kinds=KINDS,
        overlaps=OVERLAPS,
        snoozes=SNOOZES,
        form=form,
        preview=shown,
        open_form=shown is not None,
    )


async def create(view: View) -> Response:
    schedule = schedule_pb2.Schedule()
    try:
        _apply(schedule, view.form)
    except BadForm as error:
        return view.render("error.html", status=400, message=str(error))
    created = await view.call(
        view.api.schedules.CreateSchedule,
        schedule_pb2.CreateScheduleRequest(
            parent=view.parent, schedule_id=view.form.get("schedule_id", ""), schedule=schedule
        ),
    )
    return back(view, f"/ui/schedules/{created.name.rsplit('/', 1)[-1]}", "Schedule created.")


async def detail(view: View) -> Response:
    schedule = await view.call(
        view.api.schedules.GetSchedule, schedule_pb2.GetScheduleRequest(name=_name(view))
    )
    answer = await view.call(
        view.api.schedules.PreviewSchedule,
        schedule_pb2.PreviewScheduleRequest(name=schedule.name, count=10),
    )
    return view.render(
        "schedule.html",
        schedule=schedule,
        preview=fire_times(answer.fire_times, schedule.spec.timezone),
        kinds=KINDS,
        overlaps=OVERLAPS,
        snoozes=SNOOZES,
    )


async def update(view: View) -> Response:
    current = await view.call(
        view.api.schedules.GetSchedule, schedule_pb2.GetScheduleRequest(name=_name(view))
    )
    try:
        changed = _apply(current, view.form)
    except BadForm as error:
        return view.render("error.html", status=400, message=str(error))
    if changed:
        # Only the changed fields are sent; the rest of the message is not read.
        sent = schedule_pb2.Schedule(name=current.name)
        for field in changed:
            if current.DESCRIPTOR.fields_by_name[field].message_type is not None:
                getattr(sent, field).CopyFrom(getattr(current, field))
            else:
                setattr(sent, field, getattr(current, field))
        await view.call(
            view.api.schedules.UpdateSchedule,
            schedule_pb2.UpdateScheduleRequest(
                schedule=sent, update_mask=field_mask_pb2.FieldMask(paths=changed)
            ),
        )
    return back(view, f"/ui/schedules/{_id(view)}", "Schedule saved." if changed else "")


async def pause(view: View) -> Response:
    await view.call(
        view.api.schedules.PauseSchedule,
        schedule_pb2.PauseScheduleRequest(name=_name(view), notes=view.form.get("notes", "")),
    )
    return back(view, "/ui/schedules", "Schedule paused.")


async def resume(view: View) -> Response:
    await view.call(
        view.api.schedules.ResumeSchedule, schedule_pb2.ResumeScheduleRequest(name=_name(view))
    )
    return back(view, "/ui/schedules", "Schedule resumed.")


async def snooze(view: View) -> Response:
    seconds = SNOOZES.get(view.form.get("delay", ""), 0)
    await view.call(
        view.api.schedules.SnoozeSchedule,
        schedule_pb2.SnoozeScheduleRequest(
            name=_name(view),
            delay=duration_pb2.Duration(seconds=seconds),
            reason=view.form.get("reason", ""),
        ),
    )
    return back(view, "/ui/schedules", f"Schedule snoozed for {timedelta(seconds=seconds)}.")


async def run_now(view: View) -> Response:
    task = await view.call(
        view.api.schedules.RunScheduleNow, schedule_pb2.RunScheduleNowRequest(name=_name(view))
    )
    ran = task.name.rsplit("/", 1)[-1] if task.name else "none (overlap policy)"
    return back(view, "/ui/schedules", f"Schedule run now: task {ran}.")


async def cancel(view: View) -> Response:
    await view.call(
        view.api.schedules.CancelSchedule, schedule_pb2.CancelScheduleRequest(name=_name(view))
    )
    return back(view, "/ui/schedules", "Schedule cancelled.")


ROUTES = [
    ("/ui/schedules", schedule_list, ["GET"]),
    ("/ui/schedules", create, ["POST"]),
    ("/ui/schedules/preview", preview, ["POST"]),
    ("/ui/schedules/{schedule}", detail, ["GET"]),
    ("/ui/schedules/{schedule}/update", update, ["POST"]),
    ("/ui/schedules/{schedule}/pause", pause, ["POST"]),
    ("/ui/schedules/{schedule}/resume", resume, ["POST"]),
    ("/ui/schedules/{schedule}/snooze", snooze, ["POST"]),
    ("/ui/schedules/{schedule}/run", run_now, ["POST"]),
    ("/ui/schedules/{schedule}/cancel", cancel, ["POST"]),
]
