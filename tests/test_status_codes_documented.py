"""Every status code a servicer can raise for an RPC is named in that RPC's proto comment.

What this checks, exactly: for each contract method it finds the servicer method that
serves it (the first of the service's servicer classes that defines it, as the registry
does) and walks the source of what that method calls, statically:

- calls it follows: a function by name (module-level, or imported into the module),
  `module.function(...)`, `self.method(...)`, `self._attr.method(...)` where `_attr`
  is set in `__init__` from a parameter annotated with a class (or is constructed
  there), and `Class.method(...)`; only code under conveyor.server is followed;
- what counts as raising a code: making an error, raised or not (errors travel as
  values too: a batch's per-item outcome, a settled report raised by its caller):
  `E(...)`, `E.of(...)`, `raise E`, and `f(...)` where E is a conveyor.server.errors
  class or f is annotated to return one; `.raise_if_any()` (INVALID_ARGUMENT); and
  `grpc.StatusCode.X` or `code_pb2.X` written in reached code (aborts, stream ends);
- what it does not see: calls through local variables, callbacks and lambdas; an
  error caught on the way up still counts (so the comment may name a code that a
  caller turns into something else, never the reverse).

Codes every method shares because the interceptor raises them (UNAUTHENTICATED,
PERMISSION_DENIED, UNAVAILABLE, INVALID_ARGUMENT for an undecodable request) are not
required in each comment, nor OK, INTERNAL, UNKNOWN, CANCELLED and DEADLINE_EXCEEDED.
A code the walk finds but the method cannot return is listed in NOT_RETURNED with the
reason, and must still be found (so the entry goes when the code changes).
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from google.rpc import code_pb2

from conveyor.server import errors
from conveyor.server.rpc.commands import CommandServicer
from conveyor.server.rpc.events import EventServicer
from conveyor.server.rpc.export import ExportServicer
from conveyor.server.rpc.projects import ProjectServicer
from conveyor.server.rpc.queues import QueueServicer
from conveyor.server.rpc.rules import SERVICES
from conveyor.server.rpc.schedules import ScheduleServicer
from conveyor.server.rpc.status import _CODES
from conveyor.server.rpc.task_logs import TaskLogServicer
from conveyor.server.rpc.tasks import TaskServicer
from conveyor.server.rpc.workers import WorkerServicer

PROTOS = Path(__file__).resolve().parent.parent / "protos" / "conveyor" / "v1"

# Service -> its servicer classes, in the registry's order.
SERVICERS: dict[str, tuple[type, ...]] = {
    "conveyor.v1.TaskService": (TaskServicer, ExportServicer, TaskLogServicer),
    "conveyor.v1.QueueService": (QueueServicer,),
    "conveyor.v1.WorkerService": (WorkerServicer,),
    "conveyor.v1.ScheduleService": (ScheduleServicer,),
    "conveyor.v1.CommandService": (CommandServicer,),
    "conveyor.v1.EventService": (EventServicer,),
    "conveyor.v1.ProjectService": (ProjectServicer,),
}

CODES = frozenset(code_pb2.Code.keys())
NOT_REQUIRED = frozenset({"OK", "INTERNAL", "UNKNOWN", "CANCELLED", "DEADLINE_EXCEEDED"})

NOT_RETURNED: dict[tuple[str, str], str] = {
    ("conveyor.v1.WorkerService.LeaseTasks", "FAILED_PRECONDITION"): (
        "Leases.settle makes stale-lease errors for the reports it settles; LeaseTasks passes none"
    ),
}


def _error_code(cls: type) -> str | None:
    for error_cls, code in _CODES.items():
        if issubclass(cls, error_cls):
            return code_pb2.Code.Name(code)
    return None


def _ours(obj: object) -> bool:
    return getattr(obj, "__module__", "").startswith("conveyor.server")


@cache
def _tree(func: Callable[..., Any]) -> ast.AST | None:
    try:
        source = textwrap.dedent(inspect.getsource(func))
    except (OSError, TypeError):
        return None
    return ast.parse(source)


@cache
def _attribute_types(cls: type) -> dict[str, type]:
    """`self._x` -> class, from __init__: `self._x = param` (param annotated with a class)
    or `self._x = Class(...)`."""
    init = cls.__dict__.get("__init__")
    found: dict[str, type] = {}
    for base in reversed(cls.__mro__[1:]):
        if _ours(base):
            found.update(_attribute_types(base))
    if init is None or _tree(init) is None:
        return found
    try:
        hints = typing.get_type_hints(init)
    except Exception:
        hints = {}
    module_globals = vars(inspect.getmodule(init))
    for node in ast.walk(_tree(init)):  # type: ignore[arg-type]
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            if not (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
            ):
                continue
            value = node.value
            kind: object = None
            if isinstance(value, ast.Name):
                kind = hints.get(value.id)
            elif isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
                kind = module_globals.get(value.func.id)
            if isinstance(kind, type) and _ours(kind):
                found[target.attr] = kind
    return found


def _resolve(
    call: ast.Call, module: types.ModuleType, owner: type | None
) -> Callable[..., Any] | None:
    func = call.func
    scope = vars(module)
    if isinstance(func, ast.Name):
        target = scope.get(func.id)
        return target if inspect.isfunction(target) and _ours(target) else None
    if not isinstance(func, ast.Attribute):
        return None
    base = func.value
    holder: object = None
    if isinstance(base, ast.Name) and base.id == "self" and owner is not None:
        holder = owner
    elif (
        isinstance(base, ast.Attribute)
        and isinstance(base.value, ast.Name)
        and base.value.id == "self"
        and owner is not None
    ):
        holder = _attribute_types(owner).get(base.attr)
    elif isinstance(base, ast.Name):
        holder = scope.get(base.id)
    if holder is None or not (inspect.ismodule(holder) or isinstance(holder, type)):
        return None
    target = inspect.getattr_static(holder, func.attr, None)
    if isinstance(target, staticmethod | classmethod):
        target = target.__func__
    return target if inspect.isfunction(target) and _ours(target) else None


def _owner(func: Callable[..., Any]) -> type | None:
    module = inspect.getmodule(func)
    qualname = func.__qualname__.split(".")
    if len(qualname) < 2 or module is None:
        return None
    owner = vars(module).get(qualname[-2])
    return owner if isinstance(owner, type) else None


def _made_class(node: ast.expr, module: types.ModuleType) -> type | None:
    """The errors class an expression makes (E(...), E.of(...), a function annotated to
    return one) or names (raise E), when it can tell."""
    scope = vars(module)
    if isinstance(node, ast.Call):
        node_func = node.func
        if isinstance(node_func, ast.Attribute) and node_func.attr == "of":
            node = node_func.value
        else:
            callee = _resolve(node, module, None)
            if callee is not None:
                try:
                    returned = typing.get_type_hints(callee).get("return")
                except Exception:
                    return None
                ok = isinstance(returned, type) and issubclass(returned, errors.ConveyorError)
                return returned if ok else None
            node = node_func
    obj: object = None
    if isinstance(node, ast.Name):
        obj = scope.get(node.id)
    elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        holder = scope.get(node.value.id)
        obj = getattr(holder, node.attr, None) if inspect.ismodule(holder) else None
    if isinstance(obj, type) and issubclass(obj, errors.ConveyorError):
        return obj
    return None


def _direct_codes(func: Callable[..., Any]) -> tuple[set[str], list[Callable[..., Any]]]:
    tree = _tree(func)
    module = inspect.getmodule(func)
    if tree is None or module is None:
        return set(), []
    owner = _owner(func)
    codes: set[str] = set()
    callees: list[Callable[..., Any]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise | ast.Call):
            made = node.exc if isinstance(node, ast.Raise) else node
            cls = _made_class(made, module) if made is not None else None
            code = _error_code(cls) if cls is not None else None
            if code is not None:
                codes.add(code)
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Attribute) and node.func.attr == "raise_if_any":
                codes.add("INVALID_ARGUMENT")
            callee = _resolve(node, module, owner)
            if callee is not None:
                callees.append(callee)
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in CODES
            and isinstance(node.value, ast.Attribute | ast.Name)
            and ast.unparse(node.value) in {"grpc.StatusCode", "StatusCode", "code_pb2"}
        ):
            codes.add(node.attr)
    return codes, callees


def reachable_codes(func: Callable[..., Any]) -> set[str]:
    seen: set[Callable[..., Any]] = set()
    codes: set[str] = set()
    todo = [func]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        direct, callees = _direct_codes(current)
        codes |= direct
        todo.extend(callees)
    return codes


def _rpc_comments() -> dict[str, str]:
    """ "Service.Rpc" -> the comment lines right above `rpc Rpc(` in the protos."""
    comments: dict[str, str] = {}
    for path in PROTOS.glob("*.proto"):
        service = ""
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if match := re.match(r"service (\w+) \{", line):
                service = match.group(1)
            if match := re.match(r"\s*rpc (\w+)\(", line):
                above: list[str] = []
                j = i - 1
                while j >= 0 and lines[j].strip().startswith("//"):
                    above.insert(0, lines[j].strip()[2:])
                    j -= 1
                comments[f"conveyor.v1.{service}.{match.group(1)}"] = " ".join(above)
    return comments


def _methods() -> Iterator[tuple[str, Callable[..., Any]]]:
    for service in SERVICES:
        for method in service.methods:
            for servicer in SERVICERS[service.full_name]:
                if method.name in servicer.__dict__:
                    yield f"{service.full_name}.{method.name}", servicer.__dict__[method.name]
                    break


METHODS = dict(_methods())


def test_every_contract_method_has_a_servicer_method() -> None:
    assert set(METHODS) == {f"{s.full_name}.{m.name}" for s in SERVICES for m in s.methods}


@pytest.mark.parametrize("rpc", sorted(METHODS))
def test_the_rpc_comment_names_every_code_its_servicer_can_raise(rpc: str) -> None:
    comment = _rpc_comments()[rpc]
    named = set(re.findall(r"\b[A-Z][A-Z_]+[A-Z]\b", comment)) & CODES
    found = reachable_codes(METHODS[rpc])
    excused = {code for (method, code) in NOT_RETURNED if method == rpc}
    assert excused <= found, f"{rpc}: NOT_RETURNED lists {sorted(excused - found)}, no longer found"
    raised = found - NOT_REQUIRED - excused
    assert raised <= named, f"{rpc}: comment omits {sorted(raised - named)}: {comment!r}"


def test_the_analysis_sees_known_raises() -> None:
    # Guards the walker itself: codes known to be raised below these servicer methods.
    assert "RESOURCE_EXHAUSTED" in reachable_codes(METHODS["conveyor.v1.WorkerService.LeaseTasks"])
    assert "NOT_FOUND" in reachable_codes(METHODS["conveyor.v1.WorkerService.CompleteTask"])
    assert "NOT_FOUND" in reachable_codes(METHODS["conveyor.v1.QueueService.PauseQueue"])
    assert "INVALID_ARGUMENT" in reachable_codes(METHODS["conveyor.v1.QueueService.UpdateQueue"])
