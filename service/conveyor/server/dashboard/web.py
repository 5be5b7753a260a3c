"""What every dashboard page shares: the signed-in view, forms, rendering, errors."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode

import grpc
from google.rpc import code_pb2
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from conveyor.server.dashboard import formats
from conveyor.server.dashboard.api import Api
from conveyor.server.dashboard.session import (
    PAGE_HEADERS,
    PROJECT_COOKIE,
    SESSION_COOKIE,
    Sessions,
)
from conveyor.server.domain.auth import ROLE_NAMES, Principal, authorize
from conveyor.server.errors import PermissionDenied
from conveyor.server.gateway.problems import HTTP_STATUS
from conveyor.server.rpc.rules import method_rules
from conveyor.v1 import auth_pb2, project_pb2

Req = TypeVar("Req")

MAX_FORM_BYTES = 256 * 1024


@functools.cache
def rules() -> dict[str, auth_pb2.MethodAuth]:
    """`Service.Method` -> its auth rule, read from the contract as the interceptor reads it
    (`/conveyor.v1.TaskService/CancelTask` -> `TaskService.CancelTask`)."""
    return {
        path.rsplit(".", 1)[-1].replace("/", "."): rule for path, rule in method_rules().items()
    }


def make_environment() -> Environment:
    env = Environment(
        loader=PackageLoader("conveyor.server.dashboard", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    formats.register(env)
    return env


@dataclass
class View:
    """One signed-in request: who, their session, the API, and the posted form."""

    request: Request
    principal: Principal
    token: str
    csrf: str
    api: Api
    env: Environment
    stopping: asyncio.Event
    form: ImmutableMultiDict[str, str] = field(default_factory=ImmutableMultiDict)
    chosen_project: str = ""
    """A system key's choice of project (a system key acts across projects)."""
    projects: list[str] = field(default_factory=list)
    """The projects a system key may switch to (empty for any other key)."""

    @property
    def project(self) -> str:
        if self.principal.system and self.chosen_project:
            return self.chosen_project
        return self.principal.project

    @property
    def parent(self) -> str:
        return f"projects/{self.project}"

    @property
    def role(self) -> str:
        return "system admin" if self.principal.system else ROLE_NAMES.get(self.principal.role, "?")

    def can(self, method: str) -> bool:
        """Whether the key may call `Service.Method`: the interceptor's own rule, so a
        control is offered exactly when the server would accept it."""
        rule = rules()[method]
        try:
            authorize(self.principal, rule, None)
        except PermissionDenied:
            return False
        return True

    async def call(self, method: Any, request: Req) -> Any:
        return await self.api.call(method, request)

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("notice", self.request.query_params.get("notice", ""))
        html = self.env.get_template(template).render(view=self, **context)
        return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def local_path(target: str, default: str) -> str:
    """`target` when it is a path on this site, else `default`: never an open redirect
    (`//host`, and `/\\host`, which browsers read as `//host`, are refused)."""
    if (
        not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 0x20 for c in target)
    ):
        return default
    return target


def back(view: View, default: str, notice: str = "") -> RedirectResponse:
    """303 to the form's `next` (a path on this site only) or `default`, with a notice."""
    target = local_path(view.form.get("next", ""), default)
    if notice:
        target += ("&" if "?" in target else "?") + urlencode({"notice": notice})
    return RedirectResponse(target, status_code=303)


Handler = Callable[[View], Awaitable[Response]]


class Pages:
    """Wraps page handlers: session check, CSRF on POST, RPC errors as pages."""

    def __init__(
        self,
        sessions: Sessions,
        api: Callable[[str], Api],
        env: Environment,
        stopping: asyncio.Event,
    ) -> None:
        self.sessions = sessions
        self.api = api
        self.env = env
        self.stopping = stopping

    def page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            token = request.cookies.get(SESSION_COOKIE, "")
            principal = await self.sessions.check(token) if token else None
            if principal is None:
                return self.signed_out(request)
            view = View(
                request,
                principal,
                token,
                self.sessions.csrf_token(token),
                self.api(token),
                self.env,
                self.stopping,
            )
            if principal.system:
                view.chosen_project = request.cookies.get(PROJECT_COOKIE, "")
            if request.method == "POST":
                view.form = await read_form(request)
                if not self.sessions.csrf_ok(token, view.form.get("csrf", "")):
                    return self.error(
                        view,
                        403,
                        "This form has no valid CSRF token. Reload the page and try again.",
                    )
            try:
                if principal.system and request.method == "GET" and not is_fragment(request):
                    listed = await view.call(
                        view.api.projects.ListProjects,
                        project_pb2.ListProjectsRequest(page_size=1000),
                    )
                    view.projects = [p.name.rsplit("/", 1)[-1] for p in listed.projects]
                return await handler(view)
            except grpc.aio.AioRpcError as error:
                return self.rpc_error(view, error)

        return endpoint

    def signed_out(self, request: Request) -> Response:
        if request.method == "GET" and not is_fragment(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/ui/sign-in?next={quote(target)}", status_code=303)
        html = self.env.get_template("error.html").render(
            view=None, status=401, message="You are signed out. Sign in again.", notice=""
        )
        return HTMLResponse(html, status_code=401, headers=PAGE_HEADERS)

    def rpc_error(self, view: View, error: grpc.aio.AioRpcError) -> Response:
        code = error.code().value[0]
        if code == code_pb2.UNAUTHENTICATED:
            return self.signed_out(view.request)
        return self.error(view, HTTP_STATUS.get(code, 500), error.details() or error.code().name)

    def error(self, view: View, status: int, message: str) -> Response:
        return view.render("error.html", status=status, message=message)


def is_fragment(request: Request) -> bool:
    """A part of a page fetched by the page's script, or an event stream."""
    return (
        request.headers.get("x-fragment") is not None
        or "fragment" in request.query_params
        or request.url.path.startswith(("/ui/events", "/ui/commands/"))
    )


async def read_form(request: Request) -> ImmutableMultiDict[str, str]:
    """An urlencoded form body (the only kind the dashboard's forms send)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return ImmutableMultiDict()
    return ImmutableMultiDict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
