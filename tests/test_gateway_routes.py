"""Routes come from the contract: every http rule has a route, templates parse and match."""

from __future__ import annotations

import pytest
from google.api import http_pb2

from conveyor.server.gateway.descriptors import http_rule
from conveyor.server.gateway.dispatch import Gateway
from conveyor.server.gateway.routes import MethodNotAllowed, NoRoute, Router
from conveyor.server.gateway.templates import PathTemplate, TemplateError
from conveyor.server.gateway.transcode import BadInput, build_request
from conveyor.server.rpc.rules import SERVICES
from conveyor.v1 import event_pb2, project_pb2, queue_pb2, task_service_pb2


def rules() -> list[tuple[str, http_pb2.HttpRule]]:
    """(method full name, rule) for every rule and additional binding in the contract."""
    found = []
    for service in SERVICES:
        for method in service.methods:
            rule = http_rule(method)
            if rule is not None:
                found.append((method.full_name, rule))
                found.extend((method.full_name, extra) for extra in rule.additional_bindings)
    return found


def sample_path(template: PathTemplate) -> str:
    """A concrete path for a template: each `*` becomes a plausible id."""
    path, params = template.openapi()
    for param in params:
        path = path.replace("{" + param.name + "}", f"{param.name}-1")
    return path


@pytest.fixture(scope="module")
def router() -> Router:
    return Gateway("127.0.0.1:1").router


def test_every_http_rule_has_a_route(router: Router) -> None:
    declared = rules()
    assert len(declared) > 50
    missing = []
    for full_name, rule in declared:
        kind = rule.WhichOneof("pattern")
        verb, path = kind.upper(), getattr(rule, kind)
        template = PathTemplate(path)
        try:
            binding, values = router.resolve(verb, sample_path(template))
        except LookupError:
            missing.append(f"{verb} {path} ({full_name})")
            continue
        if binding.method.full_name != full_name or binding.template.text != path:
            missing.append(f"{verb} {path} is routed to {binding.method.full_name}")
        assert set(values) == {v.field_path for v in template.variables}
    assert missing == []
    assert len(router.bindings) == len(declared)


def test_methods_without_rules_have_no_route(router: Router) -> None:
    routed = {b.method.full_name for b in router.bindings}
    assert "conveyor.v1.WorkerService.Connect" not in routed


def test_templates_match_nested_fields_verbs_and_singletons() -> None:
    template = PathTemplate("/v1/{queue.name=projects/*/queues/*}")
    assert template.match("/v1/projects/p/queues/q") == {"queue.name": "projects/p/queues/q"}
    assert template.match("/v1/projects/p/queues/q/x") is None
    assert template.match("/v1/projects/p/queues/q:pause") is None

    cancel = PathTemplate("/v1/{name=projects/*/tasks/*}:cancel")
    assert cancel.verb == "cancel"
    assert cancel.match("/v1/projects/p/tasks/0190:cancel") == {"name": "projects/p/tasks/0190"}
    assert cancel.match("/v1/projects/p/tasks/0190") is None

    rotate = PathTemplate("/v1/{name=projects/*/webhookSecret}:rotate")
    assert rotate.match("/v1/projects/p/webhookSecret:rotate") == {
        "name": "projects/p/webhookSecret"
    }
    assert rotate.openapi()[0] == "/v1/projects/{project}/webhookSecret:rotate"

    # Values are matched encoded and decoded afterwards: %2F cannot add a segment.
    get = PathTemplate("/v1/{name=projects/*}")
    assert get.match("/v1/projects/a%2Fb") == {"name": "projects/a/b"}
    assert PathTemplate("/v1/{name=files/**}:x").match("/v1/files/a/b/c:x") == {
        "name": "files/a/b/c"
    }
    assert cancel.expand({"name": "projects/p/tasks/t 1"}) == "/v1/projects/p/tasks/t%201:cancel"
    assert cancel.expand({"name": "projects/p/queues/q"}) is None


@pytest.mark.parametrize(
    "text", ["v1/x", "/v1/{name", "/v1/{na me}", "/v1/x{y}", "/v1//x", "/v1/x:"]
)
def test_bad_templates_are_refused(text: str) -> None:
    with pytest.raises(TemplateError):
        PathTemplate(text)


def test_wrong_method_and_unknown_path(router: Router) -> None:
    with pytest.raises(MethodNotAllowed) as caught:
        router.resolve("DELETE", "/v1/projects/p/tasks")
    assert caught.value.allowed == ["GET", "POST"]
    with pytest.raises(NoRoute):
        router.resolve("GET", "/v2/projects")


