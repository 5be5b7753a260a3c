"""The dashboard's routes, mounted on the HTTP app in front of the REST gateway."""

from __future__ import annotations

import asyncio
import re

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from conveyor.server.dashboard import (
    pages_audit,
    pages_queues,
    pages_schedules,
    pages_tasks,
    pages_webhooks,
    pages_workers,
)
from conveyor.server.dashboard.api import Api, Channel
from conveyor.server.dashboard.session import (
    PAGE_HEADERS,
    PROJECT_COOKIE,
    SESSION_COOKIE,
    SESSION_TTL_SECONDS,
    SIGN_IN_COOKIE,
    Sessions,
    new_sign_in_token,
    set_cookie,
    sign_in_token_ok,
)
from conveyor.server.dashboard.web import Pages, local_path, make_environment, read_form
from conveyor.server.errors import Unauthenticated
from conveyor.server.store.db import Pool

__all__ = ["Dashboard"]

PROJECT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class Dashboard:
    """The dashboard of one server process; `routes()` go into the HTTP app."""

    def __init__(
        self, pool: Pool, server_key: bytes, grpc_target: str, stopping: asyncio.Event
    ) -> None:
        """`stopping` is set when shutdown begins: open event streams end then."""
        self._channel = Channel(grpc_target)
        self._sessions = Sessions(pool, server_key)
        self._env = make_environment()
        self.pages = Pages(
            self._sessions, lambda token: Api(self._channel.get(), token), self._env, stopping
        )

    async def close(self) -> None:
        await self._channel.close()

    def routes(self) -> list[BaseRoute]:
        page = self.pages.page
        routes: list[BaseRoute] = [
            Route("/ui/sign-in", self.sign_in_form, methods=["GET"]),
            Route("/ui/sign-in", self.sign_in, methods=["POST"]),
            Route("/ui/sign-out", self.sign_out, methods=["POST"]),
            Route("/ui/project", self.choose_project, methods=["GET"]),
            Mount(
                "/ui/static",
                StaticFiles(packages=[("conveyor.server.dashboard", "static")]),
                name="static",
            ),
        ]
        for module in (
            pages_queues,
            pages_tasks,
            pages_schedules,
            pages_workers,
            pages_audit,
            pages_webhooks,
        ):
            for path, handler, methods in module.ROUTES:
                routes.append(Route(path, page(handler), methods=methods))
        return routes

    async def sign_in_form(self, request: Request) -> Response:
        return self._sign_in_page(request, "", 200)

    def _sign_in_page(self, request: Request, message: str, status: int) -> Response:
        token = new_sign_in_token()
        html = self._env.get_template("sign_in.html").render(
            view=None,
            notice="",
            message=message,
            csrf=token,
            next=request.query_params.get("next", ""),
        )
        response = HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)
        set_cookie(response, request, SIGN_IN_COOKIE, token, max_age=3600)
        return response

    async def sign_in(self, request: Request) -> Response:
        form = await read_form(request)
        if not sign_in_token_ok(request, form.get("csrf", "")):
            return self._sign_in_page(request, "The form expired; try again.", 403)
        api_key = form.get("api_key", "").strip()
        if not api_key:
            return self._sign_in_page(request, "Enter an API key.", 400)
        try:
            session, _ = await self._sessions.open(api_key)
        except Unauthenticated:
            return self._sign_in_page(request, "That API key is not valid.", 401)
        response = RedirectResponse(local_path(form.get("next", ""), "/"), status_code=303)
        set_cookie(response, request, SESSION_COOKIE, session, max_age=SESSION_TTL_SECONDS)
        response.delete_cookie(SIGN_IN_COOKIE, path="/")
        return response

    async def choose_project(self, request: Request) -> Response:
        """A system key's project for the pages that follow (a view setting only: every
        call still names the project, and the server decides what the key may see)."""
        name = request.query_params.get("name", "")
        response = RedirectResponse("/", status_code=303)
        if PROJECT_ID.fullmatch(name):
            set_cookie(response, request, PROJECT_COOKIE, name, max_age=SESSION_TTL_SECONDS)
        return response

    async def sign_out(self, request: Request) -> Response:
        token = request.cookies.get(SESSION_COOKIE, "")
        form = await read_form(request)
        if token and not self._sessions.csrf_ok(token, form.get("csrf", "")):
            return self._sign_in_page(request, "Sign-out needs the page's CSRF token.", 403)
        if token:
            await self._sessions.revoke(token)
        response = RedirectResponse("/ui/sign-in", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        response.delete_cookie(PROJECT_COOKIE, path="/")
        return response
