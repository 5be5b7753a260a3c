"""/openapi.json: generated from the contract, valid OpenAPI 3.1, and true to the server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from conveyor.server.app import ConveyorServer
from conveyor.server.gateway.routes import bindings
from conveyor.server.rpc.rules import SERVICES


@pytest.fixture
async def document(server: ConveyorServer) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.http_base_url) as http:
        response = await http.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


async def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"] == "3.1.0"


async def test_every_binding_is_an_operation(document: dict[str, Any]) -> None:
    operations = {
        operation["operationId"]: (method.upper(), path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    for binding in bindings(SERVICES):
        assert binding.operation_id in operations
        method, path = operations[binding.operation_id]
        assert method == binding.http_method
        assert path == binding.template.openapi()[0]


async def test_shapes_follow_proto3_json(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    task = schemas["Task"]["properties"]
    assert task["create_time"] == {"type": "string", "format": "date-time", "readOnly": True}
    assert task["lease_duration"]["pattern"].endswith("s$")
    assert task["state"] == {"$ref": "#/components/schemas/TaskState", "readOnly": True}
    assert "TASK_STATE_FAILED" in schemas["TaskState"]["enum"]
    assert task["input"] == {"description": "Any JSON value without NUL characters."}
    assert task["labels"]["additionalProperties"] == {"type": "string", "maxLength": 255}
    assert task["labels"]["maxProperties"] == 64
    assert schemas["Event"]["properties"]["id"]["type"] == "string"  # int64

    list_tasks = document["paths"]["/v1/projects/{project}/tasks"]["get"]
    params = {p["name"]: p for p in list_tasks["parameters"]}
    assert params["project"]["in"] == "path"
    assert params["filter.states"]["schema"]["type"] == "array"
    assert params["filter.labels"]["style"] == "deepObject"
    assert params["filter.create_time_after"]["schema"]["format"] == "date-time"
    for status in ("400", "401", "403", "404", "409", "412", "429", "500", "503", "504"):
        problem = list_tasks["responses"][status]
        assert problem == {"$ref": f"#/components/responses/Problem{status}"}
        media = document["components"]["responses"][f"Problem{status}"]["content"]
        assert media["application/problem+json"]["schema"]["$ref"].endswith("/Problem")

    create = document["paths"]["/v1/projects/{project}/tasks"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/TaskInput"}
    assert "413" in create["responses"]
    update = document["paths"]["/v1/projects/{project}/queues/{queue}"]["patch"]
    assert {p["name"] for p in update["parameters"]} == {"project", "queue", "update_mask"}
    assert update["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/QueuePatch"
    }
    export = document["paths"]["/v1/projects/{project}/tasks:export"]["get"]
    assert "text/csv" in export["responses"]["200"]["content"]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


async def test_requests_state_what_the_server_requires(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    # Required from field_behavior; a request enum has no *_UNSPECIFIED value, and an
    # answer's keeps it (a zero enum is printed).
    assert schemas["TaskInput"]["required"] == ["kind"]
    assert "TASK_STATE_UNSPECIFIED" not in schemas["TaskStateInput"]["enum"]
    assert "TASK_STATE_UNSPECIFIED" in schemas["TaskState"]["enum"]
    assert set(schemas["CreateTaskRequest"]["required"]) == {"parent", "task"}
    assert set(schemas["ScheduleInput"]["required"]) == {"spec", "task_template"}
    assert set(schemas["ScheduleSpecInput"]["required"]) == {"kind", "expression"}
    # An update's patch requires nothing (AIP-134); an answer requires what it prints.
    assert "required" not in schemas["SchedulePatch"]
    assert {"name", "title", "state", "run_count"} <= set(schemas["Schedule"]["required"])
    # Ranges and id patterns from the validation limits.
    list_tasks = document["paths"]["/v1/projects/{project}/tasks"]["get"]
    params = {p["name"]: p for p in list_tasks["parameters"]}
    assert params["page_size"]["schema"]["maximum"] == 5000
    assert params["project"]["schema"]["pattern"] == "^[a-z0-9-]{1,63}$"
    task = document["paths"]["/v1/projects/{project}/tasks/{task}"]["get"]["parameters"]
    assert task[1]["name"] == "task" and "[0-9a-fA-F]{8}-" in task[1]["schema"]["pattern"]
    priority = schemas["TaskInput"]["properties"]["priority"]
    assert (priority["minimum"], priority["maximum"]) == (0, 9)
    lease = document["paths"]["/v1/projects/{project}/tasks:lease"]["post"]
    lease_body = lease["requestBody"]["content"]["application/json"]["schema"]
    assert set(lease_body["required"]) == {"worker", "queues"}
    assert lease_body["properties"]["queues"]["minItems"] == 1
    create_project = document["paths"]["/v1/projects"]["post"]["parameters"]
    assert [p["required"] for p in create_project if p["name"] == "project_id"] == [True]


async def test_leasing_in_a_project_that_does_not_exist_is_not_found(
    server: ConveyorServer, admin_key: str
) -> None:
    # Found by schemathesis: the worker's row has a foreign key to its project, and the
    # violation was a 500.
    async with httpx.AsyncClient(
        base_url=server.http_base_url, headers={"Authorization": f"Bearer {admin_key}"}
    ) as http:
        response = await http.post(
            "/v1/projects/nope/tasks:lease", json={"worker": "w", "queues": ["q"]}
        )
    assert response.status_code == 404, response.text


async def test_what_schemathesis_found_is_refused_not_a_500(
    server: ConveyorServer, admin_key: str
) -> None:
    async with httpx.AsyncClient(
        base_url=server.http_base_url, headers={"Authorization": f"Bearer {admin_key}"}
    ) as http:
        # A schedule in a project that does not exist (a foreign key violation).
        schedule = {
            "spec": {"kind": "SCHEDULE_KIND_CRON", "expression": "0 3 * * *"},
            "task_template": {"kind": "k"},
        }
        response = await http.post("/v1/projects/nope/schedules", json=schedule)
        assert response.status_code == 404, response.text
        # NUL characters, which PostgreSQL cannot store: in text, labels and free JSON.
        response = await http.post(
            "/v1/projects", params={"project_id": "p1"}, json={"labels": {"a\x00": "b"}}
        )
        assert response.status_code == 400, response.text
        response = await http.post(
            "/v1/projects", params={"project_id": "p2"}, json={"display_name": "a\x00"}
        )
        assert [e["field"] for e in response.json()["errors"]] == ["project.display_name"]
        response = await http.post(
            "/v1/projects/default/events", json={"type": "deploy.done", "data": {"k": "\x00"}}
        )
        assert response.status_code == 400, response.text
        # null is no value of a field; a map key may hold brackets in a query string.
        response = await http.post(
            "/v1/projects", params={"project_id": "p3"}, json={"labels": None}
        )
        assert [e["field"] for e in response.json()["errors"]] == ["project.labels"]
        response = await http.get("/v1/projects/default/tasks", params={"filter.labels[a]b]": "c"})
        assert response.status_code == 200, response.text
