"""Fault drills (marker `drill`): real processes, real signals, a checker.

The short form runs with the rest of the suite; `pytest -m drill --full` runs the full
form (the sizes of issue #16) and writes the figures to drills/README.md.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from drillkit.drill import FULL_SETUPS, SETUPS, SHORT_SETUPS, Drill, Figure, Scale
from drillkit.postgres import DrillPostgres

README = Path(__file__).with_name("README.md")
BEGIN = "<!-- figures:begin -->"
END = "<!-- figures:end -->"

_figures: list[tuple[str, str]] = []
_outcomes: dict[str, str] = {}
_load_before: tuple[float, float, float] | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        default=False,
        help="run the drills at full size and write their figures to drills/README.md",
    )


def pytest_configure(config: pytest.Config) -> None:
    global _load_before
    _load_before = os.getloadavg()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A drill's budget follows its size; the suite's default (120 s) is for tests.
    budget = 1200 if config.getoption("--full") else 240
    for item in items:
        if item.get_closest_marker("drill") is not None:
            item.add_marker(pytest.mark.timeout(budget))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A drill taking `setup` runs once per dispatch path (drillkit.drill.SETUPS).
    if "setup" in metafunc.fixturenames:
        short = getattr(metafunc.function, "short_setups", SHORT_SETUPS)
        full = metafunc.config.getoption("--full")
        names = list(dict.fromkeys([*FULL_SETUPS, *short])) if full else list(short)
        metafunc.parametrize("setup", [SETUPS[name] for name in names], ids=names)


@pytest.fixture(scope="session")
def scale(pytestconfig: pytest.Config) -> Scale:
    return Scale(bool(pytestconfig.getoption("--full")))


@pytest.fixture(scope="session")
def drill_postgres() -> Iterator[DrillPostgres]:
    """One PostgreSQL for every drill; the drills may stop and restart it."""
    postgres = DrillPostgres()
    postgres.start()
    try:
        yield postgres
    finally:
        postgres.close()


@pytest.fixture
def drill(drill_postgres: DrillPostgres) -> Iterator[Drill]:
    # Not under pytest's basetemp: a concurrent pytest resets its parent to 0700.
    root = Path(tempfile.mkdtemp(prefix="cvdrill-run-"))
    made = Drill(drill_postgres, root)
    try:
        yield made
    finally:
        made.close()
        if not drill_postgres.running:
            drill_postgres.restart()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Figure:
    """`figure("lost 0, ...")`: records this drill's pass figure for the summary."""

    def record(text: str) -> None:
        _figures.append((request.node.name, text))
        print(f"{request.node.name}: {text}")

    return record


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # The drill's outcome beside its figure: a figure alone does not say it passed.
    if report.when == "call" or report.outcome != "passed":
        outcome = "xfail" if hasattr(report, "wasxfail") else report.outcome
        _outcomes.setdefault(report.nodeid.rsplit("::", 1)[-1], outcome)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    if not _figures:
        return
    terminalreporter.section("drill figures")
    for name, text in _figures:
        terminalreporter.write_line(f"{name}: {text}")
    # Only a whole full run speaks for the drills: not a -k selection of them.
    if config.getoption("--full") and not config.option.keyword:
        _write_readme(config)


def _write_readme(config: pytest.Config) -> None:
    after = os.getloadavg()
    before = _load_before or after
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lines = [
        BEGIN,
        f"Taken {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `pytest -m drill --full`",
        f"on {platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), "
        f"Python {platform.python_version()}.",
        f"Load average (1, 5, 15 min) at the start: {before[0]:.2f}, {before[1]:.2f}, "
        f"{before[2]:.2f}; at the end: {after[0]:.2f}, {after[1]:.2f}, {after[2]:.2f}.",
        "",
        "| drill | outcome | figure |",
        "|---|---|---|",
        *(f"| `{name}` | {_outcomes.get(name, '?')} | {text} |" for name, text in _figures),
        END,
    ]
    text = README.read_text() if README.exists() else f"# Drills\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    README.write_text(head + "\n".join(lines) + tail)
