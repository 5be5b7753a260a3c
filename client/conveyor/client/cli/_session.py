"""What one invocation talks to: the target, the key (and where it came from), the project.

Global options may come before or after the subcommand (`conveyor --project p tasks list`
and `conveyor tasks list --project p` are the same), so every command carries them and
their callbacks write here; a value given later on the command line wins. Environment
variables are read here, not by click, so that an option given before the subcommand is
not overridden by the environment default of the same option after it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from conveyor.client._client import Client
from conveyor.client._local import DEFAULT_GRPC_TARGET, default_data_dir, read_server_addresses

OUTPUTS = ("table", "wide", "json", "yaml", "name")


@dataclass
class Session:
    target: str | None = None
    data_dir: str | None = None
    project: str | None = None
    key: str | None = None
    output: str | None = None
    key_source: str = ""
    _client: Client | None = field(default=None, repr=False)
    _resolved_project: str | None = field(default=None, repr=False)

    # Where things come from.

    def directory(self) -> Path:
        return Path(self.data_dir) if self.data_dir else default_data_dir()

    def resolve_target(self) -> str:
        return (
            self.target
            or os.environ.get("CONVEYOR_TARGET")
            or read_server_addresses(self.directory()).get("grpc", DEFAULT_GRPC_TARGET)
        )

    def resolve_key(self) -> str:
        """The API key, remembering where it was found; a usage error naming every place."""
        if self.key:
            self.key_source = "--key"
            return self.key
        env = os.environ.get("CONVEYOR_API_KEY")
        if env:
            self.key_source = "CONVEYOR_API_KEY"
            return env
        path = self.directory() / "admin.key"
        try:
            text = path.read_text().strip()
        except OSError:
            text = ""
        if text:
            self.key_source = str(path)
            return text
        raise click.UsageError(
            "no API key: none given with --key, CONVEYOR_API_KEY is unset, and there is no "
            f"{path} (`conveyor serve` writes it there on first start; --data-dir or "
            "CONVEYOR_DATA_DIR point elsewhere). Pass one with --key KEY or CONVEYOR_API_KEY."
        )

    def client(self) -> Client:
        if self._client is None:
            key = self.resolve_key()
            self._client = Client(self.resolve_target(), api_key=key, project=self.project)
        return self._client

    def resolve_project(self) -> str:
        """--project, CONVEYOR_PROJECT, else the key's own project.

        A project key sees exactly one project (its own) in ListProjects; the bootstrap
        system key sees them all and belongs to `default`.
        """
        if self._resolved_project is None:
            chosen = self.project or os.environ.get("CONVEYOR_PROJECT")
            if not chosen:
                page = self.client().projects.ListProjects(_list_projects_request())
                own = [p.name for p in page.projects]
                single = len(own) == 1 and not page.next_page_token
                chosen = own[0] if single else "default"
            chosen = chosen.removeprefix("projects/")
            self._resolved_project = chosen
            self.client().project = chosen
        return self._resolved_project

    def parent(self) -> str:
        return f"projects/{self.resolve_project()}"

    def child(self, collection: str, name: str) -> str:
        """A full resource name from a full name or a short id under the project."""
        if name.startswith("projects/"):
            return name
        return f"{self.parent()}/{collection}/{name}"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _list_projects_request() -> Any:
    from conveyor.v1 import project_pb2

    return project_pb2.ListProjectsRequest(page_size=2)


def session() -> Session:
    """The invocation's Session (on the root context)."""
    ctx = click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, Session):
        root.obj = Session()
    return root.obj


def _store(name: str) -> Any:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None:
            return
        root = ctx.find_root()
        if not isinstance(root.obj, Session):
            root.obj = Session()
        setattr(root.obj, name, value)

    return callback


# (flags, attribute of Session, metavar or choices, help)
_GLOBALS: list[tuple[list[str], str, str | tuple[str, ...], str]] = [
    (
        ["--target"],
        "target",
        "HOST:PORT",
        "gRPC address [CONVEYOR_TARGET; default: the local server's server.json]",
    ),
    (["--data-dir"], "data_dir", "DIR", "the local server's data directory [CONVEYOR_DATA_DIR]"),
    (
        ["--project", "-p"],
        "project",
        "ID",
        "project [CONVEYOR_PROJECT; default: the key's own project]",
    ),
    (
        ["--key", "--api-key"],
        "key",
        "KEY",
        "API key [CONVEYOR_API_KEY; default: <data-dir>/admin.key]",
    ),
    (
        ["--output", "-o"],
        "output",
        OUTPUTS,
        "table (default on a terminal), wide, json (default otherwise), yaml, "
        "or name (resource names only, one a line, for scripts)",
    ),
]


def global_options() -> list[click.Parameter]:
    """Fresh copies of the global options, for one command."""
    options: list[click.Parameter] = []
    for flags, attribute, shape, text in _GLOBALS:
        if isinstance(shape, tuple):
            kind: dict[str, Any] = {"type": click.Choice(shape, case_sensitive=False)}
        else:
            kind = {"metavar": shape}
        options.append(
            click.Option(flags, expose_value=False, callback=_store(attribute), help=text, **kind)
        )
    return options


def install_global_options(command: click.Command) -> None:
    """Gives `command` and every subcommand the global options (before or after).

    Commands that pass their arguments on to another parser (serve, migrate) get none.
    """
    if not getattr(command, "passthrough", False):
        command.params.extend(global_options())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            install_global_options(sub)
