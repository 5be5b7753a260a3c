"""BatchCreateTasks: bulk statements, per-item results, atomic all-or-nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
import pytest_asyncio
from google.rpc import code_pb2, error_details_pb2

from conveyor.client import AsyncClient, InvalidArgumentError, NotFoundError
from conveyor.server.app import ConveyorServer
from conveyor.v1 import task_pb2, task_service_pb2

PARENT = "projects/alpha"


@pytest_asyncio.fixture
async def client(server: ConveyorServer, keys: dict[str, str]) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"]) as c:
        yield c


def _item(
    kind: str = "k", request_id: str = "", **fields: object
) -> task_service_pb2.CreateTaskRequest:
    return task_service_pb2.CreateTaskRequest(
        task=task_pb2.Task(kind=kind, **fields),  # type: ignore[arg-type]
        request_id=request_id,
    )


async def _batch(
    client: AsyncClient, items: list[task_service_pb2.CreateTaskRequest], *, atomic: bool = False
) -> task_service_pb2.BatchCreateTasksResponse:
    return await client.tasks.BatchCreateTasks(
        task_service_pb2.BatchCreateTasksRequest(parent=PARENT, requests=items, atomic=atomic)
    )


async def _task_count(database_url: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT count(*) FROM tasks")
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def _violations(status: object) -> list[str]:
    fields: list[str] = []
    for detail in status.details:  # type: ignore[attr-defined]
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return fields


async def _statements(database_url: str) -> tuple[int, int]:
    """(task.created events, the transactions that wrote them)."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT count(*), count(DISTINCT xid) FROM events WHERE type = 'task.created'"
        )
        row = await cur.fetchone()
    assert row is not None
    return row[0], row[1]


@pytest.mark.parametrize(("atomic", "statements"), [(False, 4), (True, 1)])
async def test_a_thousand_tasks_in_bulk_statements(
    client: AsyncClient, database_url: str, atomic: bool, statements: int
) -> None:
    """An atomic batch is one statement; another is one per 250 items (sent while the
    next 250 are validated), with the same answer."""
    response = await _batch(
        client, [_item(f"k{i}", priority=1 + i % 9) for i in range(1000)], atomic=atomic
    )

    tasks = [r.task for r in response.results]
    assert all(r.WhichOneof("result") == "task" for r in response.results)
    assert [t.kind for t in tasks] == [f"k{i}" for i in range(1000)]
    assert [t.priority for t in tasks] == [1 + i % 9 for i in range(1000)]
    # Ids follow the order of the requests.
    assert [t.name for t in tasks] == sorted(t.name for t in tasks)
    assert await _statements(database_url) == (1000, statements)
    got = await client.tasks.GetTask(task_service_pb2.GetTaskRequest(name=tasks[500].name))
    got.ClearField("blocked_reason")
    assert got == tasks[500]


async def test_non_atomic_refuses_items_one_by_one(client: AsyncClient, database_url: str) -> None:
    missing = f"projects/alpha/tasks/{uuid.uuid4()}"
    response = await _batch(
        client,
        [
            _item("ok-1"),
            _item("bad", priority=11),
            _item("orphan", parent_task=missing),
            _item("dedupe", dedupe_policy=task_pb2.DedupePolicy(key="x")),
            _item("ok-2"),
        ],
    )
    kinds = [r.WhichOneof("result") for r in response.results]
    assert kinds == ["task", "status", "status", "task", "task"]
    bad, orphan = (r.status for r in response.results[1:3])
    assert bad.code == code_pb2.INVALID_ARGUMENT
    assert _violations(bad) == ["requests[1].task.priority"]
    assert orphan.code == code_pb2.INVALID_ARGUMENT
    assert _violations(orphan) == ["requests[2].task.parent_task"]
    assert await _task_count(database_url) == 3


