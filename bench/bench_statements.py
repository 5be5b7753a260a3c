"""pg_stat_statements for the bench's embedded PostgreSQL (`bench_queue.py --statements`).

The embedded build ships the extension; it needs shared_preload_libraries, so `enable`
sets it and restarts the server before anything else connects. After each figure,
`report` prints the statements that took the most database time during it, per call
and per task, and resets the counters for the next figure.
"""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = ["enable", "install", "report", "reset"]


def enable(embedded: Any, admin_url: str) -> str:
    """Preloads pg_stat_statements (a restart) and returns the new admin URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        conn.execute("ALTER SYSTEM SET pg_stat_statements.track = 'all'")
    embedded.stop()
    return str(embedded.start())


def install(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")


def reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


def report(url: str, figure: str, tasks: float, top: int = 8, unit: str = "task") -> None:
    """Prints the `top` statements by total time since the last reset, per call and per
    `unit` (`tasks` of them were done), then resets."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT calls, total_exec_time, rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 90)"
            " FROM pg_stat_statements WHERE query NOT ILIKE '%%pg_stat_statements%%'"
            " ORDER BY total_exec_time DESC LIMIT %s",
            (top,),
        ).fetchall()
        total = conn.execute(
            "SELECT coalesce(sum(total_exec_time), 0) FROM pg_stat_statements"
            " WHERE query NOT ILIKE '%pg_stat_statements%'"
        ).fetchone()
        conn.execute("SELECT pg_stat_statements_reset()")
    spent = float(total[0]) if total else 0.0
    per_task = f"{spent * 1000 / tasks:8.1f} us/{unit}" if tasks else ""
    print(f"  statements during {figure}: {spent:9.1f} ms in all {per_task}")
    for calls, ms, nrows, query in rows:
        each = ms * 1000 / calls if calls else 0.0
        share = ms * 1000 / tasks if tasks else 0.0
        print(
            f"    {calls:7d} calls {each:9.1f} us/call {share:7.1f} us/task"
            f" {nrows:8d} rows  {query}"
        )
