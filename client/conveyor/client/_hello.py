"""How a Worker introduces itself: its Hello, with its default id and SDK version."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import TYPE_CHECKING

from conveyor.client import _requests as req
from conveyor.v1 import worker_pb2

if TYPE_CHECKING:
    from conveyor.client._worker import Worker


def sdk_version() -> str:
    try:
        return f"conveyor-python/{metadata.version('conveyor')}"
    except metadata.PackageNotFoundError:
        return "conveyor-python/0"


def default_worker_id() -> str:
    """`<hostname>-<pid>` as a worker id: 1..63 of [a-z0-9-]."""
    host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-") or "worker"
    suffix = f"-{os.getpid()}"
    return host[: 63 - len(suffix)].rstrip("-") + suffix


def hello(
    project: str,
    worker_id: str,
    queues: Sequence[str],
    capacity: int,
    labels: Mapping[str, str],
    lease_duration: req.Seconds | None,
    batches: bool = False,
) -> worker_pb2.ConnectRequest:
    message = worker_pb2.Hello(
        parent=project,
        worker=worker_id,
        queues=queues,
        capacity=capacity,
        labels=labels,
        sdk_version=sdk_version(),
        batches=batches,
    )
    if lease_duration is not None:
        message.lease_duration.CopyFrom(req.duration(lease_duration))
    return worker_pb2.ConnectRequest(hello=message)


def worker_hello(worker: Worker, batches: bool) -> worker_pb2.ConnectRequest:
    """The Hello of a Worker's next stream: who it is now (queues and concurrency change)."""
    return hello(
        worker.project,
        worker.worker_id,
        worker.queues,
        worker.concurrency,
        worker.labels,
        worker.lease_duration,
        batches,
    )
