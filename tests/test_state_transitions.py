"""Every task state change written in SQL is an edge of the transition table (states.py).

What this checks, exactly:

1. It finds every `UPDATE tasks` in the named SQL files (store/queries/*.sql) and in
   store/schema.sql, and reads its SET list (up to its FROM, WHERE or RETURNING).
2. An UPDATE whose SET list assigns `state` must carry, on the line right above it, a
   declaration `-- transitions: A -> B, C -> D` of every (from, to) it can make.
3. Each declared (from, to) must be an edge of states.TABLE: some action leads from
   `from` to `to`. A declared state that is not a State fails too.
4. The declaration must cover the literals of the statement itself: every quoted
   state literal in its `state = ...` assignment must be named in the declaration, and
   every quoted state literal in its own WHERE guard (`state = 'X'`, `state IN (...)`)
   must be a declared source.
5. An UPDATE of tasks that does not assign `state` must not carry a declaration.

What it cannot check: states the statement receives as parameters (a guard of
`%(sources)s`, a target of `%(queued)s`, a CASE over a column computed elsewhere). The
callers fill those from states.py (`states.sources(action)`, `states.EVENT_TYPES`), and
for them the declaration is the statement's word. INSERTs (a task's first state) are
not transitions and are not checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

from conveyor.server.states import TABLE, State

STORE = Path(__file__).resolve().parent.parent / "service" / "conveyor" / "server" / "store"
SOURCES = [*sorted((STORE / "queries").glob("*.sql")), STORE / "schema.sql"]

_UPDATE = re.compile(r"\bUPDATE\s+tasks\b", re.IGNORECASE)
_SET_END = re.compile(r"\b(FROM|WHERE|RETURNING)\b|;|^\s*\)", re.IGNORECASE | re.MULTILINE)
_WHERE_END = re.compile(r"\bRETURNING\b|;|^\s*\)\s*,?\s*$|^\S", re.IGNORECASE | re.MULTILINE)
_ASSIGN_STATE = re.compile(r"(?:^|,)\s*state\s*=", re.IGNORECASE)
_NEXT_ASSIGNMENT = re.compile(r",\s*[a-z_]+\s*=(?!=)", re.IGNORECASE)
_LITERAL = re.compile(r"'([A-Z_]+)'")
_GUARD = re.compile(r"\bstate\s*(?:=\s*'([A-Z_]+)'|IN\s*\(([^)]*)\))", re.IGNORECASE)
_DECLARATION = re.compile(r"^\s*--\s*transitions:\s*(.+)$")
EDGES = {(source, target) for (source, _action), target in TABLE.items()}
NAMES = {s.value for s in State}


def _strip_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)


def _updates() -> list[tuple[str, list[str], str, str]]:
    """(where, the line above, SET list, WHERE guard) of every UPDATE tasks."""
    found = []
    for path in SOURCES:
        text = path.read_text()
        lines = text.split("\n")
        for match in _UPDATE.finditer(text):
            line_no = text.count("\n", 0, match.start())
            above = lines[line_no - 1] if line_no else ""
            rest = _strip_comments(text[match.end() :])
            set_at = re.search(r"\bSET\b", rest, re.IGNORECASE)
            assert set_at is not None, f"{path.name}:{line_no + 1}: UPDATE without SET"
            after_set = rest[set_at.end() :]
            end = _SET_END.search(after_set)
            set_list = after_set[: end.start() if end else None]
            where_at = re.search(r"\bWHERE\b", after_set, re.IGNORECASE)
            guard = ""
            if where_at is not None:
                tail = after_set[where_at.end() :]
                stop = _WHERE_END.search(tail)
                guard = tail[: stop.start() if stop else None]
            found.append((f"{path.name}:{line_no + 1}", [above], set_list, guard))
    return found


def _declared(line: str) -> set[tuple[str, str]] | None:
    match = _DECLARATION.match(line)
    if match is None:
        return None
    edges = set()
    for part in match.group(1).split(","):
        source, _, target = (p.strip() for p in part.partition("->"))
        edges.add((source, target))
    return edges


def _state_assignment(set_list: str) -> str | None:
    match = _ASSIGN_STATE.search(set_list)
    if match is None:
        return None
    rest = set_list[match.end() :]
    following = _NEXT_ASSIGNMENT.search(rest)
    return rest[: following.start() if following else None]


def _guard_sources(guard: str) -> set[str]:
    sources: set[str] = set()
    for single, listed in _GUARD.findall(guard):
        if single:
            sources.add(single)
        sources.update(_LITERAL.findall(listed or ""))
    return sources


def test_the_scan_finds_the_state_changing_statements() -> None:
    """Guards the scanner itself: it sees the statements this file exists for."""
    changing = [where for where, _, set_list, _ in _updates() if _state_assignment(set_list)]
    names = {where.split(":")[0] for where in changing}
    assert {"lease_report.sql", "reaper_expire.sql", "task_cancel.sql"} <= names
    assert len(changing) >= 10


def test_every_state_change_in_sql_is_an_edge_of_the_table() -> None:
    problems = []
    for where, (above,), set_list, guard in _updates():
        assignment = _state_assignment(set_list)
        declared = _declared(above)
        if assignment is None:
            if declared is not None:
                problems.append(f"{where}: declares transitions but does not set state")
            continue
        if declared is None:
            problems.append(f"{where}: sets state without a `-- transitions:` line above it")
            continue
        for source, target in sorted(declared):
            if source not in NAMES or target not in NAMES:
                problems.append(f"{where}: {source} -> {target} names no State")
            elif (State(source), State(target)) not in EDGES:
                problems.append(f"{where}: {source} -> {target} is not an edge of states.TABLE")
        named = {s for edge in declared for s in edge}
        for literal in _LITERAL.findall(assignment):
            if literal not in named:
                problems.append(f"{where}: sets {literal}, which its declaration does not name")
        sources = {source for source, _ in declared}
        for literal in _guard_sources(guard):
            if literal not in sources:
                problems.append(f"{where}: guards on {literal}, not a declared source")
    assert not problems, "\n".join(problems)
