"""Every named SQL file is loaded by a literal name, so a grep for its file name finds
its caller: each `sql.load(...)` / `sql.load_blocks(...)` in the server takes a string
literal, every file in store/queries is loaded somewhere, and only the store loads."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parent.parent / "service" / "conveyor" / "server"
QUERIES = SERVER / "store" / "queries"


def _loads() -> list[tuple[Path, int, ast.expr]]:
    found = []
    for path in sorted(SERVER.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("load", "load_blocks")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "sql"
            ):
                assert node.args, f"{path}:{node.lineno}: sql.{node.func.attr}() without a name"
                found.append((path, node.lineno, node.args[0]))
    return found


def test_every_query_is_loaded_by_a_literal_name_from_the_store() -> None:
    problems = []
    loaded = set()
    for path, line, name in _loads():
        where = f"{path.relative_to(SERVER)}:{line}"
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            problems.append(f"{where}: loads a name that is not a string literal")
            continue
        loaded.add(name.value)
        if path.parent.name != "store":
            problems.append(f"{where}: loads {name.value}.sql outside store/")
    files = {p.stem for p in QUERIES.glob("*.sql")}
    problems += [f"queries/{n}.sql is never loaded" for n in sorted(files - loaded)]
    problems += [f"{n}.sql is loaded but does not exist" for n in sorted(loaded - files)]
    assert not problems, "\n".join(problems)
