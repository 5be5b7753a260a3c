"""Shared fixtures: one PostgreSQL per session, a database per test, a real server.

Tiers (see STYLE.md, habit 10):

- `db_conn`: a connection inside a transaction that is rolled back after the test, on a
  migrated database shared by the session. Cheapest; use it for plain store/domain tests.
- `database_url`: a fresh migrated database per test, cloned from a template (~60 ms),
  dropped afterwards. Use it for committed data: NOTIFY, SKIP LOCKED races, workers.
- `server`: a real ConveyorServer on 127.0.0.1:0 over `database_url`. Override the
  `server_hooks` fixture (in a conftest or a test module) to plug in services, auth
  interceptors and the bootstrap step.
- `pool` / `conn`: a small pool, or one autocommit connection, on `database_url`.
- `replica`: a second server on the same database (two replicas of one deployment).
  Every test that uses it runs twice: `[direct]`, and `[pgbouncer]` with both servers
  behind a real transaction-mode PgBouncer (tests/pgbouncer_support.py), prepared
  statements off and the LISTEN connection straight to PostgreSQL (docs/scaling.md).

PostgreSQL comes from DATABASE_URL when set (CI against a real server), else from an
embedded PostgreSQL started in a temporary directory for the session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from pgbouncer_support import PGBOUNCER, PgBouncer  # type: ignore[import-not-found]
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow

from conveyor.server.app import ConveyorServer, ServerHooks
from conveyor.server.embedded import EmbeddedPostgres
from conveyor.server.services import default_hooks
from conveyor.server.settings import Settings
from conveyor.server.store.db import Pool, open_pool
from conveyor.server.store.migrate import migrate

DatabaseFactory = Callable[..., str]


def with_dbname(url: str, dbname: str) -> str:
    """`url` pointed at another database on the same server."""
    return make_conninfo(url, dbname=dbname)


def _admin(url: str) -> psycopg.Connection[TupleRow]:
    # CREATE/DROP DATABASE refuse to run inside a transaction block.
    return psycopg.connect(url, autocommit=True)


def _create_database(admin_url: str, name: str, template: str | None = None) -> str:
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
    with _admin(admin_url) as conn:
        conn.execute(statement)
    return with_dbname(admin_url, name)


def _drop_database(admin_url: str, name: str) -> None:
    # FORCE ends sessions a test left open (a pool it forgot to close) instead of failing.
    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with _admin(admin_url) as conn:
        conn.execute(statement)


def _unique_name(prefix: str) -> str:
    # Unique per run, so concurrent runs (xdist workers, CI jobs) sharing one server
    # never collide.
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Admin connection string (superuser, `postgres` database) for the session's server."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    # Not under pytest's basetemp: the embedded server runs as another user, so its
    # parents get a traverse grant, and every other pytest starting on the machine
    # resets pytest-of-<user> to 0700, which locks the running server out of its files.
    root = Path(tempfile.mkdtemp(prefix="conveyor-test-pg-"))
    embedded = EmbeddedPostgres(root)
    try:
        yield embedded.start()
    finally:
        embedded.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def template_database(postgres_url: str) -> AsyncIterator[str]:
    """Name of a migrated database to clone. Nothing may stay connected to it."""
    name = _unique_name("conveyor_tpl")
    await migrate(_create_database(postgres_url, name))
    yield name
    _drop_database(postgres_url, name)


@pytest.fixture
def database_factory(postgres_url: str) -> Iterator[DatabaseFactory]:
    """`make(template=None) -> url`: new databases, all dropped after the test.

    Without a template the database is empty (not migrated).
    """
    created: list[str] = []

    def make(template: str | None = None) -> str:
        name = _unique_name("test")
        url = _create_database(postgres_url, name, template)
        created.append(name)
        return url

    yield make
    for name in created:
        _drop_database(postgres_url, name)


@pytest.fixture
def database_url(database_factory: DatabaseFactory, template_database: str) -> str:
    """A fresh, migrated database of this test's own."""
    return database_factory(template_database)


@pytest.fixture(scope="session")
def shared_database_url(postgres_url: str, template_database: str) -> Iterator[str]:
    """A migrated database for the whole session; only touch it through `db_conn`."""
    name = _unique_name("test_shared")
    url = _create_database(postgres_url, name, template_database)
    yield url
    _drop_database(postgres_url, name)


@pytest_asyncio.fixture
async def db_conn(
    shared_database_url: str,
) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
    """A connection in a transaction that is rolled back when the test ends.

    Code under test may open its own `conn.transaction()`: psycopg nests it as a
    savepoint. Nothing commits, so tests never see each other's rows.
    """
    async with await psycopg.AsyncConnection.connect(shared_database_url) as conn:
        # Not autocommit: the first statement opens the transaction we roll back.
        yield conn
        await conn.rollback()


@pytest_asyncio.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    """A small pool of the server's kind on `database_url` (for domain and store tests)."""
    made = await open_pool(database_url, min_size=1, max_size=4)
    try:
        yield made
    finally:
        await made.close()


