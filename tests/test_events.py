"""EventService end to end: publish, list, watch (replay, live, filters, keep-alives),
twenty subscribers on two replicas, a replica killed mid-stream, a slow subscriber cut
off and resumed, shutdown, and retention."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import grpc
import psycopg
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2

from conveyor.client import (
    AsyncClient,
    Client,
    InvalidArgumentError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnavailableError,
)
from conveyor.client.errors import from_rpc_error
from conveyor.server.app import ConveyorServer
from conveyor.server.domain.events_filter import parse_event_filter
from conveyor.server.errors import Violations
from conveyor.server.loops.retention import RetentionLoop
from conveyor.server.rpc.events import event_message
from conveyor.server.services import default_hooks
from conveyor.server.settings import Settings
from conveyor.server.store.event_rows import EventRow
from conveyor.server.streams.hub import EventHub, _Tail
from conveyor.server.streams.subscription import Subscription
from conveyor.v1 import enums_pb2, event_pb2, task_pb2

PARENT = "projects/alpha"
KEEPALIVE = "conveyor.keepalive"


# Until AsyncClient and Client inherit the event methods (a one-line change in
# _async_client.py and _client.py), the tests mix them in themselves.
class EventClient(AsyncClient):
    async def __aenter__(self) -> EventClient:
        return self


class SyncEventClient(Client):
    def __enter__(self) -> SyncEventClient:
        return self


def hub_of(server: ConveyorServer) -> EventHub:
    return next(loop for loop in server.context.loops if isinstance(loop, EventHub))


@pytest_asyncio.fixture
async def client(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[EventClient]:
    async with EventClient(server.grpc_target, api_key=keys["operator"], project="alpha") as c:
        yield c


@contextlib.asynccontextmanager
async def replica(settings: Settings, data_dir: Path) -> AsyncIterator[ConveyorServer]:
    """Another server on the same database, as a second replica would be."""
    running = ConveyorServer(settings.replace(data_dir=data_dir), default_hooks())
    await running.start()
    try:
        yield running
    finally:
        await running.stop(grace=0)


def published(event_type: str, **data: Any) -> event_pb2.Event:
    message = struct_pb2.Struct()
    message.update(data)
    return event_pb2.Event(type=event_type, data=message)


async def first_keepalive(watch: Any) -> int:
    """Waits until a watch (made with keepalives=True) is subscribed; returns its cursor."""
    async with asyncio.timeout(10):
        event = await anext(watch)
    assert event.type == KEEPALIVE
    return int(event.id)


async def collect(watch: Any, count: int, *, within: float = 30) -> list[event_pb2.Event]:
    got: list[event_pb2.Event] = []
    async with asyncio.timeout(within):
        async for event in watch:
            if event.type != KEEPALIVE:
                got.append(event)
                if len(got) == count:
                    return got
    return got


def insert_events(
    database_url: str, count: int, *, event_type: str = "bulk.event", size: int = 0
) -> None:
    """Appends events straight to the table, in transactions of 100."""
    with psycopg.connect(database_url) as conn:
        for start in range(0, count, 100):
            conn.execute(
                "INSERT INTO events (project, type, data) "
                "SELECT 'alpha', %s, jsonb_build_object('n', n, 'pad', repeat('x', %s::int)) "
                "FROM generate_series(%s::int, %s::int) n",
                (event_type, size, start, min(start + 100, count) - 1),
            )
            conn.commit()


# PublishEvent.


async def test_publish_returns_the_event_with_its_cursor(client: EventClient) -> None:
    event = await client.publish_event("deploy.started", {"version": "1.2"}, subject="svc/api")
    assert event.id > 0 and event.type == "deploy.started" and event.subject == "svc/api"
    assert dict(event.data) == {"version": "1.2"}
    assert event.time.ToDatetime(tzinfo=UTC) > datetime.now(UTC) - timedelta(minutes=1)
    listed = [e async for e in client.list_events(after=event.id - 1)]
    assert [e.id for e in listed] == [event.id]


@pytest.mark.parametrize(
    ("event_type", "why"),
    [
        ("", "is required"),
        ("task.succeeded", "reserved"),
        ("queue.paused", "reserved"),
        ("schedule.fired", "reserved"),
        ("command.x", "reserved"),
        ("worker.connected", "reserved"),
        ("webhook.delivered", "reserved"),
        (KEEPALIVE, "reserved"),
        ("has space", "letters, digits"),
        ("x" * 201, "at most 200"),
    ],
)
async def test_publish_refuses_bad_and_reserved_types(
    client: EventClient, event_type: str, why: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await client.publish_event(event_type)
    assert caught.value.field_violations[0][0] == "event.type"
    assert why in caught.value.field_violations[0][1]


async def test_publish_limits_data_to_64_kib_and_checks_every_field(client: EventClient) -> None:
    await client.publish_event("big.enough", {"blob": "x" * 60_000})
    with pytest.raises(InvalidArgumentError) as caught:
        await client.publish_event("too.big", {"blob": "x" * 70_000}, subject="s" * 1001)
    assert {f for f, _ in caught.value.field_violations} == {"event.data", "event.subject"}
    assert [e async for e in client.list_events(types=["too.big"])] == []


async def test_publishing_takes_an_operator_and_stays_in_its_project(
    server: ConveyorServer, keys: dict[str, str], client: EventClient
) -> None:
    async with EventClient(server.grpc_target, api_key=keys["viewer"], project="alpha") as viewer:
        with pytest.raises(PermissionDeniedError):
            await viewer.publish_event("deploy.started")
    with pytest.raises(PermissionDeniedError):
        await client.publish_event("deploy.started", project="beta")
    with pytest.raises(PermissionDeniedError):
        await anext(client.list_events(project="beta"))
    watch = client.watch_events(project="beta")
    with pytest.raises(PermissionDeniedError):
        await anext(watch)


# ListEvents.


async def test_list_pages_in_cursor_order_with_filters(client: EventClient) -> None:
    ids = [(await client.publish_event(f"deploy.step{i % 3}", {"i": i})).id for i in range(25)]
    assert ids == sorted(ids)
    page = await client.events.ListEvents(
        event_pb2.ListEventsRequest(parent=PARENT, page_size=10, after=ids[0] - 1)
    )
    assert [e.id for e in page.events] == ids[:10] and page.next_page_token
    everything = [e.id async for e in client.list_events(after=ids[0] - 1, page_size=7)]
    assert everything == ids
    step0 = [e.id async for e in client.list_events(types=["deploy.step0"], page_size=3)]
    assert step0 == ids[0::3]
    globbed = [e.id async for e in client.list_events(types=["deploy.step[12]"])]
    assert globbed == [i for n, i in enumerate(ids) if n % 3]
    after = [e.id async for e in client.list_events(after=ids[20])]
    assert after == ids[21:]


async def test_list_refuses_bad_pages_and_tokens_of_other_filters(client: EventClient) -> None:
    await client.publish_event("a.b")
    await client.publish_event("a.b")
    with pytest.raises(InvalidArgumentError):
        await client.events.ListEvents(event_pb2.ListEventsRequest(parent=PARENT, page_size=5001))
    with pytest.raises(InvalidArgumentError):
        await client.events.ListEvents(
            event_pb2.ListEventsRequest(parent=PARENT, page_token="nope")
        )
    with pytest.raises(InvalidArgumentError):
        await client.events.ListEvents(event_pb2.ListEventsRequest(parent=PARENT, after=-1))
    page = await client.events.ListEvents(event_pb2.ListEventsRequest(parent=PARENT, page_size=1))
    with pytest.raises(InvalidArgumentError) as caught:
        await client.events.ListEvents(
            event_pb2.ListEventsRequest(
                parent=PARENT,
                page_size=1,
                page_token=page.next_page_token,
                filter=event_pb2.EventFilter(types=["other"]),
            )
        )
    assert caught.value.field_violations[0][0] == "page_token"
    with pytest.raises(InvalidArgumentError) as caught:
        await anext(
            client.list_events(
                types=[""],
                tasks=["projects/alpha/tasks/not-a-uuid"],
                task_filter=task_pb2.TaskFilter(priorities=["urgent"]),
            )
        )
    assert {f for f, _ in caught.value.field_violations} == {
        "filter.types",
        "filter.tasks",
        "filter.task_filter.priorities",
    }


# WatchEvents.


async def test_watch_replays_after_the_cursor_then_tails_live(client: EventClient) -> None:
    before = [(await client.publish_event("replay.me", {"i": i})).id for i in range(5)]
    watch = client.watch_events(after=before[1])
    replayed = await collect(watch, 3)
    assert [e.id for e in replayed] == before[2:]
    live = [(await client.publish_event("live.one", {"i": i})).id for i in range(3)]
    assert [e.id for e in await collect(watch, 3)] == live
    assert watch.last_id == live[-1]
    await watch.aclose()


async def test_a_watch_from_now_opens_with_a_keepalive_that_is_its_cursor(
    server: ConveyorServer, client: EventClient
) -> None:
    old = await client.publish_event("old.news")
    hub_of(server).keepalive_interval = 0.2
    watch = client.watch_events(keepalives=True)
    start = await first_keepalive(watch)
    assert start >= old.id
    new = await client.publish_event("new.news")
    event = await anext(watch)
    assert event.id == new.id
    # Idle: keep-alives carry the cursor, never behind what was sent.
    idle = await anext(watch)
    assert idle.type == KEEPALIVE and idle.id >= new.id
    await watch.aclose()


async def test_watchers_of_new_types_joining_a_busy_tail_miss_nothing(
    client: EventClient, database_url: str
) -> None:
    """A watcher of another type that joins while the tail is busy (reads in flight, spaced
    out while they hand nothing over) still gets every event of its type after its cursor."""
    idle = client.watch_events(types=["idle.never"], keepalives=True)
    await first_keepalive(idle)
    stop = asyncio.Event()
    rounds = 0

    async def writer() -> None:
        nonlocal rounds
        while not stop.is_set():
            await asyncio.to_thread(insert_events, database_url, 200, event_type="busy.a")
            await asyncio.to_thread(insert_events, database_url, 200, event_type="busy.b")
            rounds += 1

    writing = asyncio.create_task(writer())
    try:
        joined = []
        for event_type in ("busy.a", "busy.b") * 4:
            watch = client.watch_events(types=[event_type], keepalives=True)
            joined.append((event_type, watch, await first_keepalive(watch)))
            await asyncio.sleep(0.05)
        # Every watcher has something to receive: a whole round of both types is written
        # after the last one joined.
        after_joins = rounds
        async with asyncio.timeout(30):
            while True:
                if rounds >= after_joins + 2:
                    break
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await writing
    with psycopg.connect(database_url) as conn:
        written = conn.execute("SELECT id, type FROM events WHERE type LIKE 'busy.%' ORDER BY id")
        by_type: dict[str, list[int]] = {}
        for event_id, event_type in written:
            by_type.setdefault(event_type, []).append(event_id)
    for event_type, watch, start in joined:
        expected = [i for i in by_type[event_type] if i > start]
        assert expected
        got = await collect(watch, len(expected))
        assert [e.id for e in got] == expected
        await watch.aclose()
    await idle.aclose()


async def test_events_a_watcher_wants_in_a_flood_nobody_wants_arrive_once_in_order(
    server: ConveyorServer, client: EventClient, database_url: str
) -> None:
    """While its reads hand nothing over, a tail spaces them idle_read_interval apart
    (longer here than the writes between wanted events); every wanted event still comes,
    in commit order, once, and a watcher joining during the flood misses none either."""
    hub_of(server).idle_read_interval = 0.2
    rare = client.watch_events(types=["rare.one"], keepalives=True)
    await first_keepalive(rare)
    stop = asyncio.Event()

    async def flood() -> None:
        while not stop.is_set():
            await asyncio.to_thread(insert_events, database_url, 100, event_type="flood")

    writing = asyncio.create_task(flood())
    sent: list[int] = []
    try:
        for i in range(6):
            if i == 3:
                late = client.watch_events(types=["rare.one"], keepalives=True)
                late_start = await first_keepalive(late)
            sent.append((await client.publish_event("rare.one", {"i": i})).id)
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await writing
    assert [e.id for e in await collect(rare, len(sent))] == sent
    expected = [i for i in sent if i > late_start]
    assert expected
    assert [e.id for e in await collect(late, len(expected))] == expected
    await rare.aclose()
    await late.aclose()


def test_a_tail_spaces_its_reads_while_they_hand_nothing_over() -> None:
    hub = EventHub(cast(Any, None), read_delay=0.002, idle_read_interval=0.025)
    tail = _Tail(hub, "alpha")
    violations = Violations()
    wanted = parse_event_filter(violations, event_pb2.EventFilter(types=["wanted"]), "alpha")
    violations.raise_if_any()
    tail.attach(wanted, Subscription(0, 10))
    now = datetime.now(UTC)

    def read(event_id: int, event_type: str, ended: float) -> None:
        # What _read does around one page.
        tail.delivered = False
        tail._dispatch([EventRow("alpha", event_id, event_type, now, "", None, None)], event_id)
        tail.read_end = ended

    assert tail.pause(0.0) == 0.002  # before any read
    read(1, "unwanted", ended=100.0)
    assert tail.pause(100.0) == pytest.approx(0.025)
    assert tail.pause(100.020) == pytest.approx(0.005)
    # Quiet since that read: a notification is read as soon as any other.
    assert tail.pause(100.5) == 0.002
    read(2, "wanted", ended=101.0)
    assert tail.pause(101.0) == 0.002
    read(3, "unwanted", ended=102.0)
    assert tail.pause(102.0) == pytest.approx(0.025)
    assert tail.position == 3


async def test_a_filtered_watch_advances_its_cursor_past_what_it_skips(
    server: ConveyorServer, client: EventClient
) -> None:
    hub_of(server).keepalive_interval = 0.2
    watch = client.watch_events(types=["wanted.*"], keepalives=True)
    await first_keepalive(watch)
    skipped = [(await client.publish_event("unwanted")).id for _ in range(3)]
    async with asyncio.timeout(10):
        while True:
            event = await anext(watch)
            assert event.type == KEEPALIVE
            if event.id >= skipped[-1]:
                break
    wanted = await client.publish_event("wanted.now")
    assert (await anext(watch)).id == wanted.id
    await watch.aclose()


async def test_watch_filters_on_the_task_snapshot(client: EventClient) -> None:
    watch = client.watch_events(
        keepalives=True,
        types=["task.*"],
        task_filter=task_pb2.TaskFilter(
            queues=["emails"], states=[enums_pb2.TASK_STATE_QUEUED], labels={"team": "a"}
        ),
    )
    await first_keepalive(watch)
    wanted = await client.create_task(
        "email.send", {"to": "x"}, queue="emails", labels={"team": "a"}
    )
    await client.create_task("email.send", queue="emails", labels={"team": "b"})
    await client.create_task("sms.send", queue="sms", labels={"team": "a"})
    await client.publish_event("deploy.done")
    mine = await client.create_task("email.send", queue="emails", labels={"team": "a"})
    got = await collect(watch, 2)
    assert [e.task.name for e in got] == [wanted.name, mine.name]
    assert got[0].type == "task.created" and got[0].subject == wanted.name
    assert got[0].task.input.struct_value["to"] == "x"
    assert got[0].task.labels["team"] == "a"
    await watch.aclose()
    by_task = client.watch_events(tasks=[wanted.name], after=got[0].id - 1)
    assert [e.task.name for e in await collect(by_task, 1)] == [wanted.name]
    await by_task.aclose()


async def test_streams_render_tasks_exactly_as_get_task_does(
    client: EventClient, database_url: str
) -> None:
    parent = await client.create_task(
        "agent.run",
        {"prompt": "hi", "n": [1, 2.5, None, True]},
        queue="agents",
        labels={"team": "a", "env": "prod"},
        callback_url="https://example.com/hook",
        correlation_id="corr-1",
        priority=2,
    )
    await client.create_task("child.step", parent_task=parent.name)
    await client.cancel_task((await client.create_task("doomed")).name, "no")
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE tasks SET state = 'RUNNING', attempt = 1, worker = 'w-1', "
            "lease_id = gen_random_uuid(), lease_expire_time = now() + interval '30 s', "
            "start_time = now() - interval '2.5 s', cancel_requested = true, "
            "approval_timeout_ms = 90500, approval_timeout_action = 'REJECT', "
            "summary = 'half way', concurrency_key = 'k' WHERE kind = 'agent.run'"
        )
        conn.execute(
            "UPDATE tasks SET state = 'FAILED', start_time = now() - interval '1 s', "
            "end_time = now(), result = '\"partial\"', error = jsonb_build_object("
            "'type', 'Boom', 'message', 'it broke', 'details', jsonb_build_object('x', 1), "
            "'retryable', true) WHERE kind = 'child.step'"
        )
        table = [r[0] for r in conn.execute("SELECT to_jsonb(t) FROM tasks t")]
        # Events store what changed; the snapshot is assembled as event_after.sql does.
        logged = [
            r[0]
            for r in conn.execute(
                "SELECT conveyor_task_snapshot(t, e.task, e.id) FROM events e "
                "JOIN tasks t ON t.project = e.project AND t.id = (e.task ->> 'id')::uuid "
                "WHERE e.task IS NOT NULL"
            )
        ]
    assert len(table) == 3 and logged
    # A stream renders a snapshot as GetTask renders the row (attempts and blocked_reason
    # are GetTask's own additions, read from other tables).
    for snapshot in table:
        streamed = streamed_task(snapshot)
        read = await client.get_task(streamed.name)
        del read.attempts[:]
        read.ClearField("blocked_reason")
        assert streamed == read, snapshot
    for snapshot in logged:
        assert streamed_task(snapshot).name.startswith("projects/alpha/tasks/")
    # A decided approval, empty JSON containers, and an end before the start.
    decided = dict(table[0])
    decided.update(
        approver="projects/alpha/apiKeys/k1",
        approved=True,
        approval_comment="ok",
        decide_time="2026-01-02T03:04:05.678901+00:00",
        input={},
        result=[],
        start_time="2026-01-02T03:04:06+00:00",
        end_time="2026-01-02T03:04:05+00:00",
    )
    rendered = streamed_task(decided)
    assert rendered.approval.approved and rendered.approval.comment == "ok"
    assert rendered.approval.decide_time.nanos == 678_901_000
    assert rendered.HasField("input") and rendered.HasField("result")
    assert not rendered.HasField("run_duration")
    # Snapshots written before a column existed still render.
    old = dict(table[0])
    del old["approval_timeout_ms"], old["labels"]
    assert not streamed_task(old).labels


def streamed_task(snapshot: dict[str, Any]) -> task_pb2.Task:
    """The Task a WatchEvents stream sends for an event carrying this snapshot."""
    row = EventRow("alpha", 1, "task.created", datetime.now(UTC), "", json.dumps(snapshot), None)
    return event_message(row).task


async def test_the_blocking_client_watches_too(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    def run() -> list[str]:
        with SyncEventClient(server.grpc_target, api_key=keys["operator"], project="alpha") as c:
            first = c.publish_event("sync.one")
            c.publish_event("sync.two")
            watch = c.watch_events(after=first.id - 1)
            got = [next(watch).type, next(watch).type]
            watch.close()
            return got

    assert await asyncio.to_thread(run) == ["sync.one", "sync.two"]


async def test_twenty_subscribers_on_two_replicas_get_1000_events_in_order_exactly_once(
    server: ConveyorServer, keys: dict[str, str], server_settings: Settings, tmp_path: Path
) -> None:
    async with replica(server_settings, tmp_path / "replica") as other:
        clients = [
            EventClient(s.grpc_target, api_key=keys["operator"], project="alpha")
            for s in (server, other)
        ]
        try:
            watches = [clients[i % 2].watch_events(keepalives=True) for i in range(20)]
            await asyncio.gather(*(first_keepalive(w) for w in watches))

            async def publisher(n: int) -> list[int]:
                c = clients[n % 2]
                return [(await c.publish_event(f"load.p{n}", {"i": i})).id for i in range(125)]

            receiving = [asyncio.create_task(collect(w, 1000, within=60)) for w in watches]
            sent = await asyncio.gather(*(publisher(n) for n in range(8)))
            received = await asyncio.gather(*receiving)
        finally:
            for c in clients:
                await c.close()
    every = sorted(i for ids in sent for i in ids)
    assert len(set(every)) == 1000
    for ids in sent:
        assert ids == sorted(ids)  # one writer's events in the order it wrote them
    for got in received:
        assert [e.id for e in got] == every


async def test_a_subscriber_resumes_on_another_replica_when_its_server_dies(
    server: ConveyorServer, keys: dict[str, str], server_settings: Settings, tmp_path: Path
) -> None:
    async with (
        replica(server_settings, tmp_path / "a") as first,
        replica(server_settings, tmp_path / "b") as second,
    ):
        # A channel over both addresses, as behind a load balancer: it uses the first
        # while it lives, then the second.
        target = f"ipv4:{first.grpc_target},{second.grpc_target}"
        async with (
            EventClient(target, api_key=keys["operator"], project="alpha") as watcher,
            EventClient(server.grpc_target, api_key=keys["operator"], project="alpha") as writer,
        ):
            watch = watcher.watch_events(keepalives=True, max_backoff=0.2)
            await first_keepalive(watch)
            assert hub_of(first).position("alpha") is not None
            assert hub_of(second).position("alpha") is None

            async def publish() -> list[int]:
                ids = []
                for i in range(300):
                    ids.append((await writer.publish_event("stream.tick", {"i": i})).id)
                    if i % 20 == 0:
                        await asyncio.sleep(0.01)
                return ids

            publishing = asyncio.create_task(publish())
            got = await collect(watch, 50)
            await first.stop(grace=0)
            got += await collect(watch, 250)
            sent = await publishing
            assert hub_of(second).position("alpha") is not None
            await watch.aclose()
    assert watch.reconnects >= 1
    assert [e.id for e in got] == sent


async def test_a_slow_subscriber_is_cut_off_with_its_last_id_and_resumes(
    server: ConveyorServer, client: EventClient, database_url: str
) -> None:
    hub = hub_of(server)
    hub.buffer_size, hub.batch = 500, 100
    call = client.events.WatchEvents(event_pb2.WatchEventsRequest(parent=PARENT))
    start = await call.read()
    assert isinstance(start, event_pb2.Event) and start.type == KEEPALIVE
    # Stop reading while 5000 events of 2 KB arrive: once flow control stops the sends
    # (a few MB in flight), the buffer fills and the hub cuts the subscriber off rather
    # than wait for it.
    await asyncio.to_thread(insert_events, database_url, 5000, size=2000)
    async with asyncio.timeout(20):
        while hub.subscribers("alpha"):  # noqa: ASYNC110 - the server's state, polled
            await asyncio.sleep(0.05)
    received: list[int] = []
    with pytest.raises(grpc.RpcError) as caught:
        async with asyncio.timeout(20):
            async for event in call:
                received.append(event.id)
    error = from_rpc_error(caught.value)
    assert isinstance(error, ResourceExhaustedError)
    assert error.reason == "EVENT_BUFFER_OVERFLOW"
    assert received, "events in flight before the cut still arrive"
    assert len(received) < 5000
    assert int(error.metadata["last_event_id"]) == received[-1]
    # Resuming from that id continues with the next event: nothing lost, nothing twice.
    hub.buffer_size = 10_000
    rest = client.watch_events(after=int(error.metadata["last_event_id"]))
    tail = await collect(rest, 5000 - len(received))
    await rest.aclose()
    assert received + [e.id for e in tail] == _all_ids(database_url, "bulk.event")


async def test_the_client_resumes_by_itself_after_being_cut_off(
    server: ConveyorServer, client: EventClient, database_url: str
) -> None:
    hub = hub_of(server)
    hub.buffer_size, hub.batch = 300, 100
    watch = client.watch_events(keepalives=True)
    await first_keepalive(watch)
    await asyncio.to_thread(insert_events, database_url, 5000, size=2000)
    got: list[int] = []
    async with asyncio.timeout(60):
        async for event in watch:
            if event.type == KEEPALIVE:
                continue  # a resumed stream opens with one: its id is the cursor again
            got.append(event.id)
            if len(got) == 10:
                await asyncio.sleep(1)  # a consumer that stalls
            if len(got) == 5000:
                break
    await watch.aclose()
    assert watch.reconnects >= 1
    assert got == _all_ids(database_url, "bulk.event")


def _max_id(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT max(id) FROM events").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _all_ids(database_url: str, event_type: str) -> list[int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT id FROM events WHERE type = %s ORDER BY id", (event_type,))
        return [int(r[0]) for r in rows]


async def test_shutdown_ends_watches_with_unavailable_and_the_cursor(
    keys: dict[str, str], server_settings: Settings, tmp_path: Path
) -> None:
    async with (
        replica(server_settings, tmp_path / "r") as doomed,
        EventClient(doomed.grpc_target, api_key=keys["operator"], project="alpha") as c,
    ):
        event = await c.publish_event("last.words")
        call = c.events.WatchEvents(event_pb2.WatchEventsRequest(parent=PARENT, after=event.id - 1))
        opening, first = await call.read(), await call.read()
        assert isinstance(opening, event_pb2.Event) and opening.type == KEEPALIVE
        assert isinstance(first, event_pb2.Event) and first.id == event.id
        stopping = asyncio.create_task(doomed.stop(grace=5))
        with pytest.raises(grpc.RpcError) as caught:
            async with asyncio.timeout(5):
                await call.read()
        error = from_rpc_error(caught.value)
        await stopping
    assert isinstance(error, UnavailableError)
    assert error.metadata["last_event_id"] == str(event.id)


# Retention.


async def test_retention_prunes_old_events_in_batches_on_several_replicas(
    server: ConveyorServer, client: EventClient, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO events (project, type, time) "
            "SELECT 'alpha', 'old', now() - interval '8 days' FROM generate_series(1, 2500)"
        )
    kept = await client.publish_event("fresh")
    loops = [RetentionLoop(server.context.pool, timedelta(days=7), batch=100) for _ in range(3)]
    deleted = await asyncio.gather(*(loop.run_once() for loop in loops))
    assert sum(deleted) == 2500
    remaining = [e.type async for e in client.list_events()]
    assert "old" not in remaining and "fresh" in remaining
    assert [e.id async for e in client.list_events(types=["fresh"])] == [kept.id]
    configured = next(loop for loop in server.context.loops if isinstance(loop, RetentionLoop))
    assert configured.retention == timedelta(days=7)


def test_retention_is_configured_by_environment() -> None:
    assert Settings().event_retention == 7 * 86400
    assert Settings.from_env({"CONVEYOR_EVENT_RETENTION": "36h"}).event_retention == 36 * 3600
    assert Settings.from_env({"CONVEYOR_EVENT_RETENTION": "600"}).event_retention == 600
    with pytest.raises(ValueError, match="CONVEYOR_EVENT_RETENTION"):
        Settings.from_env({"CONVEYOR_EVENT_RETENTION": "a week"})
    with pytest.raises(ValueError, match="event_retention"):
        Settings(event_retention=0)


async def test_published_events_fire_event_schedules(
    server: ConveyorServer, client: EventClient, database_url: str
) -> None:
    from conveyor.server.loops.scheduler import SchedulerLoop
    from conveyor.v1 import schedule_pb2

    await client.schedules.CreateSchedule(
        schedule_pb2.CreateScheduleRequest(
            parent=PARENT,
            schedule_id="on-deploy",
            schedule=schedule_pb2.Schedule(
                spec=schedule_pb2.ScheduleSpec(
                    kind=enums_pb2.SCHEDULE_KIND_EVENT, expression="deploy.*"
                ),
                task_template=schedule_pb2.TaskTemplate(kind="smoke.test"),
                overlap_policy=enums_pb2.OVERLAP_POLICY_ALLOW_ALL,
            ),
        )
    )
    await client.publish_event("deploy.finished", {"version": "2"})
    await client.publish_event("build.finished")
    loop = next(lp for lp in server.context.loops if isinstance(lp, SchedulerLoop))
    assert await loop.run_once() == 1
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM tasks WHERE kind = 'smoke.test'").fetchone()
    assert row == (1,)


async def test_one_listener_wakes_watchers_and_webhook_dispatchers_by_channel(
    database_url: str,
) -> None:
    from conveyor.server.streams.listener import WEBHOOKS_CHANNEL, EventListener

    seen: list[tuple[str, str | None]] = []
    both = asyncio.Event()

    def note(channel: str, project: str | None) -> None:
        seen.append((channel, project))
        if len(seen) >= 2:
            both.set()

    listener = EventListener(database_url, poll_interval=30)
    listener.subscribe(lambda project: note("events", project))
    listener.subscribe(lambda project: note("webhooks", project), WEBHOOKS_CHANNEL)
    await listener.start()
    try:
        await listener.wait_listening()
        seen.clear()
        both.clear()
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("INSERT INTO events (project, type) VALUES ('default', 'x.y')")
            conn.execute("SELECT pg_notify('conveyor_webhooks', '')")
        async with asyncio.timeout(5):
            await both.wait()
    finally:
        await listener.stop()
    assert seen == [("events", "default"), ("webhooks", None)]
