"""Domain errors: the one vocabulary every layer raises and the RPC boundary maps.

    ConveyorError
    ├── InvalidArgument        bad input; carries field violations
    ├── NotFound
    ├── AlreadyExists
    ├── FailedPrecondition     the resource is not in a state that allows it
    ├── Unauthenticated
    ├── PermissionDenied
    ├── ResourceExhausted      rate limits, overflow; may carry retry_after
    ├── Unimplemented          a contract method whose behaviour is not built yet
    ├── Unavailable            the database is unreachable or the replica is stopping;
    │                          carries retry_after (a client should retry)
    └── Internal

Each carries an UPPER_SNAKE `reason` (the ErrorInfo reason, domain conveyor.dev)
and string `metadata`; the RPC layer turns them into google.rpc.Status details.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

DOMAIN = "conveyor.dev"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: its dotted path in the request and what is wrong with it."""

    field: str
    description: str


@dataclass(frozen=True)
class PreconditionViolation:
    """One failed precondition (google.rpc.PreconditionFailure.Violation)."""

    type: str
    subject: str
    description: str


@dataclass
class ConveyorError(Exception):
    """Base of every error the service raises on purpose."""

    message: str
    reason: str = "ERROR"
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


@dataclass
class InvalidArgument(ConveyorError):
    reason: str = "INVALID_ARGUMENT"
    violations: list[FieldViolation] = field(default_factory=list)

    @classmethod
    def of(cls, field_path: str, description: str) -> InvalidArgument:
        return cls(
            f"{field_path}: {description}", violations=[FieldViolation(field_path, description)]
        )


@dataclass
class NotFound(ConveyorError):
    reason: str = "NOT_FOUND"


@dataclass
class AlreadyExists(ConveyorError):
    reason: str = "ALREADY_EXISTS"


@dataclass
class FailedPrecondition(ConveyorError):
    reason: str = "FAILED_PRECONDITION"
    violations: list[PreconditionViolation] = field(default_factory=list)


@dataclass
class Unauthenticated(ConveyorError):
    reason: str = "UNAUTHENTICATED"


@dataclass
class PermissionDenied(ConveyorError):
    reason: str = "PERMISSION_DENIED"


@dataclass
class ResourceExhausted(ConveyorError):
    reason: str = "RESOURCE_EXHAUSTED"
    retry_after: timedelta | None = None


@dataclass
class Unimplemented(ConveyorError):
    reason: str = "NOT_IMPLEMENTED"


@dataclass
class Unavailable(ConveyorError):
    reason: str = "UNAVAILABLE"
    retry_after: timedelta | None = None


@dataclass
class Internal(ConveyorError):
    reason: str = "INTERNAL"


class Violations:
    """Collects field violations so a request reports every bad field at once."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field_path: str, description: str) -> None:
        self.items.append(FieldViolation(field_path, description))

    def raise_if_any(self) -> None:
        if self.items:
            first = self.items[0]
            more = f" (and {len(self.items) - 1} more)" if len(self.items) > 1 else ""
            raise InvalidArgument(
                f"{first.field}: {first.description}{more}", violations=self.items
            )
