"""Conveyor client: typed sync and async clients over the v1 contract.

from conveyor.client import Client
with Client() as client:          # the local server and its admin key
    client.get_project("projects/default")
"""

from conveyor.client._client import AsyncClient, Client
from conveyor.client._local import default_data_dir
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
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "default_data_dir",
]
