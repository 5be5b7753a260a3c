"""ProjectService through the real client: projects, keys (shown once, stored hashed), secrets."""

from __future__ import annotations

import hashlib
import stat

import psycopg
import pytest
from google.protobuf import field_mask_pb2

from conveyor.client import (
    AlreadyExistsError,
    AsyncClient,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from conveyor.server.app import ConveyorServer
from conveyor.v1 import enums_pb2, project_pb2


async def test_bootstrap_key_file_is_private_and_lists_every_project(
    server: ConveyorServer, admin_key: str
) -> None:
    path = server.data_dir / "admin.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
        await client.create_project("acme", display_name="Acme")
        names = [p.name async for p in client.list_projects(page_size=1)]
    assert names == ["projects/acme", "projects/default"]


async def test_the_client_finds_a_local_server_by_its_data_dir(server: ConveyorServer) -> None:
    async with AsyncClient(data_dir=server.data_dir) as client:
        project = await client.get_project("projects/default")
    assert project.display_name == "Default project"


async def test_create_get_update_project(server: ConveyorServer, admin_key: str) -> None:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
        created = await client.create_project("acme", callback_url="https://hooks.example.com/x")
        assert created.name == "projects/acme"
        assert created.create_time.seconds > 0
        with pytest.raises(AlreadyExistsError):
            await client.create_project("acme")
        updated = await client.projects.UpdateProject(
            project_pb2.UpdateProjectRequest(
                project=project_pb2.Project(
                    name="projects/acme", display_name="ACME", callback_url="ignored"
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        )
        assert (updated.display_name, updated.callback_url) == (
            "ACME",
            "https://hooks.example.com/x",
        )
        with pytest.raises(NotFoundError):
            await client.get_project("projects/nope")


@pytest.mark.parametrize(
    ("project_id", "callback_url", "field"),
    [
        ("Bad_Id", "", "project_id"),
        ("x" * 64, "", "project_id"),
        ("ok", "ftp://example.com", "project.callback_url"),
        ("ok", "not a url", "project.callback_url"),
    ],
)
async def test_bad_project_input_names_the_field_and_writes_nothing(
    server: ConveyorServer,
    admin_key: str,
    database_url: str,
    project_id: str,
    callback_url: str,
    field: str,
) -> None:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
        with pytest.raises(InvalidArgumentError) as caught:
            await client.create_project(project_id, callback_url=callback_url)
    assert field in [f for f, _ in caught.value.field_violations]
    assert caught.value.reason == "INVALID_ARGUMENT"
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM projects").fetchone() == (1,)


async def test_key_secret_is_shown_once_stored_hashed_and_revocable(
    server: ConveyorServer, admin_key: str, database_url: str
) -> None:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as admin:
        key = await admin.create_api_key(
            "projects/default", enums_pb2.ROLE_VIEWER, display_name="ci"
        )
        assert key.secret.startswith("cvk_")
        listed = await admin.projects.ListApiKeys(
            project_pb2.ListApiKeysRequest(parent="projects/default")
        )
        assert {k.name for k in listed.api_keys} >= {key.name}
        assert all(k.secret == "" for k in listed.api_keys)

        with psycopg.connect(database_url) as conn:
            stored = conn.execute(
                "SELECT secret_hash FROM api_keys WHERE id = %s", (key.name.split("/")[-1],)
            )
            (secret_hash,) = stored.fetchone() or (b"",)
        secret = key.secret.split("_", 2)[2]
        assert bytes(secret_hash) == hashlib.sha256(secret.encode()).digest()
        assert key.secret.encode() not in bytes(secret_hash)

        async with AsyncClient(server.grpc_target, api_key=key.secret) as viewer:
            assert (await viewer.get_project("projects/default")).name == "projects/default"
            with pytest.raises(PermissionDeniedError) as denied:
                await viewer.create_api_key("projects/default", enums_pb2.ROLE_ADMIN)
            assert denied.value.reason == "ROLE_INSUFFICIENT"
            await admin.delete_api_key(key.name)
            with pytest.raises(UnauthenticatedError):
                await viewer.get_project("projects/default")


async def test_project_keys_see_only_their_project(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["admin"]) as client:
        names = [p.name async for p in client.list_projects()]
        assert names == ["projects/alpha"]
        with pytest.raises(PermissionDeniedError):
            await client.create_project("gamma")
        with pytest.raises(InvalidArgumentError) as caught:
            await client.create_api_key("projects/alpha", enums_pb2.ROLE_UNSPECIFIED)
        assert [f for f, _ in caught.value.field_violations] == ["api_key.role"]


async def test_a_project_admin_cannot_see_or_revoke_the_system_key(
    server: ConveyorServer, admin_key: str, keys: dict[str, str]
) -> None:
    system_key_id = admin_key.split("_")[1]
    async with AsyncClient(server.grpc_target, api_key=keys["admin"]) as client:
        with pytest.raises(PermissionDeniedError):
            await client.delete_api_key(f"projects/default/apiKeys/{system_key_id}")


async def test_webhook_secret_rotation_keeps_the_previous_one_for_a_grace_period(
    server: ConveyorServer, admin_key: str
) -> None:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
        name = "projects/default/webhookSecret"
        before = await client.projects.GetWebhookSecret(
            project_pb2.GetWebhookSecretRequest(name=name)
        )
        rotated = await client.projects.RotateWebhookSecret(
            project_pb2.RotateWebhookSecretRequest(name=name)
        )
        assert rotated.secret != before.secret
        assert rotated.previous_secret == before.secret
        assert rotated.previous_expire_time.seconds > 0
