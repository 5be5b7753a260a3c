"""Webhooks end to end: the outbox trigger, delivery with retries to a real HTTP receiver,
one webhook id across attempts, signatures (and rotation), attempts visible as events,
the SSRF guard, and the client's signature check."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
import pytest_asyncio
import standardwebhooks
from google.protobuf import duration_pb2, field_mask_pb2
from prometheus_client import REGISTRY

from conveyor.client import AsyncClient
from conveyor.client.webhooks import (
    MalformedSignatureError,
    SignatureMismatchError,
    TimestampOutOfToleranceError,
    sign,
    sign_standard,
    verify,
)
from conveyor.server.app import ConveyorServer
from conveyor.server.domain.webhooks import WebhookPolicy, signature_header
from conveyor.server.domain.webhooks_guard import Refused, WebhookGuard
from conveyor.server.loops.webhooks import WebhookLoop
from conveyor.server.settings import Settings
from conveyor.v1 import project_pb2

PARENT = "projects/alpha"
DELIVERED_METRIC = "conveyor_queue_webhook_deliveries_total"
FAST = WebhookPolicy(initial_backoff=0.05, max_backoff=0.2, timeout=2.0, lease=5.0)


class EventClient(AsyncClient):
    async def __aenter__(self) -> EventClient:
        return self


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real HTTP receiver on 127.0.0.1 that answers with scripted status codes."""

    statuses: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def wait_for(self, count: int, within: float = 10) -> list[Received]:
        def wait() -> list[Received]:
            with self.arrived:
                assert self.arrived.wait_for(lambda: len(self.requests) >= count, within), (
                    f"{len(self.requests)} of {count} requests arrived"
                )
                return list(self.requests)

        return await asyncio.to_thread(wait)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.arrived:
                state.requests.append(Received(self.path, dict(self.headers.items()), body))
                status = state.statuses.pop(0) if state.statuses else 200
                state.arrived.notify_all()
            self.send_response(status)
            if status in (301, 302, 307, 308):
                self.send_header("Location", state.url("/elsewhere"))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def server_settings(server_settings: Settings) -> Settings:
    return server_settings.replace(webhook_allow=("127.0.0.1/32",))


def loop_of(server: ConveyorServer) -> WebhookLoop:
    loop = next(lp for lp in server.context.loops if isinstance(lp, WebhookLoop))
    loop.policy = FAST
    loop.interval = 0.1
    return loop