@pytest_asyncio.fixture
async def conn(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
    """An autocommit connection to `database_url` (committed setup and checks)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as c:
        yield c


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # The replica tests are the deployment tests: run them through PgBouncer too.
    if "replica" in metafunc.fixturenames:
        metafunc.parametrize("database_route", ["direct", "pgbouncer"], indirect=True)


@pytest.fixture
def database_route(request: pytest.FixtureRequest) -> str:
    """How the servers reach PostgreSQL: "direct", or "pgbouncer" (replica tests)."""
    return str(getattr(request, "param", "direct"))


@pytest.fixture(scope="session")
def pgbouncer(postgres_url: str) -> Iterator[PgBouncer]:
    """A transaction-mode PgBouncer in front of the session's PostgreSQL."""
    if not Path(PGBOUNCER).exists():
        pytest.skip(
            f"pgbouncer is not installed (no {PGBOUNCER}): apt-get install pgbouncer, "
            "or set CONVEYOR_PGBOUNCER"
        )
    bouncer = PgBouncer(postgres_url)
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture
def server_hooks() -> ServerHooks:
    """What the `server` fixture plugs in: the whole application, as `conveyor serve` runs it."""
    return default_hooks()


@pytest.fixture
def server_settings(
    tmp_path: Path, database_url: str, database_route: str, request: pytest.FixtureRequest
) -> Settings:
    """Settings for the `server` fixture: free ports, a temporary data dir, own database."""
    settings = Settings(
        data_dir=tmp_path / "data",
        grpc_address="127.0.0.1:0",
        http_address="127.0.0.1:0",
        database_url=database_url,
        log_level="warning",
        shutdown_grace=2.0,
    )
    if database_route == "pgbouncer":
        # As docs/scaling.md says to run behind PgBouncer 1.18 in transaction mode.
        bouncer: PgBouncer = request.getfixturevalue("pgbouncer")
        settings = settings.replace(
            database_url=bouncer.url(database_url),
            listen_database_url=database_url,
            database_prepare=False,
        )
    return settings


@pytest_asyncio.fixture
async def server(
    server_settings: Settings, server_hooks: ServerHooks
) -> AsyncIterator[ConveyorServer]:
    """A running server: use .grpc_target, .http_base_url, .data_dir, .context."""
    running = ConveyorServer(server_settings, server_hooks)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest_asyncio.fixture
async def replica(server_settings: Settings, tmp_path: Path) -> AsyncIterator[ConveyorServer]:
    """A second server on the `server` fixture's database."""
    other = ConveyorServer(server_settings.replace(data_dir=tmp_path / "replica"), default_hooks())
    await other.start()
    try:
        yield other
    finally:
        await other.stop()


@pytest.fixture
def admin_key(server: ConveyorServer) -> str:
    """The bootstrap system admin key the server minted into its data dir."""
    return (server.data_dir / "admin.key").read_text().strip()


@pytest_asyncio.fixture
async def keys(server: ConveyorServer, admin_key: str) -> dict[str, str]:
    """Projects `alpha` and `beta`, and one key of each role in `alpha`: {role: secret}."""
    from conveyor.client import AsyncClient
    from conveyor.v1 import enums_pb2

    roles = {
        "viewer": enums_pb2.ROLE_VIEWER,
        "worker": enums_pb2.ROLE_WORKER,
        "operator": enums_pb2.ROLE_OPERATOR,
        "admin": enums_pb2.ROLE_ADMIN,
    }
    async with AsyncClient(server.grpc_target, api_key=admin_key) as client:
        await client.create_project("alpha")
        await client.create_project("beta")
        return {
            role: (await client.create_api_key("projects/alpha", value)).secret
            for role, value in roles.items()
        }


# The dashboard's browser tests drive Debian's chromium through Playwright (never a
# browser that Playwright downloads); .ci/run installs the package when it is missing.
CHROMIUM = os.environ.get("CONVEYOR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}: apt-get install chromium, or CONVEYOR_CHROMIUM")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    """One headless chromium per test module."""
    from playwright.async_api import async_playwright

    _require_chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture
async def signed_in(
    server: ConveyorServer, keys: dict[str, str], browser: Any
) -> AsyncIterator[Callable[[str], Awaitable[Any]]]:
    """`await signed_in(role)`: a page signed in to the dashboard with that role's key
    of project `alpha`, on its own browser context (own cookies)."""
    contexts: list[Any] = []

    async def open_as(role: str) -> Any:
        context = await browser.new_context(viewport={"width": 1280, "height": 860})
        contexts.append(context)
        page = await context.new_page()
        await page.goto(server.http_base_url + "/ui/sign-in")
        await page.get_by_label("API key").fill(keys[role])
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(server.http_base_url + "/")
        return page

    yield open_as
    for context in contexts:
        await context.close()


@pytest.fixture
def shoot(tmp_path: Path) -> Callable[[Any, str], Awaitable[None]]:
    """`await shoot(page, name)`: a full-page screenshot kept with the test run; with
    CONVEYOR_SCREENSHOTS set, also written there (how docs/images/ is refreshed)."""

    async def take(page: Any, name: str) -> None:
        await page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
        target = os.environ.get("CONVEYOR_SCREENSHOTS")
        if target:
            await page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=True)

    return take
