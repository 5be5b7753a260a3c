"""The REST routes, read from every contract method's google.api.http rule.

Nothing here names a method: a binding exists exactly when the contract has a rule
(or an additional binding) for it, so REST cannot drift from the protos.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from google.api import http_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from conveyor.server.gateway.descriptors import http_rule
from conveyor.server.gateway.templates import PathTemplate

__all__ = ["Binding", "MethodNotAllowed", "NoRoute", "Router", "bindings"]

_VERBS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class Binding:
    """One HTTP method + path template bound to one RPC."""

    method: MethodDescriptor
    http_method: str
    """Upper case: GET, POST, PATCH, PUT, DELETE (or a custom kind)."""
    template: PathTemplate
    body: str
    """"" (no body), "*" (the whole request) or the name of the request field it fills."""
    response_body: str
    """"" (the whole response) or the response field to answer with."""
    operation_id: str
    """`TaskService_CancelTask`; additional bindings get `_2`, `_3`, ..."""

    @property
    def rpc_path(self) -> str:
        """`/conveyor.v1.TaskService/CancelTask`, the gRPC method path."""
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def path_fields(self) -> tuple[str, ...]:
        return tuple(v.field_path for v in self.template.variables)


def _binding(method: MethodDescriptor, rule: http_pb2.HttpRule, operation_id: str) -> Binding:
    pattern = rule.WhichOneof("pattern")
    if pattern == "custom":
        http_method, path = rule.custom.kind.upper(), rule.custom.path
    elif pattern in _VERBS:
        http_method, path = pattern.upper(), getattr(rule, pattern)
    else:
        raise ValueError(f"{method.full_name}: an http rule without a pattern")
    return Binding(
        method=method,
        http_method=http_method,
        template=PathTemplate(path),
        body=rule.body,
        response_body=rule.response_body,
        operation_id=operation_id,
    )


def bindings(services: Iterable[ServiceDescriptor]) -> list[Binding]:
    """Every binding of every method of `services`, in contract order."""
    found: list[Binding] = []
    for service in services:
        for method in service.methods:
            rule = http_rule(method)
            if rule is None:
                continue
            base = f"{service.name}_{method.name}"
            found.append(_binding(method, rule, base))
            for index, extra in enumerate(rule.additional_bindings, start=2):
                found.append(_binding(method, extra, f"{base}_{index}"))
    return found


class NoRoute(LookupError):
    """No template matches the path (404)."""


class MethodNotAllowed(LookupError):
    """Templates match the path, but under other HTTP methods (405)."""

    def __init__(self, allowed: Sequence[str]) -> None:
        super().__init__(", ".join(allowed))
        self.allowed = list(allowed)


class Router:
    """Finds the binding of an HTTP method + raw path."""

    def __init__(self, table: Sequence[Binding]) -> None:
        self.bindings = list(table)
        # Literal-heavy templates first, so a more specific template wins should two
        # ever match the same path.
        self._ordered = sorted(
            self.bindings,
            key=lambda b: (-len(b.template.text.replace("*", "")), b.template.text),
        )

    def resolve(self, http_method: str, raw_path: str) -> tuple[Binding, dict[str, str]]:
        """The binding and its path field values; raises NoRoute or MethodNotAllowed."""
        allowed: list[str] = []
        for binding in self._ordered:
            values = binding.template.match(raw_path)
            if values is None:
                continue
            if binding.http_method == http_method:
                return binding, values
            if binding.http_method not in allowed:
                allowed.append(binding.http_method)
        if allowed:
            raise MethodNotAllowed(sorted(allowed))
        raise NoRoute(raw_path)

    def by_rpc(self, full_name: str) -> Binding | None:
        """The primary binding of a method (`conveyor.v1.QueueService.ResumeQueue`)."""
        return next((b for b in self.bindings if b.method.full_name == full_name), None)