def test_query_strings_fill_nested_repeated_map_and_well_known_fields(router: Router) -> None:
    binding, values = router.resolve("GET", "/v1/projects/p/tasks")
    query = [
        ("filter.states", "TASK_STATE_FAILED"),
        ("filter.states", "cancelled"),
        ("filter.states", "3"),
        ("filter.queues", "default"),
        ("filter.labels[env]", "prod"),
        ("filter.createTimeAfter", "2026-01-02T03:04:05Z"),
        ("pageSize", "50"),
        ("order_by", "priority desc"),
    ]
    request = build_request(binding, values, query, b"")
    assert isinstance(request, task_service_pb2.ListTasksRequest)
    assert request.parent == "projects/p"
    assert list(request.filter.states) == [6, 7, 3]
    assert list(request.filter.queues) == ["default"]
    assert dict(request.filter.labels) == {"env": "prod"}
    assert request.filter.create_time_after.ToJsonString() == "2026-01-02T03:04:05Z"
    assert (request.page_size, request.order_by) == (50, "priority desc")

    binding, values = router.resolve("GET", "/v1/projects/p/events:watch")
    watch = build_request(binding, values, [("after", "42"), ("filter.types", "task.*")], b"")
    assert isinstance(watch, event_pb2.WatchEventsRequest)
    assert (watch.after, list(watch.filter.types)) == (42, ["task.*"])


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ([("filter.states", "SLEEPY")], "filter.states"),
        ([("page_size", "1.5")], "page_size"),
        ([("page_size", "1"), ("page_size", "2")], "page_size"),
        ([("filter", "x")], "filter"),
        ([("filter.labels", "x")], "filter.labels"),
        ([("filter.create_time_after", "yesterday")], "filter.create_time_after"),
        ([("parent", "projects/q")], "parent"),
        ([("filter.nope", "1")], "filter.nope"),
    ],
)
def test_bad_query_values_name_their_parameter(
    router: Router, query: list[tuple[str, str]], field: str
) -> None:
    binding, values = router.resolve("GET", "/v1/projects/p/tasks")
    with pytest.raises(BadInput) as caught:
        build_request(binding, values, query, b"")
    assert [v.field for v in caught.value.violations] == [field]


def test_bodies_fill_the_whole_request_or_one_field(router: Router) -> None:
    binding, values = router.resolve("PATCH", "/v1/projects/p/queues/q")
    request = build_request(
        binding,
        values,
        [("update_mask", "max_concurrency,rate_limit")],
        b'{"maxConcurrency": 2, "rate_limit": "10/s", "name": "ignored"}',
    )
    assert isinstance(request, queue_pb2.UpdateQueueRequest)
    # The path wins over the body for path fields.
    assert request.queue.name == "projects/p/queues/q"
    assert (request.queue.max_concurrency, request.queue.rate_limit) == (2, "10/s")
    assert list(request.update_mask.paths) == ["max_concurrency", "rate_limit"]

    binding, values = router.resolve("POST", "/v1/projects/p/tasks/t:cancel")
    cancel = build_request(binding, values, [], b'{"reason": "enough"}')
    assert isinstance(cancel, task_service_pb2.CancelTaskRequest)
    assert (cancel.name, cancel.reason) == ("projects/p/tasks/t", "enough")
    assert build_request(binding, values, [], b"") == task_service_pb2.CancelTaskRequest(
        name="projects/p/tasks/t"
    )
    with pytest.raises(BadInput):
        build_request(binding, values, [("reason", "x")], b"")

    binding, values = router.resolve("POST", "/v1/projects")
    create = build_request(binding, values, [("project_id", "acme")], b'{"display_name": "A"}')
    assert create == project_pb2.CreateProjectRequest(
        project_id="acme", project=project_pb2.Project(display_name="A")
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{", "body"),
        (b"[1]", "task"),
        (b'{"kind": 5}', "task.kind"),
        (b'{"priority": "high"}', "task.priority"),
        (b'{"colour": "red"}', "task"),
        (b'{"state": "TASK_STATE_NAPPING"}', "task.state"),
    ],
)
def test_bad_bodies_name_the_field(router: Router, body: bytes, field: str) -> None:
    binding, values = router.resolve("POST", "/v1/projects/p/tasks")
    with pytest.raises(BadInput) as caught:
        build_request(binding, values, [], body)
    assert caught.value.violations[0].field == field
