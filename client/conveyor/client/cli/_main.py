"""The root command: nouns, global options, and how a run ends (exit codes, errors).

Exit codes: 0 done; 1 the server refused (the error is on stderr); 2 bad input;
`tasks get --wait`: 3 FAILED, 4 CANCELLED, 5 INTERRUPTED, 124 still not done at the
timeout; 130 Ctrl-C; 141 the reader of stdout went away (`| head`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import click
import grpc

from conveyor.client.cli import (
    _audit,
    _events,
    _projects,
    _queues,
    _schedules,
    _server,
    _tasks,
    _worker,
    _workers,
)
from conveyor.client.cli._output import note
from conveyor.client.cli._session import Session, install_global_options, session
from conveyor.client.errors import ConveyorError, from_rpc_error

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141


class _PipeClosed(Exception):
    """stdout's reader went away; raised instead of BrokenPipeError, which click handles
    by exiting 1 after swapping sys.stdout for good."""


class ConveyorGroup(click.Group):
    """The root group: maps the errors of any command to a message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as error:
            raise _PipeClosed from error
        except ConveyorError as error:
            _report(error, session())
            raise click.exceptions.Exit(EXIT_ERROR) from None
        except grpc.RpcError as error:
            _report(from_rpc_error(error), session())
            raise click.exceptions.Exit(EXIT_ERROR) from None


def _report(error: ConveyorError, current: Session) -> None:
    note(f"error: {error}")
    for field, description in error.field_violations:
        note(f"  {field}: {description}")
    for kind, subject, description in error.precondition_violations:
        note(f"  {kind} {subject}: {description}")
    if error.code() == grpc.StatusCode.UNAUTHENTICATED:
        source = current.key_source or "nowhere"
        note(
            f"the API key came from {source} and the server did not accept it. Pass a "
            "valid key with --key KEY or CONVEYOR_API_KEY (the local server's admin key is "
            "<data-dir>/admin.key; `conveyor admin-key reset` replaces a lost one)."
        )
    elif error.code() == grpc.StatusCode.UNAVAILABLE:
        note(
            f"no server answered at {current.resolve_target()}: start one with "
            "`conveyor serve`, or point --target / CONVEYOR_TARGET at it."
        )


@click.group(
    cls=ConveyorGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Conveyor: a task queue, scheduler and audited command log.

    Global options (--target, --data-dir, --project, --key, -o) go before or after the
    subcommand. Without them the CLI talks to the local server (server.json and
    admin.key in the data directory) in the key's own project.
    """
    current = ctx.ensure_object(Session)
    ctx.call_on_close(current.close)


for _module in (
    _tasks,
    _queues,
    _workers,
    _schedules,
    _events,
    _audit,
    _projects,
    _server,
    _worker,
):
    for _command in _module.COMMANDS:
        cli.add_command(_command)

install_global_options(cli)


def _quiet_stdout() -> None:
    # Later writes and the interpreter's final flush go nowhere instead of raising.
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):
        os.dup2(devnull, sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI; returns the exit code (the console script exits with it)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args, prog_name="conveyor", standalone_mode=False)
        code = result if isinstance(result, int) else 0
        sys.stdout.flush()
    except click.exceptions.Exit as done:
        code = done.exit_code
    except SystemExit as exited:
        # The server's own argparse (serve, migrate, admin-key: --help, bad flags).
        code = exited.code if isinstance(exited.code, int) else (0 if exited.code is None else 1)
    except click.exceptions.Abort:
        code = EXIT_INTERRUPTED
    except click.ClickException as error:
        error.show()
        code = error.exit_code
    except KeyboardInterrupt:
        note("interrupted")
        code = EXIT_INTERRUPTED
    except (_PipeClosed, BrokenPipeError):
        _quiet_stdout()
        code = EXIT_PIPE
    return code


def entry() -> None:
    """The console script."""
    sys.exit(main())
