"""`conveyor worker --import MODULE`: run the @task handlers of some modules.

It imports each --import module (a name importable from the current directory, or a
path to a .py file) and runs a Worker with the handlers those modules registered with
`@conveyor.client.task("kind")`. SIGTERM or Ctrl-C stops it gracefully: no new tasks,
running handlers get --grace seconds to finish and report. Each task's start and end
are logged at info (kind, id, duration, outcome), a failing handler's exception with
its traceback. With OTEL_* set as for the server (conveyor.client._tracing) and the
`tracing` extra installed, each handler runs in a span, exported as that says.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path

import click

from conveyor.client import _tracing
from conveyor.client._registry import registered
from conveyor.client._worker import Worker
from conveyor.client.cli._session import session

_LEVELS = ("debug", "info", "warning", "error")


def _import(module: str) -> None:
    if module.endswith(".py"):
        path = Path(module).resolve()
        sys.path.insert(0, str(path.parent))
        module = path.stem
    importlib.import_module(module)


@click.command()
@click.option(
    "--import",
    "imports",
    multiple=True,
    required=True,
    metavar="MODULE",
    help="a module name or a .py path; repeatable",
)
@click.option("--queues", default="default", show_default=True, help="comma-separated")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--worker-id", default=None, help="default: <hostname>-<pid>")
@click.option(
    "--grace", type=float, default=30.0, show_default=True, help="seconds handlers get on stop"
)
@click.option(
    "--log-level",
    type=click.Choice(_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
)
def worker(
    imports: tuple[str, ...],
    queues: str,
    concurrency: int,
    worker_id: str | None,
    grace: float,
    log_level: str,
) -> None:
    """Run the @task handlers of some modules until SIGTERM or Ctrl-C."""
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # As `python -m` would: modules next to the caller are importable by name.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in imports:
        _import(module)
    if not registered.kinds():
        raise click.UsageError(f"{', '.join(imports)} registered no @task handlers")
    try:
        tracer_provider = _tracing.provider_from_env(os.environ, "conveyor-worker")
    except (_tracing.TracingUnavailable, ValueError) as unusable:
        logging.getLogger("conveyor.worker").warning("tracing off: %s", unusable)
        tracer_provider = None
    if tracer_provider is not None:
        from opentelemetry import trace

        # Global: the handlers' own instrumented calls join the handler's span.
        trace.set_tracer_provider(tracer_provider)
    current = session()
    client = current.client()
    running = Worker(
        client,
        queues=[q.strip() for q in queues.split(",") if q.strip()],
        concurrency=concurrency,
        worker_id=worker_id,
        shutdown_grace=grace,
        project=current.resolve_project(),
        tracer_provider=tracer_provider,
    )
    logging.getLogger("conveyor.worker").info(
        "worker %s on %s: queues %s, kinds %s",
        running.name,
        client.target,
        ",".join(running.queues),
        ",".join(registered.kinds()),
    )
    try:
        running.run()
    finally:
        if tracer_provider is not None:
            tracer_provider.shutdown()  # flushes the spans still buffered


COMMANDS = [worker]
