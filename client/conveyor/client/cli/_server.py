"""`conveyor serve`, `migrate`, `admin-key`, `health` and `version`.

Only `serve`, `migrate` and `admin-key` import conveyor.server, inside the command, so
the client's install (without the server extra) runs every other command.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click
import grpc

from conveyor.client.cli._output import Output, note
from conveyor.client.cli._session import session

_PASSTHROUGH = {
    "ignore_unknown_options": True,
    "allow_extra_args": True,
    "help_option_names": [],
}


def _server_entry(name: str) -> Callable[[Sequence[str]], int]:
    try:
        if name == "serve":
            from conveyor.server.__main__ import main as serve_main

            return lambda argv: serve_main(argv, prog="conveyor serve")
        if name == "migrate":
            from conveyor.server.migrate_cli import main as migrate_main

            return migrate_main
        from conveyor.server.admin_key import main as admin_key_main

        return admin_key_main
    except ImportError as error:
        raise click.ClickException(
            f"conveyor {name} needs the server: pip install 'conveyor[server]' ({error})"
        ) from None


def _forward(name: str, args: Sequence[str]) -> int:
    argv = list(args)
    data_dir = session().data_dir
    if data_dir and "--data-dir" not in argv and not any(a.startswith("--data-dir=") for a in argv):
        argv = ["--data-dir", data_dir, *argv]
    code = _server_entry(name)(argv)
    return int(code or 0)


@click.command(context_settings=_PASSTHROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def serve(args: tuple[str, ...]) -> None:
    """Run the server (`conveyor serve --help` lists its flags)."""
    raise click.exceptions.Exit(_forward("serve", args))


@click.command(context_settings=_PASSTHROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def migrate(args: tuple[str, ...]) -> None:
    """Apply database migrations and exit."""
    raise click.exceptions.Exit(_forward("migrate", args))


@click.group(name="admin-key")
def admin_key() -> None:
    """The bootstrap admin key (needs direct database access)."""


@admin_key.command(name="reset", context_settings=_PASSTHROUGH, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def admin_key_reset(args: tuple[str, ...]) -> None:
    """Revoke the bootstrap admin key and write a new one (`--help` for its flags)."""
    raise click.exceptions.Exit(_forward("admin-key", ["reset", *args]))


@click.command()
@click.option("--timeout", type=float, default=5.0, show_default=True)
def health(timeout: float) -> None:
    """Exit 0 when the server's gRPC health check says SERVING (needs no key)."""
    try:
        from grpc_health.v1 import health_pb2, health_pb2_grpc
    except ImportError:
        raise click.ClickException(
            "conveyor health needs grpcio-health-checking (in the server extra)"
        ) from None
    target = session().resolve_target()
    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError as error:
            note(f"{target}: {error.code().name}")
            raise click.exceptions.Exit(1) from None
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    Output().one({"target": target, "status": status})
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        raise click.exceptions.Exit(1)


@click.command()
def version() -> None:
    """The version of this client (and of Python and gRPC)."""
    try:
        mine = importlib.metadata.version("conveyor")
    except importlib.metadata.PackageNotFoundError:
        mine = "unknown"
    data: dict[str, Any] = {
        "conveyor": mine,
        "python": sys.version.split()[0],
        "grpcio": grpc.__version__,
    }
    Output().one(data)


for _passthrough in (serve, migrate, admin_key_reset):
    _passthrough.passthrough = True  # type: ignore[attr-defined]

COMMANDS = [serve, migrate, admin_key, health, version]
