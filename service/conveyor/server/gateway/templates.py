"""google.api.http path templates: parse, match a request path, expand, describe.

The grammar (google/api/http.proto):

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;

A `*` matches one path segment without `/` or `:` (resource ids never contain a colon,
so `.../tasks/abc:cancel` is the CancelTask verb and never a task named `abc:cancel`);
`**` matches one or more segments. Matching runs on the raw (still percent-encoded)
path, so an encoded `/` inside an id cannot shift segments; captured values are
decoded afterwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

__all__ = ["PathParam", "PathTemplate", "TemplateError", "Variable"]

_SEGMENT = "[^/:]+"
_MULTI = "[^:]+"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class TemplateError(ValueError):
    """A path template that does not follow the google.api.http grammar."""


@dataclass(frozen=True)
class Variable:
    """`{field.path=segments}`: the request field a part of the path is copied into."""

    field_path: str
    segments: tuple[str, ...]
    """The sub-template, e.g. ("projects", "*", "tasks", "*"); ("*",) when none is given."""


@dataclass(frozen=True)
class PathParam:
    """One OpenAPI path parameter: a `*` of a variable, named after the collection it follows."""

    name: str
    field_path: str


class PathTemplate:
    """One parsed template such as `/v1/{name=projects/*/tasks/*}:cancel`."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.segments, self.verb = _parse(text)
        self.variables = tuple(s for s in self.segments if isinstance(s, Variable))
        self._groups: dict[str, str] = {}
        parts: list[str] = []
        for segment in self.segments:
            if isinstance(segment, Variable):
                group = f"v{len(self._groups)}"
                self._groups[group] = segment.field_path
                parts.append(f"(?P<{group}>{_pattern(segment.segments)})")
            else:
                parts.append(_pattern((segment,)))
        verb = f":{re.escape(self.verb)}" if self.verb else ""
        self._regex = re.compile("/" + "/".join(parts) + verb)

    def __repr__(self) -> str:
        return f"PathTemplate({self.text!r})"

    def match(self, raw_path: str) -> dict[str, str] | None:
        """{field path: decoded value} when `raw_path` (percent-encoded) fits, else None."""
        found = self._regex.fullmatch(raw_path)
        if found is None:
            return None
        return {field: unquote(found.group(group)) for group, field in self._groups.items()}

    def expand(self, values: dict[str, str]) -> str | None:
        """The path for these field values, or None when one is missing or does not fit."""
        parts: list[str] = []
        for segment in self.segments:
            if isinstance(segment, Variable):
                value = values.get(segment.field_path)
                if not value:
                    return None
                encoded = "/".join(quote(part, safe="") for part in value.split("/"))
                if not re.fullmatch(_pattern(segment.segments), encoded):
                    return None
                parts.append(encoded)
            else:
                parts.append(segment)
        return "/" + "/".join(parts) + (f":{self.verb}" if self.verb else "")

    def openapi(self) -> tuple[str, list[PathParam]]:
        """The OpenAPI path (`/v1/projects/{project}/tasks/{task}:cancel`) and its parameters.

        OpenAPI path parameters cannot hold a `/`, so each `*` of a variable becomes its
        own parameter, named after the literal collection segment before it (`projects/*`
        gives `project`). The gateway puts the segments back together into the field.
        """
        params: list[PathParam] = []
        parts: list[str] = []
        for segment in self.segments:
            if not isinstance(segment, Variable):
                parts.append(segment)
                continue
            previous = ""
            for inner in segment.segments:
                if inner == "*":
                    name = _singular(previous) if previous else segment.field_path
                    if any(p.name == name for p in params):
                        name = f"{name}_{len(params)}"
                    params.append(PathParam(name, segment.field_path))
                    parts.append("{" + name + "}")
                elif inner == "**":
                    raise TemplateError(f"{self.text}: `**` has no OpenAPI path form")
                else:
                    parts.append(inner)
                previous = inner
        return "/" + "/".join(parts) + (f":{self.verb}" if self.verb else ""), params


def _singular(collection: str) -> str:
    return collection[:-1] if collection.endswith("s") else collection


def _pattern(segments: tuple[str, ...]) -> str:
    out = []
    for segment in segments:
        if segment == "*":
            out.append(_SEGMENT)
        elif segment == "**":
            out.append(_MULTI)
        else:
            out.append(re.escape(segment))
    return "/".join(out)


def _parse(text: str) -> tuple[tuple[str | Variable, ...], str]:
    if not text.startswith("/"):
        raise TemplateError(f"{text!r}: a template starts with /")
    # Split on "/" outside braces; the verb is a ":" outside braces in the last segment.
    raw_segments: list[str] = []
    depth = 0
    current = ""
    for char in text[1:]:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise TemplateError(f"{text!r}: unbalanced braces")
        if char == "/" and depth == 0:
            raw_segments.append(current)
            current = ""
        else:
            current += char
    if depth != 0:
        raise TemplateError(f"{text!r}: unbalanced braces")
    last, verb = current, ""
    close = last.rfind("}")
    colon = last.find(":", close + 1)
    if colon >= 0:
        last, verb = last[:colon], last[colon + 1 :]
        if not verb or "/" in verb:
            raise TemplateError(f"{text!r}: bad verb")
    raw_segments.append(last)

    segments: list[str | Variable] = []
    for raw in raw_segments:
        if not raw:
            raise TemplateError(f"{text!r}: empty segment")
        if raw.startswith("{"):
            if not raw.endswith("}"):
                raise TemplateError(f"{text!r}: a variable must be a whole segment")
            field_path, _, sub = raw[1:-1].partition("=")
            if not _IDENT.fullmatch(field_path):
                raise TemplateError(f"{text!r}: bad field path {field_path!r}")
            inner = tuple(sub.split("/")) if sub else ("*",)
            if any(not s or "{" in s or "}" in s for s in inner):
                raise TemplateError(f"{text!r}: bad variable segments {sub!r}")
            segments.append(Variable(field_path, inner))
        elif "{" in raw or "}" in raw:
            raise TemplateError(f"{text!r}: a variable must be a whole segment")
        else:
            segments.append(raw)
    return tuple(segments), verb
