"""The `conveyor` command: run the server, and talk to one.

conveyor serve                      # embedded PostgreSQL, 127.0.0.1:50051 / :8080
conveyor migrate --database-url URL
conveyor projects create acme
conveyor keys create projects/acme --role operator
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
from google.protobuf import json_format

from conveyor.client._client import Client
from conveyor.client._local import resolve
from conveyor.client.errors import ConveyorError
from conveyor.v1 import enums_pb2

_ROLES = {
    "viewer": enums_pb2.ROLE_VIEWER,
    "worker": enums_pb2.ROLE_WORKER,
    "operator": enums_pb2.ROLE_OPERATOR,
    "admin": enums_pb2.ROLE_ADMIN,
}


def _server_main(name: str) -> object:
    try:
        if name == "serve":
            from conveyor.server.__main__ import main as serve_main

            return serve_main
        from conveyor.server.migrate_cli import main as migrate_main

        return migrate_main
    except ImportError as error:
        sys.exit(
            f"conveyor {name} needs the server extra: pip install 'conveyor[server]' ({error})"
        )


def _client(args: argparse.Namespace) -> Client:
    return Client(args.target, api_key=args.api_key, data_dir=args.data_dir)


def _print(message: object) -> None:
    print(json_format.MessageToJson(message, preserving_proto_field_name=True))  # type: ignore[arg-type]


def _health(args: argparse.Namespace) -> int:
    # Needs no key: health checking is open, as load balancers and Docker expect.
    try:
        from grpc_health.v1 import health_pb2, health_pb2_grpc
    except ImportError:
        sys.exit("conveyor health needs grpcio-health-checking (in the server extra)")

    target, _ = resolve(args.target, None, args.data_dir)
    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.RpcError as error:
            print(f"{target}: {error.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{target}: {status}")
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("serve", "migrate"):
        entry = _server_main(argv[0])
        return int(entry(argv[1:]) or 0)  # type: ignore[operator]

    parser = argparse.ArgumentParser(prog="conveyor", description="Conveyor task queue.")
    parser.add_argument(
        "--target", help="gRPC host:port [CONVEYOR_TARGET; default: the local server]"
    )
    parser.add_argument(
        "--api-key", help="API key [CONVEYOR_API_KEY; default: the local admin.key]"
    )
    parser.add_argument("--data-dir", help="the local server's data directory [CONVEYOR_DATA_DIR]")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="run the server (see `conveyor serve --help`)")
    commands.add_parser("migrate", help="apply database migrations and exit")
    commands.add_parser("health", help="exit 0 when the server's gRPC health check says SERVING")
    projects = commands.add_parser("projects", help="list or create projects").add_subparsers(
        dest="action", required=True
    )
    projects.add_parser("list")
    create = projects.add_parser("create")
    create.add_argument("project_id")
    create.add_argument("--display-name", default="")
    keys = commands.add_parser("keys", help="create an API key").add_subparsers(
        dest="action", required=True
    )
    key_create = keys.add_parser("create")
    key_create.add_argument("parent", help="projects/{project}")
    key_create.add_argument("--role", choices=sorted(_ROLES), required=True)
    key_create.add_argument("--display-name", default="")
    args = parser.parse_args(argv)

    if args.command == "health":
        return _health(args)
    try:
        with _client(args) as client:
            if args.command == "projects" and args.action == "list":
                for project in client.list_projects():
                    _print(project)
            elif args.command == "projects":
                _print(client.create_project(args.project_id, display_name=args.display_name))
            elif args.command == "keys":
                _print(
                    client.create_api_key(
                        args.parent, _ROLES[args.role], display_name=args.display_name
                    )
                )
    except ConveyorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
