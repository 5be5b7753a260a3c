"""Typed errors raised by the client.

    ConveyorError (also a grpc.RpcError, so code() and details() work as usual)
    ├── InvalidArgumentError   field_violations lists each bad field
    ├── NotFoundError
    ├── AlreadyExistsError
    ├── FailedPreconditionError
    ├── UnauthenticatedError
    ├── PermissionDeniedError
    ├── ResourceExhaustedError  retry_after is set when the server said when (reason
    │                           REQUEST_LIMITED: the key's request limit; see _calls.py)
    ├── UnimplementedError
    └── UnavailableError        after the client's own retries gave up

Every error carries `reason` and `metadata` from the server's ErrorInfo.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

REQUEST_LIMITED = "REQUEST_LIMITED"
"""The reason of a call refused by the key's request limits (RateLimits), before the
server acted on it; its RetryInfo says when the key's bucket holds a call again."""


class ConveyorError(grpc.RpcError):
    def __init__(
        self, code: grpc.StatusCode, message: str, status: status_pb2.Status | None = None
    ) -> None:
        super().__init__(message)
        self._code = code
        self.message = message
        self.reason = ""
        self.metadata: dict[str, str] = {}
        self.field_violations: list[tuple[str, str]] = []
        self.precondition_violations: list[tuple[str, str, str]] = []
        self.retry_after: timedelta | None = None
        for detail in status.details if status is not None else ():
            if detail.TypeName() == error_details_pb2.ErrorInfo.DESCRIPTOR.full_name:
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                self.reason, self.metadata = info.reason, dict(info.metadata)
            elif detail.TypeName() == error_details_pb2.BadRequest.DESCRIPTOR.full_name:
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                self.field_violations = [(v.field, v.description) for v in bad.field_violations]
            elif detail.TypeName() == error_details_pb2.PreconditionFailure.DESCRIPTOR.full_name:
                failure = error_details_pb2.PreconditionFailure()
                detail.Unpack(failure)
                self.precondition_violations = [
                    (v.type, v.subject, v.description) for v in failure.violations
                ]
            elif detail.TypeName() == error_details_pb2.RetryInfo.DESCRIPTOR.full_name:
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                self.retry_after = retry.retry_delay.ToTimedelta()

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self.message

    def __str__(self) -> str:
        reason = f" [{self.reason}]" if self.reason else ""
        return f"{self._code.name}{reason}: {self.message}"


class InvalidArgumentError(ConveyorError):
    pass


class NotFoundError(ConveyorError):
    pass


class AlreadyExistsError(ConveyorError):
    pass


class FailedPreconditionError(ConveyorError):
    pass


class UnauthenticatedError(ConveyorError):
    pass


class PermissionDeniedError(ConveyorError):
    pass


class ResourceExhaustedError(ConveyorError):
    pass


class UnimplementedError(ConveyorError):
    pass


class UnavailableError(ConveyorError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[ConveyorError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
}


def from_rpc_error(error: grpc.RpcError) -> ConveyorError:
    """The typed error for a grpc error (a grpc.Call, sync or aio)."""
    if isinstance(error, ConveyorError):
        return error
    code: grpc.StatusCode = error.code()
    message: str = error.details() or ""
    return _BY_CODE.get(code, ConveyorError)(code, message, _status_of(error))


def _status_of(error: grpc.RpcError) -> status_pb2.Status | None:
    # Read the details trailer directly: rpc_status.from_call only knows sync calls.
    try:
        trailers: Any = error.trailing_metadata() or ()
    except AttributeError:
        return None
    for key, value in trailers:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None
