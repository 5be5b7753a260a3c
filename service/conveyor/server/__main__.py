"""`python -m conveyor.server`: run one server until SIGTERM.

python -m conveyor.server --data-dir ./data --grpc-address 127.0.0.1:0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from conveyor.server.app import run_server
from conveyor.server.datadir import DataDirInUse
from conveyor.server.processes import process_count, run_processes
from conveyor.server.services import default_hooks
from conveyor.server.settings import LOG_LEVELS, Settings

__all__ = ["build_parser", "main", "settings_from_args"]


def build_parser(prog: str = "python -m conveyor.server") -> argparse.ArgumentParser:
    """The serve flags; each overrides its environment variable when given."""
    parser = argparse.ArgumentParser(prog=prog, description="Run a Conveyor server.")
    parser.add_argument("--data-dir", type=Path, help="state directory [CONVEYOR_DATA_DIR]")
    parser.add_argument(
        "--grpc-address", help="gRPC host:port, port 0 for any [CONVEYOR_GRPC_ADDRESS]"
    )
    parser.add_argument(
        "--http-address", help="HTTP host:port, port 0 for any [CONVEYOR_HTTP_ADDRESS]"
    )
    parser.add_argument(
        "--database-url", help="PostgreSQL URL; embedded PostgreSQL if unset [DATABASE_URL]"
    )
    parser.add_argument(
        "--listen-database-url",
        help="PostgreSQL URL of the one LISTEN connection; --database-url if unset. Behind "
        "a transaction-mode pooler, point it at PostgreSQL directly "
        "[CONVEYOR_LISTEN_DATABASE_URL]",
    )
    parser.add_argument(
        "--database-prepare",
        choices=("on", "off"),
        type=str.lower,
        help="server-side prepared statements; off for poolers that cannot track them, "
        "like PgBouncer before 1.21 in transaction mode [CONVEYOR_DATABASE_PREPARE, "
        "default on]",
    )
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, type=str.lower, help="[CONVEYOR_LOG_LEVEL]"
    )
    parser.add_argument(
        "--processes",
        default="1",
        help="server processes sharing the ports (SO_REUSEPORT): a count, or auto for "
        "one per core [default 1]",
    )
    parser.add_argument(
        "--compat-anonymous",
        metavar="ROLE",
        help="let keyless requests to the seed APIs (/api/...) from loopback addresses "
        "act with this role (viewer, worker, operator, admin) in the default project; "
        "off by default [CONVEYOR_COMPAT_ANONYMOUS]",
    )
    # Set by the supervisor of --processes on the processes it starts.
    parser.add_argument("--process-slot", type=int, help=argparse.SUPPRESS)
    return parser


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """Settings from parsed flags over `environ` (raises ValueError when invalid)."""
    return Settings.from_env(
        environ,
        data_dir=args.data_dir,
        grpc_address=args.grpc_address,
        http_address=args.http_address,
        database_url=args.database_url,
        listen_database_url=args.listen_database_url,
        database_prepare=None if args.database_prepare is None else args.database_prepare == "on",
        log_level=args.log_level,
        process_slot=args.process_slot,
        compat_anonymous=args.compat_anonymous,
    )


def main(argv: Sequence[str] | None = None, prog: str = "python -m conveyor.server") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args, os.environ)
        count = process_count(args.processes)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        if count > 1 and settings.process_slot is None:
            return run_processes(settings, count, os.environ)
        hooks = default_hooks()
        asyncio.run(
            run_server(
                settings,
                register=hooks.register,
                interceptors=hooks.interceptors,
                bootstrap=hooks.bootstrap,
            )
        )
    except DataDirInUse as refused:
        print(f"conveyor serve: {refused}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
