"""google.rpc.Status -> problem+json: status codes, details and allowed actions."""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from conveyor.server.gateway import problems
from conveyor.server.gateway.routes import Router, bindings
from conveyor.server.rpc.rules import SERVICES
from conveyor.v1 import command_pb2, schedule_pb2, worker_pb2

ROUTER = Router(bindings(SERVICES))


def status(code: int, reason: str, *details: object, **metadata: str) -> status_pb2.Status:
    packed = []
    for detail in (error_details_pb2.ErrorInfo(reason=reason, metadata=metadata), *details):
        item = any_pb2.Any()
        item.Pack(detail)  # type: ignore[arg-type]
        packed.append(item)
    return status_pb2.Status(code=code, message=f"{reason} happened", details=packed)


@pytest.mark.parametrize(
    ("code", "http"),
    [
        (code_pb2.INVALID_ARGUMENT, 400),
        (code_pb2.UNAUTHENTICATED, 401),
        (code_pb2.PERMISSION_DENIED, 403),
        (code_pb2.NOT_FOUND, 404),
        (code_pb2.ALREADY_EXISTS, 409),
        (code_pb2.ABORTED, 409),
        (code_pb2.FAILED_PRECONDITION, 412),
        (code_pb2.RESOURCE_EXHAUSTED, 429),
        (code_pb2.CANCELLED, 499),
        (code_pb2.INTERNAL, 500),
        (code_pb2.UNIMPLEMENTED, 501),
        (code_pb2.UNAVAILABLE, 503),
        (code_pb2.DEADLINE_EXCEEDED, 504),
    ],
)
def test_codes_map_to_http_statuses(code: int, http: int) -> None:
    problem = problems.from_status(status(code, "SOME_REASON"), "/v1/x")
    assert problem.status == http
    assert problem.body["code"] == "some_reason"
    assert problem.body["type"] == "https://conveyor.dev/problems/some-reason"
    assert problem.body["title"] == "Some reason"


def test_without_error_info_the_code_names_the_problem() -> None:
    problem = problems.from_status(status_pb2.Status(code=code_pb2.UNAVAILABLE), "/v1/x")
    assert (problem.status, problem.body["code"], problem.body["detail"]) == (
        503,
        "unavailable",
        "unavailable",
    )


def test_details_become_members_and_headers() -> None:
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field="task.kind", description="is required"
            )
        ]
    )
    retry = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000)
    )
    problem = problems.from_status(
        status(code_pb2.RESOURCE_EXHAUSTED, "RATE_LIMITED", bad, retry, queue="q"),
        "/v1/projects/p/tasks",
        request_id="r-1",
    )
    assert problem.body["errors"] == [{"field": "task.kind", "description": "is required"}]
    assert problem.body["retry_after_seconds"] == 1.5
    assert problem.headers["Retry-After"] == "2"
    assert problem.body["metadata"] == {"queue": "q"}
    assert problem.body["request_id"] == "r-1"
    assert problem.body["instance"] == "/v1/projects/p/tasks"


def test_a_paused_queue_suggests_resuming_it() -> None:
    request = worker_pb2.LeaseTasksRequest(parent="projects/acme", queues=["mail"])
    problem = problems.from_status(
        status(code_pb2.FAILED_PRECONDITION, "QUEUE_PAUSED", queue="mail"),
        "/v1/projects/acme/tasks:lease",
        router=ROUTER,
        request=request,
    )
    [action] = problem.body["allowed_actions"]
    assert action["rel"] == "resume"
    assert (action["method"], action["href"]) == (
        "POST",
        "/v1/projects/acme/queues/mail:resume",
    )
    assert action["operation_id"] == "QueueService_ResumeQueue"
    assert action["hint"]


def test_a_stale_purge_token_suggests_reading_the_queue_again() -> None:
    request = command_pb2.PurgeQueueRequest(
        parent="projects/acme", queue="mail", confirm_token="old"
    )
    problem = problems.from_status(
        status(code_pb2.FAILED_PRECONDITION, "PURGE_TOKEN_STALE", depth="12"),
        "/v1/projects/acme/commands:purgeQueue",
        router=ROUTER,
        request=request,
    )
    [action] = problem.body["allowed_actions"]
    assert (action["rel"], action["method"], action["href"]) == (
        "refresh",
        "GET",
        "/v1/projects/acme/queues/mail",
    )
    assert action["operation_id"] == "QueueService_GetQueue"


def test_a_cancelled_schedule_suggests_creating_another() -> None:
    request = schedule_pb2.PauseScheduleRequest(name="projects/acme/schedules/nightly")
    problem = problems.from_status(
        status(
            code_pb2.FAILED_PRECONDITION,
            "SCHEDULE_CANCELLED",
            resource="projects/acme/schedules/nightly",
        ),
        "/v1/projects/acme/schedules/nightly:pause",
        router=ROUTER,
        request=request,
    )
    [action] = problem.body["allowed_actions"]
    assert (action["rel"], action["method"], action["href"]) == (
        "create",
        "POST",
        "/v1/projects/acme/schedules",
    )
    assert action["operation_id"] == "ScheduleService_CreateSchedule"
    assert "cancelled" in action["hint"]


def test_a_running_bulk_action_says_to_repeat_the_call_after_it() -> None:
    problem = problems.from_status(
        status(
            code_pb2.FAILED_PRECONDITION,
            "BULK_ACTION_RUNNING",
            running="PurgeQueue",
            project="projects/acme",
        ),
        "/v1/projects/acme/tasks:batchDelete",
        router=ROUTER,
    )
    [action] = problem.body["allowed_actions"]
    assert (action["rel"], action["href"]) == ("retry-later", "/v1/projects/acme/tasks:batchDelete")
    assert action["hint"].startswith("PurgeQueue is running in projects/acme")


