"""Schemathesis against a live server: every check, schema-valid and schema-violating
requests for every operation, a bounded number of each.

Valid data must be accepted (2xx, or a status that is about the resource rather than
the request: 401, 403, 404, 409, 412, 429, 5xx is not_a_server_error's business), and
invalid data refused; answers must fit the document. A few generated values cannot be
right by their schema alone and are steered (see `steer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import negative_data_rejection

from conveyor.server.app import ConveyorServer

# Streams that never end on their own (a watch tails live events) cannot be fuzzed
# request by request.
ENDLESS = {"EventService_WatchEvents"}
EXAMPLES = 4
# ReportTasks acknowledges each complete and fail on its own, in a 200 (DESIGN.md: a
# report item is fenced and acknowledged on its own), so a bad item is not a refused call.
# WatchTaskLogs checks its task name, attempt and after_seq once the stream is admitted,
# after its headers went out, so over REST a bad value ends a 200 stream with an error
# event (SSE) or line (NDJSON) instead of a 400.
EXCLUDED: dict[str, list[Any]] = {
    "WorkerService_ReportTasks": [negative_data_rejection],
    "TaskService_WatchTaskLogs": [negative_data_rejection],
}
CONFIG = {
    "checks": {
        # FAILED_PRECONDITION (412): a well-formed request the resource's state refuses,
        # such as a lease_id that is not the current one.
        "positive_data_acceptance": {
            "expected-statuses": ["2xx", "401", "403", "404", "409", "412", "429", "5xx"]
        },
    }
}


# A valid expression of each schedule kind: the grammar depends on the kind.
EXPRESSIONS = {
    "SCHEDULE_KIND_CRON": "0 3 * * *",
    "SCHEDULE_KIND_RRULE": "FREQ=DAILY;BYHOUR=8",
    "SCHEDULE_KIND_ONCE": "2030-01-01T00:00:00Z",
    "SCHEDULE_KIND_EVENT": "deploy.*",
}


def steer(case: schemathesis.Case[Any]) -> None:
    """Keeps schema-valid requests valid where a schema cannot say enough."""
    if case.query:
        # Page tokens are opaque: only the ones a List returned are valid.
        case.query.pop("page_token", None)
        for key, value in case.query.items():
            case.query[key] = _same_project(case, value)
        if case.query.get("view") == "TASK_VIEW_BASIC" and "fields" in case.query:
            # The basic view has no input or result column to export.
            given = case.query["fields"]
            given = given if isinstance(given, list) else [given]
            case.query["fields"] = [f for f in given if f not in ("input", "result")] or ["name"]
    if isinstance(case.body, dict):
        case.body = _steer_body(case, case.body)


def _same_project(case: schemathesis.Case[Any], value: Any) -> Any:
    # A reference to another resource must stay in the path's project.
    project = (case.path_parameters or {}).get("project")
    if isinstance(value, list):
        return [_same_project(case, item) for item in value]
    if project and isinstance(value, str) and value.startswith("projects/"):
        return "/".join(["projects", project, *value.split("/")[2:]])
    return value


def _steer_body(case: schemathesis.Case[Any], node: Any) -> Any:
    if isinstance(node, list):
        return [_steer_body(case, item) for item in node]
    if isinstance(node, str):
        # Free-form JSON (input, data, progress) holds no NUL: PostgreSQL stores none.
        return _same_project(case, node.replace("\x00", ""))
    if not isinstance(node, dict):
        return node
    node = {key.replace("\x00", ""): _steer_body(case, value) for key, value in node.items()}
    if isinstance(node.get("spec"), dict):
        # A cron line, an RRULE, a time or a glob, by kind; and an IANA zone.
        spec = node["spec"]
        spec["expression"] = EXPRESSIONS.get(spec.get("kind", ""), "0 3 * * *")
        spec["timezone"] = "UTC"
    if "wait_timeout" in node:
        node["wait_timeout"] = "0s"  # a long poll would only make the test slow
    if "max_backoff" in node:
        node["max_backoff"] = "9999s"  # not less than initial_backoff
    if "dependency_failure_policy" in node and not node.get("depends_on"):
        # A policy for failed dependencies means nothing without any (a 400 naming it).
        del node["dependency_failure_policy"]
    return node


def runner(
    operation: Any, mode: GenerationMode, base_url: str, headers: dict[str, str]
) -> Callable[[], None]:
    """A Hypothesis test of one operation with data of one kind, under every check."""
    checks: list[Any] = list(CHECKS.get_all())

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case[Any]) -> None:
        if mode is GenerationMode.POSITIVE:
            steer(case)
        elif isinstance(case.body, dict) and isinstance(case.body.get("atomic"), bool):
            # A batch that is not atomic answers 200 with a Status for each refused item
            # (DESIGN.md: per-item results); an atomic one refuses the whole call.
            case.body["atomic"] = True
        # A case whose headers are the invalid part goes without our key (its own, if any).
        auth = {} if case.meta and case.meta.is_negative_at(ParameterLocation.HEADER) else headers
        response = case.call(base_url=base_url, headers=auth, timeout=20)
        case.validate_response(
            response,
            checks=checks,
            excluded_checks=EXCLUDED.get(operation.definition.raw.get("operationId"), []),
            headers=auth,
            transport_kwargs={"base_url": base_url, "headers": auth},
        )

    return run


def fuzz(document: dict[str, Any], base_url: str, token: str) -> list[str]:
    """Runs generated requests against every operation; returns the failures."""
    load_all_checks()
    schema = schemathesis.openapi.from_dict(document, config=SchemathesisConfig.from_dict(CONFIG))
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        if operation.definition.raw.get("operationId") in ENDLESS:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                runner(operation, mode, base_url, headers)()
            except (Exception, FailureGroup) as error:
                inner = getattr(error, "exceptions", ())
                text = "\n".join(str(e).strip() for e in (error, *inner))
                failures.append(f"{operation.label} ({mode.value}): {text}")
    return failures


@pytest.mark.timeout(300)
# Schemathesis draws some values with `random` inside its strategies; Hypothesis warns
# once, which `filterwarnings = error` would turn into a failure of one first call.
@pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module:hypothesis.errors.HypothesisWarning"
)
async def test_schemathesis_with_every_check_finds_nothing(
    server: ConveyorServer, admin_key: str
) -> None:
    async with httpx.AsyncClient(base_url=server.http_base_url) as http:
        document = (await http.get("/openapi.json")).json()
    # The generated requests are synchronous; a thread keeps the server's loop serving.
    failures = await asyncio.to_thread(fuzz, document, server.http_base_url, admin_key)
    assert failures == [], f"{len(failures)} failures:\n\n" + "\n\n".join(failures)
