"""Named SQL statements, loaded from the package's queries/ directory."""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import LiteralString

__all__ = ["load", "load_package_file"]

_PACKAGE = "conveyor.server.store"
_NAME = re.compile(r"[a-z0-9_]+")


@functools.cache
def load(name: str) -> LiteralString:
    """The text of `queries/<name>.sql` (read once, then cached).

    Typed LiteralString because these files ship inside the package: they are as trusted
    as a literal in the source, and psycopg accepts them without a cast at each call.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"query name {name!r} must match {_NAME.pattern}")
    return load_package_file("queries", f"{name}.sql")


def load_package_file(*parts: str) -> LiteralString:
    """The text of a file under the store package (e.g. "migrations", "0001_init.sql")."""
    resource = resources.files(_PACKAGE).joinpath(*parts)
    try:
        text = resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"no SQL file {'/'.join(parts)} in {_PACKAGE}") from None
    # mypy treats LiteralString as str, so no cast is needed (or allowed) here.
    return text