def test_no_action_without_a_resource_to_point_at() -> None:
    problem = problems.from_status(
        status(code_pb2.FAILED_PRECONDITION, "QUEUE_PAUSED"), "/v1/x", router=ROUTER
    )
    assert problem.body["allowed_actions"] == []


def test_a_bad_field_says_how_to_fix_it_and_links_the_call() -> None:
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field="task.kind",
                description="must be 1 to 200 characters without control characters",
            ),
            error_details_pb2.BadRequest.FieldViolation(
                field="task.queue", description="is required"
            ),
        ]
    )
    binding = ROUTER.by_rpc("conveyor.v1.TaskService.CreateTask")
    problem = problems.from_status(
        status(code_pb2.INVALID_ARGUMENT, "INVALID_ARGUMENT", bad),
        "/v1/projects/acme/tasks",
        router=ROUTER,
        binding=binding,
    )
    assert problem.body["allowed_actions"] == [
        {
            "rel": "fix-and-retry",
            "method": "POST",
            "operation_id": "TaskService_CreateTask",
            "href": "/v1/projects/acme/tasks",
            "hint": "Shorten 'task.kind' to <= 200 chars.",
        },
        {
            "rel": "fix-and-retry",
            "method": "POST",
            "operation_id": "TaskService_CreateTask",
            "href": "/v1/projects/acme/tasks",
            "hint": "Set 'task.queue'; it is required.",
        },
    ]


def test_a_dedupe_conflict_links_the_existing_task() -> None:
    name = "projects/acme/tasks/01a2-existing"
    problem = problems.from_status(
        status(code_pb2.ALREADY_EXISTS, "ALREADY_EXISTS", task=name, key="k"),
        "/v1/projects/acme/tasks",
        router=ROUTER,
    )
    [action] = problem.body["allowed_actions"]
    assert (action["rel"], action["method"], action["href"]) == (
        "get-existing",
        "GET",
        "/v1/projects/acme/tasks/01a2-existing",
    )
    assert action["operation_id"] == "TaskService_GetTask"


def test_an_existing_resource_named_by_resource_info_is_linked() -> None:
    info = error_details_pb2.ResourceInfo(resource_name="projects/acme/schedules/nightly")
    problem = problems.from_status(
        status(code_pb2.ALREADY_EXISTS, "ALREADY_EXISTS", info), "/v1/x", router=ROUTER
    )
    [action] = problem.body["allowed_actions"]
    assert (action["rel"], action["href"]) == (
        "get-existing",
        "/v1/projects/acme/schedules/nightly",
    )


def test_a_rate_limit_says_retry_later_with_the_seconds() -> None:
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=3))
    binding = ROUTER.by_rpc("conveyor.v1.TaskService.CreateTask")
    problem = problems.from_status(
        status(code_pb2.RESOURCE_EXHAUSTED, "RATE_LIMITED", retry),
        "/v1/projects/acme/tasks",
        router=ROUTER,
        binding=binding,
    )
    [action] = problem.body["allowed_actions"]
    assert action["rel"] == "retry-later"
    assert action["hint"] == "Retry the same request after 3 s."
    assert action["href"] == "/v1/projects/acme/tasks"
    assert problem.body["retry_after_seconds"] == 3


def test_a_missing_key_says_how_to_authenticate() -> None:
    problem = problems.from_status(
        status(code_pb2.UNAUTHENTICATED, "API_KEY_MISSING"), "/v1/x", router=ROUTER
    )
    [action] = problem.body["allowed_actions"]
    assert action["rel"] == "authenticate"
    assert "Bearer" in action["hint"]


def test_a_missing_resource_links_its_collection() -> None:
    problem = problems.from_status(
        status(code_pb2.NOT_FOUND, "NOT_FOUND", resource="projects/acme/tasks/01a2"),
        "/v1/projects/acme/tasks/01a2",
        router=ROUTER,
    )
    [action] = problem.body["allowed_actions"]
    assert (action["rel"], action["method"], action["href"]) == (
        "list",
        "GET",
        "/v1/projects/acme/tasks",
    )
    assert action["operation_id"] == "TaskService_ListTasks"


def test_another_projects_name_says_which_key_to_use() -> None:
    problem = problems.from_status(
        status(code_pb2.PERMISSION_DENIED, "PROJECT_DENIED", project="projects/beta"),
        "/v1/projects/beta/tasks",
        router=ROUTER,
    )
    [action] = problem.body["allowed_actions"]
    assert action["rel"] == "authenticate"
    assert "projects/beta" in action["hint"]


def test_a_reused_request_id_links_what_it_made_and_asks_for_a_new_one() -> None:
    binding = ROUTER.by_rpc("conveyor.v1.TaskService.CreateTask")
    problem = problems.from_status(
        status(
            code_pb2.ALREADY_EXISTS,
            "REQUEST_ID_REUSED",
            request_id="r1",
            resource="projects/acme/tasks/01a2",
        ),
        "/v1/projects/acme/tasks",
        router=ROUTER,
        binding=binding,
    )
    rels = [(a["rel"], a.get("href")) for a in problem.body["allowed_actions"]]
    assert rels == [
        ("get-existing", "/v1/projects/acme/tasks/01a2"),
        ("retry-with-new-request-id", "/v1/projects/acme/tasks"),
    ]
