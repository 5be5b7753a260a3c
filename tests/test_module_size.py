"""No module of the service or the client is over 400 lines (issue #15): a module that
grows past it is split by what it holds, not trimmed of comments."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (ROOT / "service" / "conveyor", ROOT / "client" / "conveyor")
MAX_LINES = 400


def test_no_module_is_over_400_lines() -> None:
    modules = [path for package in PACKAGES for path in package.rglob("*.py")]
    assert len(modules) > 100  # the packages were found
    long = {
        str(path.relative_to(ROOT)): lines
        for path in modules
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}
