"""Domain errors to google.rpc.Status with details: the one place that mapping lives."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from conveyor.server import errors

_CODES: dict[type[errors.ConveyorError], int] = {
    errors.InvalidArgument: code_pb2.INVALID_ARGUMENT,
    errors.NotFound: code_pb2.NOT_FOUND,
    errors.AlreadyExists: code_pb2.ALREADY_EXISTS,
    errors.FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    errors.Unauthenticated: code_pb2.UNAUTHENTICATED,
    errors.PermissionDenied: code_pb2.PERMISSION_DENIED,
    errors.ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
    errors.Unimplemented: code_pb2.UNIMPLEMENTED,
    errors.Unavailable: code_pb2.UNAVAILABLE,
    errors.Internal: code_pb2.INTERNAL,
}


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_status_proto(error: errors.ConveyorError) -> status_pb2.Status:
    """The google.rpc.Status of a domain error: ErrorInfo always, plus the detail its class has."""
    code = next((c for cls, c in _CODES.items() if isinstance(error, cls)), code_pb2.UNKNOWN)
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=error.reason, domain=errors.DOMAIN, metadata=error.metadata
            )
        )
    ]
    if isinstance(error, errors.InvalidArgument) and error.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    if isinstance(error, errors.FailedPrecondition) and error.violations:
        details.append(
            _pack(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type=v.type, subject=v.subject, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    resource = _resource_info(error)
    if resource is not None:
        details.append(_pack(resource))
    if (
        isinstance(error, errors.ResourceExhausted | errors.Unavailable)
        and error.retry_after is not None
    ):
        delay = duration_pb2.Duration()
        delay.FromTimedelta(error.retry_after)
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=code, message=error.message, details=details)


# The collection of a resource name -> its google.api.resource type.
_TYPES = {
    "tasks": "conveyor.dev/Task",
    "queues": "conveyor.dev/Queue",
    "schedules": "conveyor.dev/Schedule",
    "commands": "conveyor.dev/Command",
    "workers": "conveyor.dev/Worker",
    "apiKeys": "conveyor.dev/ApiKey",
}


def _resource_info(error: errors.ConveyorError) -> error_details_pb2.ResourceInfo | None:
    """ResourceInfo for a NOT_FOUND or ALREADY_EXISTS that names its resource (a dedupe
    conflict names the task holding the key), so clients find it without parsing."""
    if not isinstance(error, errors.NotFound | errors.AlreadyExists):
        return None
    name = error.metadata.get("task") or error.metadata.get("resource") or ""
    parts = name.split("/")
    if len(parts) == 2 and parts[0] == "projects":
        kind = "conveyor.dev/Project"
    elif len(parts) == 4 and parts[0] == "projects" and parts[2] in _TYPES:
        kind = _TYPES[parts[2]]
    else:
        return None
    return error_details_pb2.ResourceInfo(
        resource_type=kind, resource_name=name, description=error.message
    )


def to_grpc_status(error: errors.ConveyorError) -> grpc.Status:
    return rpc_status.to_status(to_status_proto(error))
