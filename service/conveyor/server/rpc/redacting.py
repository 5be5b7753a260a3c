"""Applies the redaction rule (domain/redaction.py) to what an RPC sends its caller.

The interceptor hands every response of a call whose caller does not see the full input
(a viewer key, or a dashboard session it opened) to `ResponseRedaction`: each Task and
TaskTemplate inside it, found by the response's descriptor, has the values at its
project's and queue's redact_paths replaced. A response with nothing to redact is sent
as it is; one with something is copied first, because a response may be shared (an
Event is rendered once for every stream that sends it). Everything that calls the gRPC
services inherits this: the REST gateway and its SSE, the dashboard, the seed APIs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from conveyor.server.domain.auth import Principal
from conveyor.server.domain.redaction import Redactions, Rule, sees_full_input

__all__ = ["ResponseRedaction"]

_TARGETS = frozenset({"conveyor.v1.Task", "conveyor.v1.TaskTemplate"})

# For each message type: the fields that hold a target (True) or lead to one (False,
# with the plan of the field's type). Computed once per type.
_Plan = tuple[tuple[FieldDescriptor, bool, "_Plan"], ...]
_PLANS: dict[str, _Plan] = {}


def _plan(descriptor: Descriptor | Any) -> _Plan:
    name = descriptor.full_name
    found = _PLANS.get(name)
    if found is not None:
        return found
    _PLANS[name] = ()  # a type that contains itself leads nowhere new
    steps: list[tuple[FieldDescriptor, bool, _Plan]] = []
    for field in descriptor.fields:
        inner = field.message_type
        if inner is None or inner.GetOptions().map_entry:
            continue
        if inner.full_name in _TARGETS:
            steps.append((field, True, ()))
        elif not inner.full_name.startswith("google."):
            nested = _plan(inner)
            if nested:
                steps.append((field, False, nested))
    plan = _PLANS[name] = tuple(steps)
    return plan


def _targets(message: Message, plan: _Plan) -> Iterator[Any]:
    for field, is_target, inner in plan:
        if field.is_repeated:
            items: Any = getattr(message, field.name)
        elif message.HasField(field.name):
            items = (getattr(message, field.name),)
        else:
            continue
        for item in items:
            if is_target:
                yield item
            else:
                yield from _targets(item, inner)


def _holds_targets(descriptor: Descriptor | Any) -> bool:
    return descriptor.full_name in _TARGETS or bool(_plan(descriptor))


def _all_targets(message: Message) -> Iterator[Any]:
    if message.DESCRIPTOR.full_name in _TARGETS:
        yield message
    else:
        yield from _targets(message, _plan(message.DESCRIPTOR))


def redacted(response: Message, rule: Rule) -> Message:
    """The response with its tasks' input redacted: itself when nothing is, else a copy."""
    if not any(rule.needs(t) for t in _all_targets(response)):
        return response
    copy = type(response)()
    copy.CopyFrom(response)
    for target in _all_targets(copy):
        rule.redact_task(target)
    return copy


class ResponseRedaction:
    """The interceptor's hook: a filter for one call's responses, or None."""

    def __init__(self, redactions: Redactions) -> None:
        self._redactions = redactions

    def for_caller(self, principal: Principal) -> Callable[[Message], Awaitable[Message]] | None:
        """None when the caller reads the full input (most calls: nothing to do)."""
        if sees_full_input(principal):
            return None
        # A key below operator belongs to one project, the only one it may read.
        project = principal.project

        async def apply(response: Message) -> Message:
            if not _holds_targets(response.DESCRIPTOR):
                return response
            rule = await self._redactions.rule(project)
            return response if rule.empty else redacted(response, rule)

        return apply
