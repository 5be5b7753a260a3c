"""The tests' PgBouncer (tests/pgbouncer_support.py) for drills on replicas behind it.

Loaded from its file rather than copied: one definition of how the suite runs PgBouncer
(transaction mode, unix socket in a temporary directory, trust auth).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

__all__ = ["installed", "start"]

_SUPPORT = Path(__file__).resolve().parents[2] / "tests" / "pgbouncer_support.py"


def _module() -> Any:
    spec = importlib.util.spec_from_file_location("pgbouncer_support", _SUPPORT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def installed() -> str | None:
    """None when pgbouncer can run here, else why not (for a skip)."""
    path = Path(_module().PGBOUNCER)
    if path.exists():
        return None
    return f"pgbouncer is not installed (no {path}): apt-get install pgbouncer"


def start(postgres_url: str) -> Any:
    """A started PgBouncer in front of `postgres_url`'s server (`.url(u)`, `.stop()`)."""
    bouncer = _module().PgBouncer(postgres_url)
    bouncer.start()
    return bouncer
