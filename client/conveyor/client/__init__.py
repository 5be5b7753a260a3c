"""Conveyor client: typed sync and async clients, and the worker SDK.

Enqueue and read back:

    from conveyor.client import Client

    with Client() as client:          # the local server and its admin key
        task = client.create_task("email.send", {"to": "ada@example.com"})
        client.get_task(task.name).state

Run handlers (see `Worker`; `conveyor worker --import tasks` runs the `@task` ones):

    from conveyor.client import task

    @task("email.send")
    def send(ctx):
        return {"sent_to": ctx.input["to"]}

Errors:

    ConveyorError (also a grpc.RpcError)   raised by every client call; see errors
    PermanentError                         raise from a handler to fail without retry
    TaskCancelled                          raised by TaskContext.raise_if_cancelled()
"""

from conveyor.client._async_client import AsyncClient
from conveyor.client._client import Client
from conveyor.client._context import PermanentError, TaskCancelled, TaskContext
from conveyor.client._local import default_data_dir
from conveyor.client._registry import task
from conveyor.client._requests import TaskCriteria, TaskOptions, TaskSpec
from conveyor.client._worker import Worker
from conveyor.client.errors import (
    AlreadyExistsError,
    ConveyorError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
)

__all__ = [
    "AlreadyExistsError",
    "AsyncClient",
    "Client",
    "ConveyorError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermanentError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "TaskCancelled",
    "TaskContext",
    "TaskCriteria",
    "TaskOptions",
    "TaskSpec",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "Worker",
    "default_data_dir",
    "task",
]
