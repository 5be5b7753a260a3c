"""Request limits per API key (#21 point 1): every RPC has a class, the token buckets,
and the settings (ApiKey.rate_limits, Project.rate_limits) with their update masks.

Enforcement against real servers is in test_request_limits_server.py.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from google.protobuf import field_mask_pb2

from conveyor.client import AsyncClient, InvalidArgumentError, NotFoundError
from conveyor.server.app import ConveyorServer
from conveyor.server.domain import request_limits
from conveyor.server.domain.request_limiter import RequestLimiter
from conveyor.server.domain.request_limits import CLASSES, Limit
from conveyor.server.errors import ResourceExhausted
from conveyor.server.rpc.method_classes import METHOD_CLASSES
from conveyor.server.rpc.refusals import HOLD_SECONDS, MAX_HELD, Holds
from conveyor.server.rpc.rules import SERVICES
from conveyor.v1 import command_pb2, enums_pb2, project_pb2

RL = project_pb2.RateLimits
RQ = project_pb2.RequestLimit
READ, WORKER = CLASSES.index("read"), CLASSES.index("worker")


def test_every_contract_method_has_a_class() -> None:
    methods = [f"/{s.full_name}/{m.name}" for s in SERVICES for m in s.methods]
    missing = [m for m in methods if m not in METHOD_CLASSES]
    assert not missing, f"classify these in rpc/method_classes.py: {missing}"
    assert set(METHOD_CLASSES.values()) <= set(CLASSES)


def test_worker_calls_have_their_own_class() -> None:
    for method in ("Connect", "LeaseTasks", "ExtendLease", "CompleteTask", "FailTask"):
        assert METHOD_CLASSES[f"/conveyor.v1.WorkerService/{method}"] == "worker"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def limited(cls: int, rate: float, burst: float) -> request_limits.Limits:
    limits: list[Limit | None] = [None] * len(CLASSES)
    limits[cls] = Limit(rate, burst)
    return tuple(limits)


def test_a_bucket_admits_its_burst_then_says_when_to_retry() -> None:
    clock = Clock()
    limiter = RequestLimiter(clock)
    limits = limited(READ, rate=2.0, burst=3)
    for _ in range(3):
        limiter.admit("k", limits, READ)
    with pytest.raises(ResourceExhausted) as caught:
        limiter.admit("k", limits, READ)
    assert caught.value.reason == "REQUEST_LIMITED"
    assert caught.value.retry_after is not None
    assert caught.value.retry_after.total_seconds() == pytest.approx(0.5)
    assert caught.value.metadata["method_class"] == "read"
    clock.now += 0.5
    limiter.admit("k", limits, READ)
    # Other classes and other keys have buckets of their own.
    limiter.admit("k", limits, WORKER)
    limiter.admit("other", limits, READ)


def test_a_bucket_raises_one_refusal_until_its_token_is_due() -> None:
    """A flood's refusals are one object (the interceptor reuses its status), made anew
    once the token it announced is due, or at once when the limit changed."""
    clock = Clock()
    limiter = RequestLimiter(clock)
    limits = limited(READ, rate=2.0, burst=1)
    limiter.admit("k", limits, READ)
    refusals = []
    for step in (0.0, 0.1, 0.2):
        clock.now += step
        with pytest.raises(ResourceExhausted) as caught:
            limiter.admit("k", limits, READ)
        refusals.append(caught.value)
    assert refusals[0] is refusals[1] is refusals[2]
    # Stated when it was made: never shorter than the real wait.
    assert refusals[0].retry_after is not None
    assert refusals[0].retry_after.total_seconds() == pytest.approx(0.5)
    with pytest.raises(ResourceExhausted) as lowered:
        limiter.admit("k", limited(READ, rate=1.0, burst=1), READ)
    assert lowered.value is not refusals[0]
    clock.now += 1.0
    limiter.admit("k", limits, READ)
    with pytest.raises(ResourceExhausted) as later:
        limiter.admit("k", limits, READ)
    assert later.value is not refusals[0]


def test_refusals_are_held_at_most_their_delay_and_a_bounded_number_per_key() -> None:
    holds = Holds(spread=lambda: 0.0)  # each hold at the start of its window
    assert holds.take("k", 0.05) == pytest.approx(0.05)
    assert holds.take("k", 1000.0) == HOLD_SECONDS
    for _ in range(MAX_HELD - 2):
        assert holds.take("k", 1000.0) > 0
    # The key holds MAX_HELD: its next refusal is answered at once; other keys still wait.
    assert holds.take("k", 1000.0) == 0.0
    assert holds.take("other", 1000.0) == HOLD_SECONDS
    holds.release("k")
    assert holds.take("k", 1000.0) == HOLD_SECONDS


def test_refusals_refused_together_are_not_answered_together() -> None:
    # Every call refused before the key's next token has the same retry instant; held
    # exactly that long they were all answered, and came back, at once.
    ends = iter([0.0, 0.5, 0.999])
    holds = Holds(spread=lambda: next(ends))
    assert holds.take("k", 0.1) == pytest.approx(0.1)
    assert holds.take("k", 0.1) == pytest.approx(0.15)
    assert holds.take("k", 1000.0) == pytest.approx(HOLD_SECONDS * 1.999)
    spread = Holds()
    taken = [spread.take("k", 0.1) for _ in range(16)]
    assert all(0.1 <= hold < 0.2 for hold in taken)
    assert len(set(taken)) > 1


def test_each_replica_enforces_its_share_of_the_budget() -> None:
    clock = Clock()
    limiter = RequestLimiter(clock)
    limiter.share_with(2)
    limits = limited(READ, rate=10.0, burst=4)
    limiter.admit("k", limits, READ)
    limiter.admit("k", limits, READ)
    with pytest.raises(ResourceExhausted) as caught:
        limiter.admit("k", limits, READ)
    # Half the rate on this replica: a token every 0.2 s.
    assert caught.value.retry_after is not None
    assert caught.value.retry_after.total_seconds() == pytest.approx(0.2)


def test_a_share_is_never_below_one_call() -> None:
    limiter = RequestLimiter(Clock())
    limiter.share_with(8)
    limiter.admit("k", limited(READ, rate=1.0, burst=2), READ)


def test_limits_resolve_key_then_project_then_unlimited() -> None:
    project = {"read": {"requests_per_second": 5}, "write": {"requests_per_second": 1}}
    key = {"read": {"requests_per_second": 50, "burst": 60}, "write": {}}
    resolved = request_limits.resolve(key, project)
    assert resolved[READ] == Limit(50, 60)
    assert resolved[CLASSES.index("write")] is None  # `{}` lifts the project's default
    assert request_limits.resolve({}, project)[READ] == Limit(5, 5)  # burst: one second
    assert request_limits.resolve({}, {"read": {"requests_per_second": 0.5}})[READ] == Limit(0.5, 1)
    # System keys follow their own limits only.
    assert request_limits.resolve({}, project, system=True) == request_limits.NO_LIMITS
    assert request_limits.resolve({}, {}) == request_limits.NO_LIMITS


async def test_key_limits_are_set_at_create_and_changed_by_mask(
    server: ConveyorServer, admin_key: str
) -> None:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as admin:
        await admin.create_project("acme")
        key = await admin.create_api_key(
            "projects/acme",
            enums_pb2.ROLE_VIEWER,
            rate_limits=RL(read=RQ(requests_per_second=10, burst=20)),
        )
        assert key.rate_limits == RL(read=RQ(requests_per_second=10, burst=20))
        updated = await admin.projects.UpdateApiKey(
            project_pb2.UpdateApiKeyRequest(
                api_key=project_pb2.ApiKey(
                    name=key.name,
                    display_name="ignored",
                    rate_limits=RL(worker=RQ(requests_per_second=3)),
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["rate_limits.worker"]),
            )
        )
        assert updated.display_name == ""
        assert updated.rate_limits == RL(
            read=RQ(requests_per_second=10, burst=20), worker=RQ(requests_per_second=3)
        )
        # Without a mask: the fields present. An empty class is an explicit "unlimited".
        implied = await admin.projects.UpdateApiKey(
            project_pb2.UpdateApiKeyRequest(
                api_key=project_pb2.ApiKey(name=key.name, rate_limits=RL(read=RQ()))
            )
        )
        assert implied.rate_limits.HasField("read")
        assert implied.rate_limits.read == RQ()
        assert implied.rate_limits.worker == RQ(requests_per_second=3)
        listed = await admin.projects.ListApiKeys(
            project_pb2.ListApiKeysRequest(parent="projects/acme")
        )
        assert listed.api_keys[0].rate_limits == implied.rate_limits
        with pytest.raises(NotFoundError):
            await admin.projects.UpdateApiKey(
                project_pb2.UpdateApiKeyRequest(
                    api_key=project_pb2.ApiKey(name="projects/acme/apiKeys/0000000000000000"),
                    update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                )
            )


async def test_project_default_limits_change_by_mask(
    server: ConveyorServer, admin_key: str
) -> None:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as admin:
        await admin.create_project("acme")

        async def update(paths: list[str], limits: project_pb2.RateLimits) -> project_pb2.Project:
            return await admin.projects.UpdateProject(
                project_pb2.UpdateProjectRequest(
                    project=project_pb2.Project(name="projects/acme", rate_limits=limits),
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                )
            )

        both = RL(read=RQ(requests_per_second=100), bulk=RQ(requests_per_second=1, burst=2))
        assert (await update(["rate_limits"], both)).rate_limits == both
        changed = await update(["rate_limits.bulk.burst"], RL(bulk=RQ(burst=5)))
        assert changed.rate_limits == RL(
            read=RQ(requests_per_second=100), bulk=RQ(requests_per_second=1, burst=5)
        )
        cleared = await update(["rate_limits.read"], RL())
        assert cleared.rate_limits == RL(bulk=RQ(requests_per_second=1, burst=5))
        got = await admin.get_project("projects/acme")
        assert got.rate_limits == cleared.rate_limits


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        (RL(read=RQ(requests_per_second=-1)), "rate_limits.read.requests_per_second"),
        (RL(write=RQ(requests_per_second=2e6)), "rate_limits.write.requests_per_second"),
        (RL(bulk=RQ(requests_per_second=1, burst=-1)), "rate_limits.bulk.burst"),
        (RL(stream=RQ(burst=10)), "rate_limits.stream.burst"),
        (RL(worker=RQ(requests_per_second=float("nan"))), "rate_limits.worker.requests_per_second"),
    ],
)
async def test_bad_limits_name_the_field_and_change_nothing(
    server: ConveyorServer,
    admin_key: str,
    database_url: str,
    limits: project_pb2.RateLimits,
    field: str,
) -> None:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as admin:
        await admin.create_project("acme")
        key = await admin.create_api_key("projects/acme", enums_pb2.ROLE_VIEWER)
        with pytest.raises(InvalidArgumentError) as on_project:
            await admin.projects.UpdateProject(
                project_pb2.UpdateProjectRequest(
                    project=project_pb2.Project(name="projects/acme", rate_limits=limits)
                )
            )
        with pytest.raises(InvalidArgumentError) as on_key:
            await admin.projects.UpdateApiKey(
                project_pb2.UpdateApiKeyRequest(
                    api_key=project_pb2.ApiKey(name=key.name, rate_limits=limits)
                )
            )
        with pytest.raises(InvalidArgumentError) as on_create:
            await admin.create_api_key("projects/acme", enums_pb2.ROLE_VIEWER, rate_limits=limits)
    assert f"project.{field}" in [f for f, _ in on_project.value.field_violations]
    assert f"api_key.{field}" in [f for f, _ in on_key.value.field_violations]
    assert f"api_key.{field}" in [f for f, _ in on_create.value.field_violations]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT rate_limits FROM projects WHERE id = 'acme'").fetchone() == (
            {},
        )
        assert conn.execute(
            "SELECT count(*), max(rate_limits::text) FROM api_keys WHERE project = 'acme'"
        ).fetchone() == (1, "{}")


async def test_key_updates_are_audited(server: ConveyorServer, admin_key: str) -> None:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as admin:
        await admin.create_project("acme")
        key = await admin.create_api_key("projects/acme", enums_pb2.ROLE_VIEWER)
        await admin.projects.UpdateApiKey(
            project_pb2.UpdateApiKeyRequest(
                api_key=project_pb2.ApiKey(name=key.name, display_name="ci")
            )
        )
        listed = await admin.commands.ListCommands(
            command_pb2.ListCommandsRequest(parent="projects/acme")
        )
    assert listed.commands[0].verb == enums_pb2.COMMAND_VERB_UPDATE_API_KEY
    assert listed.commands[0].target == key.name


async def test_the_registry_counts_live_replicas_and_prunes_silent_ones(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    from conveyor.server.store import replicas

    await conn.execute(
        "INSERT INTO replicas (id, heartbeat_time) VALUES"
        " ('live', now()), ('crashed', now() - interval '1 hour')"
    )
    assert await replicas.beat(conn, "me", ttl=15) == 2  # me and live
    rows = await (await conn.execute("SELECT id FROM replicas ORDER BY id")).fetchall()
    assert rows == [("live",), ("me",)]
    await replicas.leave(conn, "live")
    assert await replicas.beat(conn, "me", ttl=15) == 1
