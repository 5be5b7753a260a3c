"""The seed APIs' shared machinery (issue 20): translation only, anonymous access on
loopback alone, and the key it uses."""

from __future__ import annotations

import ast
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from compat_support import assert_seed_problem, curl_examples, seed_text  # type: ignore[import-not-found]

from conveyor.server.app import ConveyorServer
from conveyor.server.compat.access import is_loopback
from conveyor.server.services import default_hooks
from conveyor.server.settings import Settings

COMPAT = Path(__file__).resolve().parent.parent / "service" / "conveyor" / "server" / "compat"
# What an adapter may not reach: it calls v1 over gRPC (compat/v1.py), so every rule
# stays in one place. Store, domain, loops, streams and the rpc servicers are all below
# the interceptor.
FORBIDDEN = ("store", "domain", "rpc", "loops", "streams", "events", "wakeups", "registry")


def test_compat_imports_no_store_domain_or_rpc_module() -> None:
    found = []
    for path in sorted(COMPAT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[:2] == ["conveyor", "server"] and parts[2:3] and parts[2] in FORBIDDEN:
                    found.append(f"{path.name}: {name}")
    assert found == []
    assert len(list(COMPAT.glob("*.py"))) >= 5  # the check saw the package


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.9.8.7") and is_loopback("::1")
    assert not is_loopback("192.0.2.2") and not is_loopback("10.0.0.1")
    assert not is_loopback("::ffff:192.0.2.2") and not is_loopback("") and not is_loopback(None)
    assert not is_loopback("localhost")  # a name is never trusted, only an address


async def v1_get(server: ConveyorServer, key: str, collection: str) -> Any:
    async with httpx.AsyncClient(
        base_url=server.http_base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as http:
        response = await http.get(f"/v1/projects/default/{collection}")
    assert response.status_code == 200, response.text
    return response.json()


def _outside_address() -> str:
    """An address of this machine that is not loopback (the one it would route out
    of); the test needs one, as a request from it is a request from elsewhere."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
        except OSError:
            pytest.skip("this machine has no non-loopback IPv4 address")
        address: str = probe.getsockname()[0]
    if is_loopback(address):
        pytest.skip("this machine has no non-loopback IPv4 address")
    return address


@pytest.fixture
def server_settings(server_settings: Settings) -> Settings:
    # Every address, so the same server is reached from loopback and from outside.
    return server_settings.replace(compat_anonymous="operator", http_address="0.0.0.0:0")


@pytest_asyncio.fixture
async def outside(server: ConveyorServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client reaching the server through the machine's non-loopback address."""
    address = _outside_address()
    async with httpx.AsyncClient(
        base_url=f"http://{address}:{server.http_port}", timeout=10, trust_env=False
    ) as client:
        yield client


async def test_keyless_requests_act_anonymously_from_loopback_only(
    server: ConveyorServer, outside: httpx.AsyncClient, admin_key: str
) -> None:
    body = {"activity_type": "session.run", "input": "example"}
    async with httpx.AsyncClient(base_url=server.http_base_url, timeout=10) as local:
        assert server.http_base_url.startswith("http://127.0.0.1:")
        accepted = await local.post("/api/v1/durable/tasks", json=body)
    assert accepted.status_code == 201, accepted.text
    refused = await outside.post("/api/v1/durable/tasks", json=body)
    problem = assert_seed_problem(refused, 401, "api_key_missing")
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert problem["allowed_actions"][0]["rel"] == "authenticate"
    # Nothing was created by the refused request: one task in the project.
    assert len((await v1_get(server, admin_key, "tasks"))["tasks"]) == 1
    # The same request with a key is accepted from outside.
    with_key = await outside.post(
        "/api/v1/durable/tasks", json=body, headers={"Authorization": f"Bearer {admin_key}"}
    )
    assert with_key.status_code == 201, with_key.text


async def test_the_anonymous_key_is_an_ordinary_hashed_key_created_once(
    server: ConveyorServer, admin_key: str, tmp_path: Path
) -> None:
    keys = (await v1_get(server, admin_key, "apiKeys"))["api_keys"]
    [anonymous] = [k for k in keys if k["display_name"] == "compat anonymous (operator)"]
    assert anonymous["role"] == "ROLE_OPERATOR"
    assert anonymous["secret"] == ""  # never shown again: only its hash is stored
    commands = (await v1_get(server, admin_key, "commands"))["commands"]
    created = [c for c in commands if c["target"] == anonymous["name"]]
    assert len(created) == 1
    assert created[0]["issued_by"] == "local:conveyor serve --compat-anonymous"
    # A second server on the same database (a replica, a restart) uses the same key
    # and creates nothing.
    settings = server.settings.replace(data_dir=tmp_path / "second", http_address="127.0.0.1:0")
    second = ConveyorServer(settings, default_hooks())
    await second.start()
    try:
        async with httpx.AsyncClient(base_url=second.http_base_url, timeout=10) as local:
            response = await local.post("/api/v1/durable/tasks", json={"activity_type": "x"})
        assert response.status_code == 201, response.text
    finally:
        await second.stop()
    keys = (await v1_get(server, admin_key, "apiKeys"))["api_keys"]
    assert [k["display_name"] for k in keys].count("compat anonymous (operator)") == 1
    commands = (await v1_get(server, admin_key, "commands"))["commands"]
    assert len([c for c in commands if c["target"] == anonymous["name"]]) == 1
    tasks = (await v1_get(server, admin_key, "tasks"))["tasks"]
    assert {t["creator"] for t in tasks} == {anonymous["name"]}


def test_seed_examples_are_found() -> None:
    # The extraction the seed tests rely on sees every documented curl command.
    assert len(curl_examples(seed_text("000"))) == 4
    assert len(curl_examples(seed_text("002"))) == 1
    assert len(curl_examples(seed_text("003"))) == 1


def test_compat_anonymous_setting_is_a_role() -> None:
    assert Settings(compat_anonymous="Operator").compat_anonymous == "operator"
    assert Settings(compat_anonymous="").compat_anonymous is None
    with pytest.raises(ValueError, match="compat_anonymous"):
        Settings(compat_anonymous="root")
    assert Settings.from_env({"CONVEYOR_COMPAT_ANONYMOUS": "viewer"}).compat_anonymous == "viewer"


async def test_v1_rest_problems_carry_next_steps_that_work(
    server: ConveyorServer, admin_key: str
) -> None:
    async with httpx.AsyncClient(
        base_url=server.http_base_url,
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=10,
    ) as http:
        body = {"kind": "k", "dedupe_policy": {"key": "once", "on_conflict": "REJECT"}}
        first = await http.post("/v1/projects/default/tasks", json=body)
        assert first.status_code == 200, first.text
        conflict = await http.post("/v1/projects/default/tasks", json=body)
        assert conflict.status_code == 409
        [action] = conflict.json()["allowed_actions"]
        assert (action["rel"], action["method"]) == ("get-existing", "GET")
        existing = await http.get(action["href"])
        assert existing.json()["name"] == first.json()["name"]
        too_long = await http.post("/v1/projects/default/tasks", json={"kind": "k" * 201})
        [fix] = too_long.json()["allowed_actions"]
        assert fix == {
            "rel": "fix-and-retry",
            "method": "POST",
            "operation_id": "TaskService_CreateTask",
            "href": "/v1/projects/default/tasks",
            "hint": "Shorten 'task.kind' to <= 200 chars.",
        }


def test_serve_takes_compat_anonymous() -> None:
    from conveyor.server.__main__ import build_parser, settings_from_args

    args = build_parser().parse_args(["--compat-anonymous", "viewer"])
    assert settings_from_args(args, {}).compat_anonymous == "viewer"
    args = build_parser().parse_args([])
    assert settings_from_args(args, {}).compat_anonymous is None


def test_errors_naming_their_resource_carry_resource_info() -> None:
    from google.rpc import error_details_pb2

    from conveyor.server import errors
    from conveyor.server.gateway.actions import unpack
    from conveyor.server.rpc.status import to_status_proto

    held = errors.AlreadyExists(
        "dedupe key 'k' is held by projects/p/tasks/t1",
        metadata={"task": "projects/p/tasks/t1", "key": "k"},
    )
    info = unpack(to_status_proto(held).details)["ResourceInfo"]
    assert isinstance(info, error_details_pb2.ResourceInfo)
    assert (info.resource_type, info.resource_name) == ("conveyor.dev/Task", "projects/p/tasks/t1")
    missing = errors.NotFound("gone", metadata={"resource": "projects/p/schedules/s"})
    info = unpack(to_status_proto(missing).details)["ResourceInfo"]
    assert isinstance(info, error_details_pb2.ResourceInfo)
    assert info.resource_type == "conveyor.dev/Schedule"
    assert "ResourceInfo" not in unpack(to_status_proto(errors.NotFound("no name")).details)
