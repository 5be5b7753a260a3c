"""The built wheel carries conveyor.client's types: a downstream project running mypy
against the installed wheel (not this source tree) sees them, not Any.

Builds the wheel offline with the hatchling of this environment, installs it (no
dependencies) into a temporary virtualenv that can see this environment's packages, and
runs mypy on a small script there, with no project configuration.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """\
from conveyor.client import Client, NotFoundError


def task_state(client: Client, name: str) -> str:
    try:
        task = client.get_task(name)
    except NotFoundError as error:
        return error.reason
    return task.summary


wrong: int = Client("127.0.0.1:50051").get_task("projects/p/tasks/t").summary
"""


def run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    built = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--no-index", "-w", dist, ROOT, cwd=dist,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = dist.glob("conveyor-*.whl")
    return found


def test_the_wheel_ships_py_typed_for_the_client(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "conveyor/client/py.typed" in names
    assert "conveyor/v1/py.typed" in names


def test_mypy_sees_the_client_types_from_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path).returncode == 0
    python = venv / "bin" / "python"
    installed = run(
        sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        wheel, cwd=tmp_path,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # The wheel's dependencies (grpcio, protobuf and their stubs) come from this
    # environment: its site-packages as a plain path entry (its .pth files, among them
    # the editable install of this checkout, are not read from there).
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path)
    Path(site.stdout.strip(), "outer.pth").write_text(sysconfig.get_path("purelib") + "\n")
    where = run(
        python, "-c", "import conveyor.client; print(conveyor.client.__file__)", cwd=tmp_path
    )
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr

    (tmp_path / "check.py").write_text(SCRIPT)
    (tmp_path / "mypy.ini").write_text("[mypy]\nstrict = True\n")
    checked = run(
        sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--no-incremental",
        "--python-executable", python, "check.py", cwd=tmp_path,
    )  # fmt: skip
    # Typed, so exactly the one planted mistake is found: summary is a str, not an int.
    errors = [line for line in checked.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, checked.stdout + checked.stderr
    assert "check.py:12:" in errors[0] and '"str"' in errors[0] and '"int"' in errors[0]
