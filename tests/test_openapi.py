"""/openapi.json: generated from the contract, valid OpenAPI 3.1, and true to the server."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conveyor.server.app import ConveyorServer
from conveyor.server.gateway.routes import bindings
from conveyor.server.rpc.rules import SERVICES

# Streams that never end on their own (a watch tails live events) cannot be fuzzed
# request by request.
ENDLESS = {"EventService_WatchEvents"}
EXAMPLES_PER_OPERATION = 15


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
    assert task["input"] == {"description": "Any JSON value."}
    assert task["labels"] == {"type": "object", "additionalProperties": {"type": "string"}}
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


def fuzz(document: dict[str, Any], base_url: str, token: str) -> list[str]:
    """Runs generated requests against every operation; returns the failures."""
    schema = schemathesis.openapi.from_dict(document)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        if operation.definition.raw.get("operationId") in ENDLESS:
            continue

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case[Any]) -> None:
            response = case.call(
                base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=20
            )
            selected = checks
            if response.status_code == 501 and response.json().get("code") == "not_implemented":
                # Methods of later issues answer 501 on purpose; their problem still
                # has to fit the schema.
                selected = checks[1:]
            case.validate_response(response, checks=selected)

        try:
            run()
        except (Exception, FailureGroup) as error:
            failures.append(f"{operation.label}: {str(error).strip()}")
    return failures


@pytest.mark.timeout(120)
async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    server: ConveyorServer, admin_key: str, document: dict[str, Any]
) -> None:
    # The generated requests are synchronous; a thread keeps the server's loop serving.
    failures = await asyncio.to_thread(fuzz, document, server.http_base_url, admin_key)
    assert failures == [], "\n\n".join(failures)


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
