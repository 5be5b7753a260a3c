"""AIP-134 update masks: the one implementation every Update method uses.

An Update changes the fields its `update_mask` names, nested ones included
(`task_template.priority`, `spec.expression`); `*` names every updatable field. Without
a mask it changes exactly the fields present in the request:

- over gRPC, the populated fields of the resource (`implied`): a set message field by
  its populated leaves, so `task_template {priority: 3}` changes the priority alone;
- over REST, the keys of the JSON body (`paths_from_json`): the gateway turns them into
  the mask before it forwards the call, because a key set to its zero value
  (`"max_concurrency": 0`, `"rate_limit": ""`) is present in JSON but not populated in
  the message.

Identifier and output-only fields are left out of an implied mask, so sending back a
resource as it was read changes only what the caller edited; a mask that names them, or
names a field that does not exist, is INVALID_ARGUMENT on `update_mask` and changes
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from google.api import field_behavior_pb2
from google.protobuf import field_mask_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from conveyor.server.errors import Violations

__all__ = ["WILDCARD", "Mask", "implied", "paths_from_json", "resolve"]

WILDCARD = "*"
# The googleapis stubs type the extension as a plain FieldDescriptor; it is an
# extension handle at run time.
_FIELD_BEHAVIOR: Any = field_behavior_pb2.field_behavior
_NOT_WRITABLE = frozenset({field_behavior_pb2.OUTPUT_ONLY, field_behavior_pb2.IDENTIFIER})


@dataclass(frozen=True)
class Mask:
    """The validated paths of one update, in canonical form (sorted, none covered by
    another)."""

    paths: tuple[str, ...]

    def __contains__(self, field: object) -> bool:
        """Whether the top-level `field` changes, wholly or in part."""
        return isinstance(field, str) and any(
            path == field or path.startswith(field + ".") for path in self.paths
        )

    @property
    def fields(self) -> tuple[str, ...]:
        """The top-level fields that change, in mask order."""
        return tuple(dict.fromkeys(path.split(".")[0] for path in self.paths))

    def merge(self, source: Message, target: Message) -> None:
        """Copies the masked fields of `source` onto `target`; a masked message or map
        field is replaced, not merged, so an empty value clears it."""
        field_mask_pb2.FieldMask(paths=self.paths).MergeMessage(
            source, target, replace_message_field=True, replace_repeated_field=True
        )


def resolve(
    mask: Iterable[str],
    resource: Message,
    updatable: Sequence[str],
    resource_field: str,
) -> Mask:
    """The mask of one update: `mask` when it names paths, else the populated fields of
    `resource`. `updatable` lists the top-level fields the method may change;
    `resource_field` is the request field holding the resource (for error paths)."""
    descriptor = cast(Descriptor, resource.DESCRIPTOR)
    explicit = [path.strip() for path in mask]
    v = Violations()
    if not explicit:
        paths = implied(resource)
        for path in paths:
            if path.split(".")[0] not in updatable:
                v.add(f"{resource_field}.{path}", "cannot be changed by this method")
    elif WILDCARD in explicit:
        if explicit != [WILDCARD]:
            v.add("update_mask", "* stands alone: it already names every updatable field")
        paths = list(updatable)
    else:
        paths = explicit
        for path in explicit:
            problem = _path_problem(descriptor, path, updatable)
            if problem:
                v.add("update_mask", f"{path!r} {problem}")
    v.raise_if_any()
    canonical = field_mask_pb2.FieldMask()
    canonical.CanonicalFormFromMask(field_mask_pb2.FieldMask(paths=paths))
    return Mask(tuple(canonical.paths))


def implied(resource: Message) -> list[str]:
    """The populated writable fields of `resource`, each set message by its populated
    leaves (a set but empty message by its own name: it clears the field)."""
    paths: list[str] = []
    for field, value in resource.ListFields():
        if _not_writable(field):
            continue
        if _descends(field):
            inner = implied(value)
            paths.extend(f"{field.name}.{p}" for p in inner)
            if not inner:
                paths.append(field.name)
        else:
            paths.append(field.name)
    return paths


def paths_from_json(body: Mapping[str, Any], descriptor: Descriptor) -> list[str]:
    """The writable fields present in a JSON body for `descriptor` (keys in proto or
    lowerCamel spelling), each object by its keys; unknown keys are left to the parser
    to refuse."""
    paths: list[str] = []
    for key, value in body.items():
        field = _field(descriptor, key)
        if field is None or _not_writable(field):
            continue
        if _descends(field) and isinstance(value, Mapping) and value:
            inner = paths_from_json(value, cast(Descriptor, field.message_type))
            paths.extend(f"{field.name}.{p}" for p in inner)
            if not inner:
                paths.append(field.name)
        else:
            paths.append(field.name)
    return paths


def _field(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    found = descriptor.fields_by_name.get(name)
    if found is not None:
        return found
    return next((f for f in descriptor.fields if f.json_name == name), None)


def _not_writable(field: FieldDescriptor) -> bool:
    behaviors = cast(list[int], field.GetOptions().Extensions[_FIELD_BEHAVIOR])
    return not _NOT_WRITABLE.isdisjoint(behaviors)


def _descends(field: FieldDescriptor) -> bool:
    """Whether a mask may name fields inside `field`: a singular message of our own
    (well-known types such as Duration or Value are values, and maps are replaced
    whole)."""
    message = field.message_type
    return (
        message is not None
        and not field.is_repeated
        and not message.GetOptions().map_entry
        and not message.full_name.startswith("google.protobuf.")
    )


def _path_problem(descriptor: Descriptor, path: str, updatable: Sequence[str]) -> str:
    """Why `path` cannot be in a mask, or ''."""
    parts = path.split(".")
    if parts[0] not in updatable:
        return f"is not one of {', '.join(updatable)}"
    current = descriptor
    for index, part in enumerate(parts):
        field = current.fields_by_name.get(part)
        if field is None:
            return f"has no field {part!r} in {current.name}"
        if _not_writable(field):
            return "names an output-only field"
        if index < len(parts) - 1:
            if not _descends(field):
                return f"cannot name fields inside {part!r}"
            current = cast(Descriptor, field.message_type)
    return ""