async def test_atomic_refuses_everything_for_one_bad_field(
    client: AsyncClient, database_url: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await _batch(
            client,
            [_item("ok"), _item("", queue="a b"), _item("ok"), _item("x" * 300)],
            atomic=True,
        )
    assert sorted(f for f, _ in caught.value.field_violations) == [
        "requests[1].task.kind",
        "requests[1].task.queue",
        "requests[3].task.kind",
    ]
    assert await _task_count(database_url) == 0


async def test_atomic_refuses_everything_for_a_missing_parent(
    client: AsyncClient, database_url: str
) -> None:
    """The parent is checked by the insert itself; atomic still writes nothing."""
    parent = (await _batch(client, [_item("parent")])).results[0].task
    missing = f"projects/alpha/tasks/{uuid.uuid4()}"
    with pytest.raises(InvalidArgumentError) as caught:
        await _batch(
            client,
            [_item("child", parent_task=parent.name), _item("orphan", parent_task=missing)],
            atomic=True,
        )
    assert [f for f, _ in caught.value.field_violations] == ["requests[1].task.parent_task"]
    assert await _task_count(database_url) == 1

    ok = await _batch(client, [_item("child", parent_task=parent.name)], atomic=True)
    assert ok.results[0].task.root_task == parent.name


async def test_atomic_with_dedupe_is_all_or_nothing(client: AsyncClient, database_url: str) -> None:
    missing = f"projects/alpha/tasks/{uuid.uuid4()}"
    with pytest.raises(InvalidArgumentError) as caught:
        await _batch(
            client,
            [
                _item(dedupe_policy=task_pb2.DedupePolicy(key="x")),
                _item("orphan", parent_task=missing),
            ],
            atomic=True,
        )
    assert [f for f, _ in caught.value.field_violations] == ["requests[1].task.parent_task"]
    assert await _task_count(database_url) == 0

    ok = await _batch(
        client,
        [_item(), _item(dedupe_policy=task_pb2.DedupePolicy(key="x"))] * 2,
        atomic=True,
    )
    kinds = [r.WhichOneof("result") for r in ok.results]
    assert kinds == ["task", "task", "task", "existing_task"]
    assert ok.results[3].existing_task.name == ok.results[1].task.name
    assert await _task_count(database_url) == 3


@pytest.mark.parametrize("size", [0, 1001])
async def test_batch_size_is_bounded(client: AsyncClient, database_url: str, size: int) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        await _batch(client, [_item() for _ in range(size)])
    assert [f for f, _ in caught.value.field_violations] == ["requests"]
    assert await _task_count(database_url) == 0


async def test_item_parent_must_match(client: AsyncClient, database_url: str) -> None:
    item = _item()
    item.parent = "projects/beta"
    response = await _batch(client, [item, _item()])
    assert _violations(response.results[0].status) == ["requests[0].parent"]
    assert response.results[1].HasField("task")
    same = _item()
    same.parent = PARENT
    assert (await _batch(client, [same])).results[0].HasField("task")
    assert await _task_count(database_url) == 2


async def test_request_ids_in_a_batch_return_the_first_task(
    client: AsyncClient, database_url: str
) -> None:
    first = (await _batch(client, [_item(request_id="a")])).results[0].task
    response = await _batch(
        client, [_item(request_id="a"), _item(request_id="b"), _item(request_id="b"), _item()]
    )
    tasks = [r.task for r in response.results]
    assert tasks[0].name == first.name
    assert tasks[1].name == tasks[2].name != first.name
    assert await _task_count(database_url) == 3


async def test_a_large_batch_keeps_each_items_outcome(
    client: AsyncClient, database_url: str
) -> None:
    """Refusals, dedupe items and request_ids spread over a batch's statements."""
    first = (await _batch(client, [_item(request_id="r-700")])).results[0].task
    items = [_item(f"k{i}") for i in range(800)]
    items[3] = _item("bad", priority=11)
    items[300] = _item("dedupe", dedupe_policy=task_pb2.DedupePolicy(key="x"))
    items[600] = _item("dedupe", dedupe_policy=task_pb2.DedupePolicy(key="x"))
    items[700] = _item(request_id="r-700")
    items[799] = _item("bad", queue="a b")
    response = await _batch(client, items)
    kinds = [r.WhichOneof("result") for r in response.results]
    assert [i for i, k in enumerate(kinds) if k != "task"] == [3, 600, 799]
    assert kinds[600] == "existing_task"
    assert response.results[600].existing_task.name == response.results[300].task.name
    assert _violations(response.results[3].status) == ["requests[3].task.priority"]
    assert _violations(response.results[799].status) == ["requests[799].task.queue"]
    assert response.results[700].task.name == first.name
    assert [r.task.kind for r in response.results[4:300]] == [f"k{i}" for i in range(4, 300)]
    # 798 items: 795 new plain tasks in four statements, one dedupe task alone.
    assert await _task_count(database_url) == 1 + 795 + 1
    assert await _statements(database_url) == (1 + 795 + 1, 1 + 4 + 1)


async def test_a_large_batch_repeating_a_request_id_is_one_statement(
    client: AsyncClient, database_url: str
) -> None:
    """Within one statement the first item with a request_id wins; a batch that repeats
    one is not split, so a later chunk cannot commit its copy first."""
    items = [_item(f"k{i}") for i in range(600)]
    items[10] = _item("first", request_id="same")
    items[590] = _item("first", request_id="same")
    response = await _batch(client, items)
    assert response.results[590].task.name == response.results[10].task.name
    assert await _statements(database_url) == (599, 1)


@pytest.mark.parametrize("atomic", [False, True])
async def test_a_missing_project_is_not_found(
    server: ConveyorServer, admin_key: str, database_url: str, atomic: bool
) -> None:
    async with AsyncClient(server.grpc_target, api_key=admin_key) as admin:
        with pytest.raises(NotFoundError):
            await admin.tasks.BatchCreateTasks(
                task_service_pb2.BatchCreateTasksRequest(
                    parent="projects/nowhere", requests=[_item()] * 600, atomic=atomic
                )
            )
    assert await _task_count(database_url) == 0
