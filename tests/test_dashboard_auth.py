"""The dashboard's sign-in, sessions, CSRF and role-based controls, in a real browser."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

import httpx
import psycopg

from conveyor.client import AsyncClient
from conveyor.server.app import ConveyorServer
from conveyor.v1 import enums_pb2, project_pb2

QUEUE_CONTROLS = re.compile(r"^(Pause|Resume|Purge|Cancel|Approve|Reject|Rotate|Save)$")


async def _session_cookie(page: Any) -> dict[str, Any]:
    cookies = await page.context.cookies()
    return next(c for c in cookies if c["name"] == "conveyor_session")


async def _csrf(page: Any) -> str:
    value: str = await page.locator("input[name=csrf]").first.get_attribute("value")
    return value


async def test_sign_in_sets_a_strict_http_only_session_and_sign_out_revokes_it(
    server: ConveyorServer, keys: dict[str, str], signed_in: Any, database_url: str
) -> None:
    base = server.http_base_url
    async with httpx.AsyncClient(base_url=base) as http:
        signed_out = await http.get("/")
        assert signed_out.status_code == 303
        assert signed_out.headers["location"].startswith("/ui/sign-in")

    page = await signed_in("operator")
    assert await page.get_by_role("heading", name="Queues").is_visible()
    assert await page.locator(".role").inner_text() == "operator"
    cookie = await _session_cookie(page)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert not cookie["secure"]  # plain HTTP here; over TLS the cookie is Secure
    token = cookie["value"]
    assert token.startswith("cvs_") and keys["operator"] not in token
    # Only a hash of the session's secret is stored; the key is in no cookie.
    assert all(keys["operator"] not in c["value"] for c in await page.context.cookies())
    session_id, secret = token.split("_")[1], token.split("_", 2)[2]
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT secret_hash, revoke_time FROM dashboard_sessions WHERE id = %s", [session_id]
        )
        row = await cur.fetchone()
    assert row is not None and bytes(row[0]) == hashlib.sha256(secret.encode()).digest()
    assert row[1] is None

    # Pages are never framed (click-jacking) and load nothing from elsewhere.
    async with httpx.AsyncClient(base_url=base, cookies={"conveyor_session": token}) as http:
        home = await http.get("/")
        assert home.status_code == 200
        assert home.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in home.headers["content-security-policy"]
        assert "default-src 'self'" in home.headers["content-security-policy"]

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(re.compile(r".*/ui/sign-in$"))
    assert await page.get_by_label("API key").is_visible()
    # The old cookie, replayed, is refused: sign-out revoked the session.
    async with httpx.AsyncClient(base_url=base, cookies={"conveyor_session": token}) as http:
        replayed = await http.get("/")
        assert replayed.status_code == 303
        assert replayed.headers["location"].startswith("/ui/sign-in")


async def test_a_bad_key_is_refused(server: ConveyorServer, browser: Any) -> None:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(server.http_base_url + "/ui/sign-in")
        await page.get_by_label("API key").fill("cvk_0123456789abcdef_nope")
        await page.get_by_role("button", name="Sign in").click()
        assert await page.get_by_role("alert").inner_text() == "That API key is not valid."
        assert not [c for c in await context.cookies() if c["name"] == "conveyor_session"]
    finally:
        await context.close()


async def test_a_post_without_the_csrf_token_is_refused(
    server: ConveyorServer, keys: dict[str, str], signed_in: Any
) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops:
        await ops.create_task("email.send", {}, queue="mail")
        page = await signed_in("admin")
        cookie = await _session_cookie(page)
        jar = {"conveyor_session": cookie["value"]}
        async with httpx.AsyncClient(base_url=server.http_base_url, cookies=jar) as http:
            refused = await http.post("/ui/queues/mail/pause", data={"next": "/"})
            assert refused.status_code == 403
            assert "CSRF" in refused.text
            wrong = await http.post("/ui/queues/mail/pause", data={"csrf": "0" * 64})
            assert wrong.status_code == 403
            assert not (await ops.get_queue("mail")).paused
            # The same POST with the page's token goes through.
            accepted = await http.post("/ui/queues/mail/pause", data={"csrf": await _csrf(page)})
            assert accepted.status_code == 303
        assert (await ops.get_queue("mail")).paused


async def test_a_viewer_sees_no_mutating_controls_and_gets_403_when_posting(
    server: ConveyorServer, keys: dict[str, str], signed_in: Any
) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops:
        task = await ops.create_task("email.send", {}, queue="mail")
        admin = await signed_in("admin")
        await admin.goto(server.http_base_url + "/ui/queues/mail")
        admin_buttons = await admin.get_by_role("button", name=QUEUE_CONTROLS).count()
        assert admin_buttons >= 3  # pause, cancel, purge at least

        viewer = await signed_in("viewer")
        assert await viewer.locator("tr[data-queue=mail]").is_visible()
        assert await viewer.get_by_role("button", name=QUEUE_CONTROLS).count() == 0
        assert await viewer.get_by_role("link", name="Purge").count() == 0
        await viewer.goto(server.http_base_url + "/ui/queues/mail")
        assert await viewer.locator(f"[data-task='{task.name.rsplit('/', 1)[-1]}']").is_visible()
        assert await viewer.get_by_role("button", name=QUEUE_CONTROLS).count() == 0
        # The only form a viewer gets is sign-out; its token is valid, the role is not.
        csrf = await _csrf(viewer)
        jar = {"conveyor_session": (await _session_cookie(viewer))["value"]}
        async with httpx.AsyncClient(base_url=server.http_base_url, cookies=jar) as http:
            for path in (
                "/ui/queues/mail/pause",
                f"/ui/tasks/{task.name.rsplit('/', 1)[-1]}/cancel",
            ):
                refused = await http.post(path, data={"csrf": csrf})
                assert refused.status_code == 403, path
                assert "viewer may not do this" in refused.text
        assert not (await ops.get_queue("mail")).paused
        assert (await ops.get_task(task.name)).state == task.state


async def test_sign_in_needs_its_form_token_and_is_secure_over_tls(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=server.http_base_url) as http:
        refused = await http.post("/ui/sign-in", data={"api_key": keys["viewer"]})
        assert refused.status_code == 403
        assert "conveyor_session" not in refused.cookies

        form = await http.get("/ui/sign-in", headers={"x-forwarded-proto": "https"})
        assert "secure" in form.headers["set-cookie"].lower()
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        # A Secure cookie is not sent back over plain HTTP: hand it over as TLS would.
        sent = f"conveyor_sign_in={form.cookies['conveyor_sign_in']}"
        signed = await http.post(
            "/ui/sign-in",
            data={"csrf": token.group(1), "api_key": keys["viewer"]},
            headers={"x-forwarded-proto": "https", "cookie": sent},
        )
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"].lower()
        assert "conveyor_session=cvs_" in cookie
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie


async def test_a_system_key_switches_projects(
    server: ConveyorServer, keys: dict[str, str], admin_key: str, browser: Any
) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["operator"], project="alpha") as ops:
        await ops.create_task("email.send", {}, queue="alpha-mail")
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(server.http_base_url + "/ui/sign-in")
        await page.get_by_label("API key").fill(admin_key)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(server.http_base_url + "/")
        assert await page.locator(".role").inner_text() == "system admin"
        assert await page.locator("tr[data-queue='alpha-mail']").count() == 0
        await page.get_by_label("Project").select_option("alpha")
        await page.locator("tr[data-queue='alpha-mail']").wait_for()
    finally:
        await context.close()


async def test_webhook_block_saves_the_url_and_shows_a_rotated_secret_once(
    server: ConveyorServer, keys: dict[str, str], signed_in: Any
) -> None:
    admin = await signed_in("admin")
    await admin.goto(server.http_base_url + "/ui/webhooks")
    block = admin.locator("#webhooks")
    await block.locator("input[name=callback_url]").fill("https://hooks.example.com/conveyor")
    await block.get_by_role("button", name="Save").click()
    await admin.get_by_role("status").filter(has_text="Callback URL saved.").wait_for()
    async with AsyncClient(server.grpc_target, api_key=keys["admin"], project="alpha") as client:
        project = await client.projects.GetProject(
            project_pb2.GetProjectRequest(name="projects/alpha")
        )
        assert project.callback_url == "https://hooks.example.com/conveyor"

        admin.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await block.get_by_role("button", name="Rotate").click()
        shown = await admin.locator("#webhook-secret").inner_text()
        current = await client.projects.GetWebhookSecret(
            project_pb2.GetWebhookSecretRequest(name="projects/alpha/webhookSecret")
        )
        assert shown == current.secret
    await admin.goto(server.http_base_url + "/ui/webhooks")
    assert await admin.locator("#webhook-secret").count() == 0  # shown once

    operator = await signed_in("operator")
    await operator.goto(server.http_base_url + "/ui/webhooks")
    assert await operator.get_by_role("button", name="Rotate").count() == 0


async def test_deleting_the_key_ends_its_sessions(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    async with AsyncClient(server.grpc_target, api_key=keys["admin"], project="alpha") as admin:
        key = await admin.create_api_key("projects/alpha", enums_pb2.ROLE_OPERATOR)
        async with httpx.AsyncClient(base_url=server.http_base_url) as http:
            form = await http.get("/ui/sign-in")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert token is not None
            signed = await http.post(
                "/ui/sign-in", data={"csrf": token.group(1), "api_key": key.secret}
            )
            assert signed.status_code == 303
            assert (await http.get("/")).status_code == 200
            await admin.delete_api_key(key.name)
            ended = await http.get("/")
            assert ended.status_code == 303
            assert ended.headers["location"].startswith("/ui/sign-in")


async def test_sign_in_returns_only_to_a_path_of_this_site(
    server: ConveyorServer, keys: dict[str, str]
) -> None:
    for target, expected in [
        ("/ui/tasks?state=QUEUED", "/ui/tasks?state=QUEUED"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
    ]:
        async with httpx.AsyncClient(base_url=server.http_base_url) as http:
            form = await http.get("/ui/sign-in")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert token is not None
            signed = await http.post(
                "/ui/sign-in",
                data={"csrf": token.group(1), "api_key": keys["viewer"], "next": target},
            )
            assert signed.headers["location"] == expected, target
