"""Imports only point down: read every import of the server and the client (with ast)
and fail on any arrow that runs up or sideways between layers.

The layers are the data below, top first. A unit is a top-level module or folder of
conveyor.server (`rpc/`, `app.py`, ...); a module may import its own unit and any unit
in a later layer, nothing else. The client never imports the server at module level
(its `serve` command may start the server from inside a function); the server may use
the client, the base install it always has (one JSON rule, for example). There is no
list of exceptions: an arrow that needs one is a design change, made here with its reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "service" / "conveyor" / "server"
CLIENT = ROOT / "client" / "conveyor" / "client"

LAYERS: list[tuple[str, ...]] = [
    # The composition root: builds every layer and hands them to the runtime.
    ("__main__",),
    ("services",),
    ("registry",),
    ("event_wiring",),
    # The runtime: processes, listeners, the HTTP face.
    ("app", "migrate_cli", "admin_key", "processes"),
    # The seed APIs (issue 20): translate to v1 calls through the gateway's channel.
    ("dashboard", "compat"),
    ("gateway", "grpc_server", "http_server"),
    ("reflection",),
    # gateway -> rpc -> streams -> loops -> domain -> store (DESIGN.md).
    ("rpc",),
    ("wakeups",),
    ("streams",),
    ("loops",),
    ("domain",),
    ("render",),
    # What the running server hands its services and loops (settings, pool, loops,
    # health): a holder any layer above the store may be given.
    ("context",),
    ("store",),
    # OpenTelemetry setup (context holds it); imports only logging.
    ("tracing",),
    # Leaves everything may import.
    ("states",),
    ("errors",),
    # Loads the embedded PostgreSQL only when asked for (the `postgres` extra).
    ("embedded_install",),
    ("embedded", "settings", "datadir"),
    ("logging", "address"),
]
RANK = {unit: rank for rank, layer in enumerate(LAYERS) for unit in layer}


def _unit(module: str) -> str | None:
    """The server unit a dotted module name belongs to (None: not the server)."""
    parts = module.split(".")
    if parts[:2] != ["conveyor", "server"] or len(parts) < 3:
        return None
    return parts[2]


def _imports(path: Path, top_level_only: bool = False) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in a file (with top_level_only, none inside a
    function); `from a import b` also yields a.b, so `from conveyor.server import states`
    counts as importing the states unit."""
    tree = ast.parse(path.read_text(), str(path))
    for node in _walk(tree, into_functions=not top_level_only):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def _walk(node: ast.AST, into_functions: bool) -> Iterator[ast.AST]:
    for child in ast.iter_child_nodes(node):
        yield child
        if into_functions or not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _walk(child, into_functions)


def _unit_of_file(path: Path) -> str:
    relative = path.relative_to(SERVER)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def test_every_server_unit_has_a_layer() -> None:
    units = {_unit_of_file(p) for p in SERVER.rglob("*.py")} - {"__init__"}
    assert units - set(RANK) == set(), "add the new unit to LAYERS"
    assert set(RANK) - units == set(), "a unit in LAYERS no longer exists"


def test_server_imports_point_down() -> None:
    upward = []
    for path in sorted(SERVER.rglob("*.py")):
        source = _unit_of_file(path)
        if source not in RANK:
            continue  # test_every_server_unit_has_a_layer names it
        for line, module in _imports(path):
            target = _unit(module)
            if target is None or target == source or target not in RANK:
                continue
            if RANK[target] <= RANK[source]:
                where = f"{path.relative_to(ROOT)}:{line}"
                upward.append(f"{where}: {source} imports {target} ({module})")
    assert not upward, "imports that run up or sideways:\n" + "\n".join(sorted(set(upward)))


def test_the_client_does_not_import_the_server_at_module_level() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sorted(CLIENT.rglob("*.py"))
        for line, module in _imports(path, top_level_only=True)
        if module.startswith("conveyor.server")
    ]
    assert not found, "\n".join(found)