@pytest_asyncio.fixture
async def client(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[EventClient]:
    async with EventClient(server.grpc_target, api_key=keys["operator"], project="alpha") as c:
        yield c


@pytest_asyncio.fixture
async def admin(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[EventClient]:
    async with EventClient(server.grpc_target, api_key=keys["admin"], project="alpha") as c:
        yield c


async def secret_of(admin: EventClient) -> project_pb2.WebhookSecret:
    return await admin.projects.GetWebhookSecret(
        project_pb2.GetWebhookSecretRequest(name=f"{PARENT}/webhookSecret")
    )


async def finish(client: EventClient, **options: Any) -> str:
    """Creates a task and cancels it (a terminal transition); returns its name."""
    task = await client.create_task("report.build", {"n": 1}, **options)
    await client.cancel_task(task.name, "done with it")
    return task.name


def deliveries(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT id, state, attempt_count, url, last_status_code, last_error "
            "FROM webhook_deliveries ORDER BY create_time"
        ).fetchall()


def attempts(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT attempt, status_code, error, duration_ms FROM webhook_attempts ORDER BY attempt"
        ).fetchall()


async def settled(database_url: str, within: float = 10) -> list[tuple[Any, ...]]:
    async with asyncio.timeout(within):
        while True:
            rows = deliveries(database_url)
            if rows and all(row[1] != "PENDING" for row in rows):
                return rows
            await asyncio.sleep(0.05)


async def test_a_receiver_failing_three_times_gets_four_attempts_with_one_webhook_id(
    server: ConveyorServer,
    client: EventClient,
    admin: EventClient,
    receiver: Receiver,
    database_url: str,
) -> None:
    loop_of(server)
    labels = {"project": "alpha", "queue": "default", "outcome": "delivered"}
    delivered_before = REGISTRY.get_sample_value(DELIVERED_METRIC, labels) or 0
    receiver.statuses = [500, 503, 500, 200]
    name = await finish(client, callback_url=receiver.url())
    requests = await receiver.wait_for(4)
    [(delivery_id, state, count, _, status, error)] = await settled(database_url)
    assert (state, count, status, error) == ("DELIVERED", 4, 200, "")
    # The loop counts the delivery just after its row commits: wait for it, then check
    # it was counted once.
    async with asyncio.timeout(10):
        while True:
            if (REGISTRY.get_sample_value(DELIVERED_METRIC, labels) or 0) != delivered_before:
                break
            await asyncio.sleep(0.01)
    assert REGISTRY.get_sample_value(DELIVERED_METRIC, labels) == delivered_before + 1
    assert len(requests) == 4
    assert {r.headers["Conveyor-Webhook-Id"] for r in requests} == {str(delivery_id)}
    assert [r.headers["Conveyor-Webhook-Attempt"] for r in requests] == ["1", "2", "3", "4"]
    assert len({r.body for r in requests}) == 1, "every attempt sends the same bytes"
    secret = (await secret_of(admin)).secret
    for request in requests:
        verify(request.body, request.headers["Conveyor-Signature"], secret)
        # The Standard Webhooks library accepts the same delivery with the same secret.
        assert standardwebhooks.Webhook(secret).verify(request.body, request.headers) == (
            json.loads(request.body)
        )
        verify(request.body, request.headers, secret)
        assert request.headers["webhook-id"] == str(delivery_id)
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["Conveyor-Event"] == "task.cancelled"
        assert request.path == "/hook"
    body = json.loads(requests[0].body)
    assert body["event"] == "task.cancelled"
    assert body["timestamp"].endswith("Z")
    assert body["task"]["name"] == name
    assert body["task"]["state"] == "TASK_STATE_CANCELLED"
    assert body["task"]["callback_url"] == receiver.url()  # proto field names
    recorded = attempts(database_url)
    assert [(a[0], a[1]) for a in recorded] == [(1, 500), (2, 503), (3, 500), (4, 200)]
    assert recorded[0][2] == "HTTP 500" and recorded[3][2] == ""
    # Every attempt is an event: the attempts are visible through the API.
    seen = [e async for e in client.list_events(types=["webhook.*"], tasks=[name])]
    assert [e.type for e in seen] == ["webhook.retrying"] * 3 + ["webhook.delivered"]
    assert [e.data["status_code"] for e in seen] == [500, 503, 500, 200]
    assert {e.data["webhook_id"] for e in seen} == {str(delivery_id)}
    assert seen[0].data["next_attempt_time"] and "next_attempt_time" not in seen[3].data
    assert seen[3].task.name == name


async def test_attempts_are_capped_and_the_end_is_an_event(
    server: ConveyorServer, client: EventClient, receiver: Receiver, database_url: str
) -> None:
    loop = loop_of(server)
    loop.policy = WebhookPolicy(
        initial_backoff=0.02, max_backoff=0.05, max_attempts=3, timeout=2, lease=5
    )
    receiver.statuses = [500] * 10
    name = await finish(client, callback_url=receiver.url())
    [(_, state, count, *_)] = await settled(database_url)
    assert (state, count) == ("FAILED", 3)
    seen = [e.type async for e in client.list_events(types=["webhook.*"], tasks=[name])]
    assert seen == ["webhook.retrying", "webhook.retrying", "webhook.failed"]


async def test_retries_stop_after_the_maximum_age(
    server: ConveyorServer, client: EventClient, receiver: Receiver, database_url: str
) -> None:
    loop = loop_of(server)
    loop.policy = WebhookPolicy(initial_backoff=0.05, max_age=0.01, timeout=2, lease=5)
    receiver.statuses = [500] * 10
    await finish(client, callback_url=receiver.url())
    [(_, state, count, *_)] = await settled(database_url)
    assert (state, count) == ("FAILED", 1)


async def test_redirects_are_not_followed(
    server: ConveyorServer, client: EventClient, receiver: Receiver, database_url: str
) -> None:
    loop_of(server)
    receiver.statuses = [302, 200]
    await finish(client, callback_url=receiver.url())
    await receiver.wait_for(2)
    await settled(database_url)
    assert [r.path for r in receiver.requests] == ["/hook", "/hook"]
    assert attempts(database_url)[0][2] == "HTTP 302 (redirects are not followed)"


async def test_the_project_callback_url_is_the_default_and_no_url_means_no_webhook(
    server: ConveyorServer,
    client: EventClient,
    admin: EventClient,
    receiver: Receiver,
    database_url: str,
) -> None:
    loop_of(server)
    await finish(client)
    # The outbox row is written by a trigger in the transaction that ends the task, so
    # once the cancel has answered there is nothing left to wait for.
    assert deliveries(database_url) == []
    await admin.projects.UpdateProject(
        project_pb2.UpdateProjectRequest(
            project=project_pb2.Project(name=PARENT, callback_url=receiver.url("/project")),
            update_mask=field_mask_pb2.FieldMask(paths=["callback_url"]),
        )
    )
    await finish(client)
    await finish(client, callback_url=receiver.url("/own"))
    requests = await receiver.wait_for(2)
    assert sorted(r.path for r in requests) == ["/own", "/project"]
    # The later tasks' rows show the trigger ran; the first task (no URL) still has none.
    assert len(deliveries(database_url)) == 2


async def test_a_terminal_transition_rolled_back_leaves_no_webhook(
    server: ConveyorServer, client: EventClient, receiver: Receiver, database_url: str
) -> None:
    task = await client.create_task("k", callback_url=receiver.url())
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE tasks SET state = 'SUCCEEDED', end_time = now()")
        conn.rollback()
        conn.execute("UPDATE tasks SET summary = 'no transition'")
        conn.commit()
    assert deliveries(database_url) == []
    await client.cancel_task(task.name)
    with psycopg.connect(database_url) as conn:
        # Already terminal: leaving it terminal is not another transition.
        conn.execute("UPDATE tasks SET state = 'FAILED' WHERE state = 'CANCELLED'")
        conn.commit()
    assert len(deliveries(database_url)) == 1


async def test_during_a_rotation_both_secrets_sign(
    server: ConveyorServer,
    client: EventClient,
    admin: EventClient,
    receiver: Receiver,
    database_url: str,
) -> None:
    loop_of(server)
    old = (await secret_of(admin)).secret
    rotated = await admin.projects.RotateWebhookSecret(
        project_pb2.RotateWebhookSecretRequest(
            name=f"{PARENT}/webhookSecret", grace_period=duration_pb2.Duration(seconds=3600)
        )
    )
    assert rotated.secret != old
    await finish(client, callback_url=receiver.url())
    [request] = await receiver.wait_for(1)
    header = request.headers["Conveyor-Signature"]
    assert header.count("v1=") == 2
    verify(request.body, header, old)  # a receiver not yet switched
    verify(request.body, header, rotated.secret)  # a receiver already switched
    verify(request.body, header, [rotated.secret, old])
    assert request.headers["webhook-signature"].count("v1,") == 2
    standardwebhooks.Webhook(old).verify(request.body, request.headers)
    standardwebhooks.Webhook(rotated.secret).verify(request.body, request.headers)
    verify(request.body, request.headers, old)


async def test_refused_targets_fail_at_once_without_a_request(
    server: ConveyorServer, client: EventClient, database_url: str
) -> None:
    loop_of(server)
    await finish(client, callback_url="http://10.0.0.1/hook")
    [(_, state, count, _url, status, error)] = await settled(database_url)
    assert (state, count, status) == ("FAILED", 1, None)
    assert error == "refused: 10.0.0.1 is a private address"


async def test_the_request_goes_to_the_checked_address_with_the_original_host(
    server: ConveyorServer, client: EventClient, receiver: Receiver, database_url: str
) -> None:
    """DNS rebinding: the name is resolved once, checked, and that address is dialled.
    `hooks.example.test` does not exist, so re-resolving it would fail the request."""
    loop = loop_of(server)
    answers = {"hooks.example.test": ["127.0.0.1"]}

    async def resolver(host: str, port: int) -> list[str]:
        return answers[host]

    loop.guard = WebhookGuard(["127.0.0.1/32"], resolver)
    await finish(client, callback_url=f"http://hooks.example.test:{receiver.port}/dns")
    [request] = await receiver.wait_for(1)
    assert request.headers["Host"] == f"hooks.example.test:{receiver.port}"
    # Rebound to a private address that the allowlist does not cover: refused.
    answers["hooks.example.test"] = ["192.168.1.20"]
    loop.policy = WebhookPolicy(initial_backoff=0.02, max_attempts=2, timeout=2, lease=5)
    await finish(client, callback_url=f"http://hooks.example.test:{receiver.port}/dns")
    rows = await settled(database_url)
    assert rows[1][5] == "refused: hooks.example.test (192.168.1.20) is a private address"
    # What a name resolves to may change, so that refusal is retried like a failure.
    assert (rows[1][1], rows[1][2]) == ("FAILED", 2)
    assert len(receiver.requests) == 1


# The SSRF guard.


def _resolver(table: dict[str, list[str]]) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"{host}: no such host")
        return table[host]

    return resolve


REFUSED = [
    ("http://127.0.0.1/", "loopback"),
    ("http://127.8.9.10:8080/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://10.1.2.3/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.0.1/", "private"),
    ("http://[fc00::1]/", "private"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://100.64.0.1/", "not a public address"),
    ("http://[::ffff:127.0.0.1]/", "IPv4-mapped"),
    ("http://[::ffff:8.8.8.8]/", "IPv4-mapped"),
    ("http://[2002:7f00:1::1]/", "non-public IPv4 address inside"),
    ("http://[64:ff9b::a00:1]/", "non-public IPv4 address inside"),
    ("http://2130706433/", "numeric spelling of 127.0.0.1"),
    ("http://0x7f.1/", "numeric spelling of 127.0.0.1"),
    ("http://0x7f000001/", "numeric spelling of 127.0.0.1"),
    ("http://0177.0.0.1/", "numeric spelling of 127.0.0.1"),
    ("http://017700000001/", "numeric spelling of 127.0.0.1"),
    ("http://127.1/", "numeric spelling of 127.0.0.1"),
    ("http://127.0.1/", "numeric spelling of 127.0.0.1"),
    ("http://134744072/", "numeric spelling of 8.8.8.8"),
    ("http://1.2.3.4.5/", "neither a host name nor an address"),
    ("http://[fe80::1%25eth0]/", "zone"),
    ("ftp://example.com/", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("http:///nohost", "no host"),
    ("http://localhost/", "loopback"),
    ("http://internal.test/", "private"),
    ("http://mixed.test/", "loopback"),
]


@pytest.mark.parametrize(("url", "why"), REFUSED)
async def test_the_guard_refuses(url: str, why: str) -> None:
    guard = WebhookGuard(
        (),
        _resolver(
            {
                "localhost": ["127.0.0.1", "::1"],
                "internal.test": ["10.9.8.7"],
                "mixed.test": ["93.184.216.34", "127.0.0.1"],
            }
        ),
    )
    with pytest.raises(Refused) as caught:
        await guard.check(url)
    assert why in caught.value.reason


async def test_the_guard_admits_public_targets_and_pins_the_address() -> None:
    guard = WebhookGuard((), _resolver({"hooks.example.com": ["93.184.216.34"]}))
    target = await guard.check("https://hooks.example.com/in?x=1")
    assert target.url == "https://93.184.216.34/in?x=1"
    assert (target.host_header, target.server_name) == ("hooks.example.com", "hooks.example.com")
    target = await guard.check("http://8.8.8.8:8080/in")
    assert (target.url, target.host_header, target.server_name) == (
        "http://8.8.8.8:8080/in",
        "8.8.8.8:8080",
        None,
    )
    target = await guard.check("http://[2606:4700::1111]/")
    assert target.url == "http://[2606:4700::1111]/"


async def test_a_name_that_does_not_resolve_is_refused_for_now_not_for_ever() -> None:
    guard = WebhookGuard((), _resolver({}))
    with pytest.raises(Refused) as caught:
        await guard.check("https://nowhere.test/")
    assert not caught.value.permanent
    with pytest.raises(Refused) as caught:
        await guard.check("http://10.0.0.1/")
    assert caught.value.permanent


async def test_the_allowlist_admits_cidrs_and_host_names() -> None:
    guard = WebhookGuard(
        ["127.0.0.1/32", "10.0.0.0/8", "hooks.internal"],
        _resolver({"hooks.internal": ["192.168.5.5"], "other.internal": ["192.168.5.6"]}),
    )
    assert (await guard.check("http://127.0.0.1:9000/")).url == "http://127.0.0.1:9000/"
    assert (await guard.check("http://10.20.30.40/")).url == "http://10.20.30.40/"
    assert (await guard.check("http://2130706433/")).url == "http://127.0.0.1/"
    assert (await guard.check("http://[::ffff:127.0.0.1]/")).url == "http://127.0.0.1/"
    pinned = await guard.check("http://hooks.internal/x")
    assert (pinned.url, pinned.host_header) == ("http://192.168.5.5/x", "hooks.internal")
    for url in ("http://127.0.0.2/", "http://other.internal/", "http://192.168.0.1/"):
        with pytest.raises(Refused):
            await guard.check(url)
    with pytest.raises(ValueError, match="neither a CIDR nor a host name"):
        WebhookGuard(["not a host!"])


# Signatures.

BODY = b'{"event":"task.succeeded","task":{"name":"projects/alpha/tasks/x"}}'


def test_the_server_signature_verifies_with_the_client_helper() -> None:
    now = int(time.time())
    header = signature_header(["s3cret"], now, BODY)
    verify(BODY, header, "s3cret")
    verify(BODY.decode(), header, ["other", "s3cret"])
    assert sign(BODY, "s3cret", now) == header


SECRET = "whsec_" + "ab12" * 16  # the shape new_webhook_secret makes


def test_standard_headers_verify_with_the_standardwebhooks_package_and_the_client() -> None:
    headers = sign_standard(BODY, SECRET, "d-1")
    assert headers["webhook-signature"].startswith("v1,")
    assert standardwebhooks.Webhook(SECRET).verify(BODY, headers) == json.loads(BODY)
    verify(BODY, headers, SECRET)
    verify(BODY, {k.title(): v for k, v in headers.items()}, ["whsec_other", SECRET])
    # The package signs the same bytes: its signature verifies with the client helper.
    theirs = standardwebhooks.Webhook(SECRET).sign("d-2", datetime.now(UTC), BODY)
    now = str(int(time.time()))
    verify(
        BODY, {"webhook-id": "d-2", "webhook-timestamp": now, "webhook-signature": theirs}, SECRET
    )


def test_standard_headers_refuse_a_tampered_body_another_id_or_an_old_timestamp() -> None:
    headers = sign_standard(BODY, SECRET, "d-1")
    with pytest.raises(SignatureMismatchError):
        verify(BODY.replace(b"succeeded", b"failed"), headers, SECRET)
    with pytest.raises(SignatureMismatchError):
        verify(BODY, {**headers, "webhook-id": "d-9"}, SECRET)
    with pytest.raises(SignatureMismatchError):
        verify(BODY, headers, "whsec_" + "cd34" * 16)
    old = sign_standard(BODY, SECRET, "d-1", int(time.time()) - 3600)
    with pytest.raises(TimestampOutOfToleranceError):
        verify(BODY, old, SECRET)
    with pytest.raises(MalformedSignatureError):
        verify(BODY, {**headers, "webhook-timestamp": "soon"}, SECRET)
    # Without the Standard Webhooks headers, a mapping falls back to Conveyor-Signature.
    verify(BODY, {"Conveyor-Signature": sign(BODY, SECRET)}, SECRET)


def test_a_tampered_body_is_refused() -> None:
    header = sign(BODY, "s3cret")
    with pytest.raises(SignatureMismatchError, match="body was changed"):
        verify(BODY.replace(b"succeeded", b"failed"), header, "s3cret")


def test_a_wrong_secret_is_refused() -> None:
    with pytest.raises(SignatureMismatchError, match="another secret"):
        verify(BODY, sign(BODY, "s3cret"), ["wrong", "also-wrong"])


def test_an_old_or_future_timestamp_is_refused() -> None:
    old = int(time.time()) - 301
    with pytest.raises(TimestampOutOfToleranceError, match="outside the tolerance of 300 s"):
        verify(BODY, sign(BODY, "s3cret", old), "s3cret")
    verify(BODY, sign(BODY, "s3cret", old), "s3cret", tolerance=600)
    with pytest.raises(TimestampOutOfToleranceError):
        verify(BODY, sign(BODY, "s3cret", int(time.time()) + 3600), "s3cret")


def test_a_rotated_secret_verifies_with_either_during_the_grace_period() -> None:
    header = sign(BODY, ["new", "old"])
    verify(BODY, header, "new")
    verify(BODY, header, "old")
    with pytest.raises(SignatureMismatchError):
        verify(BODY, sign(BODY, "new"), "old")


@pytest.mark.parametrize("header", ["", "v1=abc", "t=123", "t=soon,v1=abc", "garbage"])
def test_a_malformed_header_is_refused(header: str) -> None:
    with pytest.raises(MalformedSignatureError):
        verify(BODY, header, "s3cret")


def test_the_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = WebhookPolicy(initial_backoff=10, max_backoff=3600)
    assert [policy.backoff(n, 0.0) for n in (1, 2, 3)] == [5, 10, 20]
    assert [policy.backoff(n, 1.0) for n in (1, 2, 3)] == [10, 20, 40]
    assert policy.backoff(30, 1.0) == 3600
    with pytest.raises(ValueError):
        WebhookPolicy(timeout=10, lease=5)
    assert (
        WebhookPolicy().timeout == 10
        and WebhookPolicy().max_age == timedelta(days=1).total_seconds()
    )
