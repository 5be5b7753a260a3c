"""Named SQL statements, loaded from the package's queries/ directory."""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import LiteralString

__all__ = ["load", "load_blocks", "load_package_file"]

_PACKAGE = "conveyor.server.store"
_NAME = re.compile(r"[a-z0-9_]+")
_BLOCK = re.compile(r"^-- name: ([a-z0-9_]+)[ \t]*$", re.MULTILINE)


@functools.cache
def load(name: str) -> LiteralString:
    """The text of `queries/<name>.sql` (read once, then cached).

    Typed LiteralString because these files ship inside the package: they are as trusted
    as a literal in the source, and psycopg accepts them without a cast at each call.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"query name {name!r} must match {_NAME.pattern}")
    return load_package_file("queries", f"{name}.sql")


@functools.cache
def load_blocks(name: str) -> dict[str, LiteralString]:
    """The named blocks of `queries/<name>.sql`: each starts at a `-- name: <block>` line.

    For statements composed from fixed fragments (psycopg.sql), e.g. a List's optional
    filters: every fragment still lives in a .sql file, and only values are parameters.
    """
    text = load(name)
    parts = _BLOCK.split(text)
    # parts: [preamble, name1, body1, name2, body2, ...]
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}


def load_package_file(*parts: str) -> LiteralString:
    """The text of a file under the store package (e.g. "migrations", "0001_init.sql")."""
    resource = resources.files(_PACKAGE).joinpath(*parts)
    try:
        text = resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"no SQL file {'/'.join(parts)} in {_PACKAGE}") from None
    # mypy treats LiteralString as str, so no cast is needed (or allowed) here.
    return text
