"""What a user installs: import names, the console script, the Dockerfile's inputs."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["service", "client", "generated"])
def test_source_roots_are_not_importable(name: str) -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(name)


def test_installed_names() -> None:
    for name in ("conveyor.v1.task_pb2", "conveyor.server", "conveyor.client"):
        importlib.import_module(name)
    assert not hasattr(importlib.import_module("conveyor"), "__file__") or (
        importlib.import_module("conveyor").__file__ is None
    ), "conveyor must be a namespace package"


def test_console_script_is_conveyor() -> None:
    scripts = {
        ep.name: ep.value
        for ep in importlib.metadata.distribution("conveyor").entry_points
        if ep.group == "console_scripts"
    }
    assert scripts == {"conveyor": "conveyor.client.cli:main"}
    assert (
        shutil.which("conveyor") is not None
        or (Path(__file__).parent.parent / ".venv/bin/conveyor").exists()
    )


def test_client_public_names() -> None:
    import conveyor.client

    assert set(conveyor.client.__all__) == {
        "AlreadyExistsError",
        "AsyncClient",
        "Client",
        "ConveyorError",
        "FailedPreconditionError",
        "InvalidArgumentError",
        "NotFoundError",
        "PermanentError",
        "PermissionDeniedError",
        "ResourceExhaustedError",
        "TaskCancelled",
        "TaskContext",
        "TaskCriteria",
        "TaskOptions",
        "TaskSpec",
        "UnauthenticatedError",
        "UnavailableError",
        "UnimplementedError",
        "Worker",
        "default_data_dir",
        "task",
    }


def test_dockerfile_copies_existing_files_and_runs_the_console_script() -> None:
    text = (ROOT / "Dockerfile").read_text()
    copies = re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.MULTILINE)
    assert copies
    for line in copies:
        *sources, _dest = line.split()
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert re.search(r'^ENTRYPOINT \["conveyor"\]', text, flags=re.MULTILINE)
    assert re.search(r'^CMD \["serve"\]', text, flags=re.MULTILINE)
    assert "STOPSIGNAL SIGTERM" in text
    assert re.search(r"^USER (?!root)\w+", text, flags=re.MULTILINE)
    assert "HEALTHCHECK" in text and '"health"' in text
    # The server extra (and tracing, which OTEL_* turns on) by default: the embedded
    # PostgreSQL only on request.
    assert re.search(r"^ARG EXTRAS=server,tracing$", text, flags=re.MULTILINE)
    assert '"${WHEEL}[${EXTRAS}]"' in text


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, flags=re.DOTALL)
    test_command = blocks[1].strip()
    assert test_command == ".venv/bin/pytest"
    assert ci.rstrip().splitlines()[-1] == test_command
