"""The `conveyor` command: run the server, and talk to one.

conveyor serve                      # embedded PostgreSQL, 127.0.0.1:50051 / :8080
conveyor migrate --database-url URL
conveyor projects create acme
conveyor keys create projects/acme --role operator
conveyor tasks create email.send --input '{"to": "ada@example.com"}' [--queue emails]
conveyor tasks get ID [--wait] | list [--state running] [--queue q] [--kind k] | cancel ID
conveyor worker --import tasks [--queues default,emails] [--concurrency 4]

`conveyor worker` imports each --import module (a name importable from the current
directory, or a path to a .py file) and runs a Worker with the handlers those modules
registered with `@conveyor.client.task("kind")`. SIGTERM or Ctrl-C stops it
gracefully: no new tasks, running handlers get --grace seconds to finish and report.
Task and worker commands act in --project (CONVEYOR_PROJECT, default `default`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from conveyor.client._client import Client
from conveyor.client._local import resolve
from conveyor.client._registry import registered
from conveyor.client._worker import Worker
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
    return Client(
        args.target,
        api_key=args.api_key,
        data_dir=args.data_dir,
        project=getattr(args, "project", None),
    )


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


def _project_option() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--project", help="[CONVEYOR_PROJECT; default: default]")
    return parent


def _add_task_commands(commands: Any) -> None:
    project = _project_option()
    tasks = commands.add_parser("tasks", help="create, read, list or cancel tasks")
    actions = tasks.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", parents=[project], help="enqueue a task")
    create.add_argument("kind")
    create.add_argument("--input", default=None, help="the input, as JSON")
    create.add_argument("--queue", default=None)
    create.add_argument("--priority", type=int, default=None, help="1 (highest) .. 9")
    create.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    create.add_argument("--request-id", default=None, help="dedupes retried creates")
    get = actions.add_parser("get", parents=[project], help="show a task")
    get.add_argument("name", help="projects/P/tasks/ID or ID")
    get.add_argument(
        "--wait",
        type=float,
        nargs="?",
        const=60.0,
        default=None,
        metavar="SECONDS",
        help="wait until the task is terminal (default 60 s)",
    )
    listing = actions.add_parser("list", parents=[project], help="list tasks, oldest first")
    listing.add_argument("--state", action="append", default=[], help="e.g. running; repeatable")
    listing.add_argument("--queue", action="append", default=[], help="repeatable")
    listing.add_argument("--kind", action="append", default=[], help="repeatable")
    listing.add_argument("--order-by", default="", help="create_time [desc] or priority [desc]")
    listing.add_argument("--limit", type=int, default=100, help="at most this many (0: all)")
    cancel = actions.add_parser("cancel", parents=[project], help="cancel a task")
    cancel.add_argument("name", help="projects/P/tasks/ID or ID")
    cancel.add_argument("--reason", default="")


def _tasks(client: Client, args: argparse.Namespace) -> None:
    if args.action == "create":
        options: dict[str, Any] = {}
        if args.queue is not None:
            options["queue"] = args.queue
        if args.priority is not None:
            options["priority"] = args.priority
        if args.label:
            options["labels"] = dict(_label(item) for item in args.label)
        _print(
            client.create_task(
                args.kind, _json_input(args.input), request_id=args.request_id, **options
            )
        )
    elif args.action == "get" and args.wait is not None:
        _print(client.wait_for_task(args.name, timeout=args.wait))
    elif args.action == "get":
        _print(client.get_task(args.name))
    elif args.action == "list":
        tasks = client.list_tasks(
            states=args.state,
            queues=args.queue,
            kinds=args.kind,
            order_by=args.order_by,
            page_size=min(args.limit, 1000) if args.limit > 0 else 1000,
        )
        for count, task in enumerate(tasks, start=1):
            _print(task)
            if count == args.limit:
                break
    elif args.action == "cancel":
        _print(client.cancel_task(args.name, args.reason))


def _json_input(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        sys.exit(f"error: --input is not JSON: {error}")


def _label(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep:
        sys.exit(f"error: --label takes KEY=VALUE, not {item!r}")
    return key, value


def _add_worker_command(commands: Any) -> None:
    worker = commands.add_parser(
        "worker",
        parents=[_project_option()],
        help="run the @task handlers of some modules",
        description="Import modules that register handlers with @conveyor.client.task and "
        "run them until SIGTERM or Ctrl-C.",
    )
    worker.add_argument(
        "--import",
        dest="imports",
        action="append",
        required=True,
        metavar="MODULE",
        help="a module name or a .py path; repeatable",
    )
    worker.add_argument("--queues", default="default", help="comma-separated (default: default)")
    worker.add_argument("--concurrency", type=int, default=1, help="handlers at once")
    worker.add_argument("--worker-id", default=None, help="default: <hostname>-<pid>")
    worker.add_argument(
        "--grace", type=float, default=30.0, help="seconds running handlers get on stop"
    )


def _import(module: str) -> None:
    if module.endswith(".py"):
        path = Path(module).resolve()
        sys.path.insert(0, str(path.parent))
        module = path.stem
    importlib.import_module(module)


def _worker(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # As `python -m` would: modules next to the caller are importable by name.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in args.imports:
        _import(module)
    if not registered.kinds():
        sys.exit(f"error: {', '.join(args.imports)} registered no @task handlers")
    client = _client(args)
    worker = Worker(
        client,
        queues=[q.strip() for q in args.queues.split(",") if q.strip()],
        concurrency=args.concurrency,
        worker_id=args.worker_id,
        shutdown_grace=args.grace,
    )
    logging.getLogger("conveyor.worker").info(
        "worker %s on %s: queues %s, kinds %s",
        worker.name,
        client.target,
        ",".join(worker.queues),
        ",".join(registered.kinds()),
    )
    try:
        worker.run()
    except ConveyorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


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
    _add_task_commands(commands)
    _add_worker_command(commands)
    args = parser.parse_args(argv)

    if args.command == "health":
        return _health(args)
    if args.command == "worker":
        return _worker(args)
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
            elif args.command == "tasks":
                _tasks(client, args)
    except ConveyorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, TimeoutError) as error:
        # Bad values for the typed methods (a state name, a non-JSON input...), --wait.
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
