"""Finding a local server: the data directory, its server.json and admin.key.

The server writes both files once it listens, so a client on the same machine
needs no configuration. The default directory follows the platform's convention
for per-user application data, as the server computes it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

DEFAULT_GRPC_TARGET = "127.0.0.1:50051"


def default_data_dir() -> Path:
    """Where `conveyor serve` keeps its data when no --data-dir is given."""
    override = os.environ.get("CONVEYOR_DATA_DIR")
    if override:
        return Path(override)
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "conveyor"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / "conveyor" / "conveyor"
    base = os.environ.get("XDG_DATA_HOME", "").strip()
    return (
        Path(base) if base and Path(base).is_absolute() else home / ".local" / "share"
    ) / "conveyor"


def read_server_addresses(data_dir: Path) -> dict[str, str]:
    """{"grpc": host:port, "http": host:port} of the server that owns data_dir, or {}."""
    try:
        data = json.loads((data_dir / "server.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def read_admin_key(data_dir: Path) -> str | None:
    try:
        return (data_dir / "admin.key").read_text().strip() or None
    except OSError:
        return None


def resolve(
    target: str | None, api_key: str | None, data_dir: str | os.PathLike[str] | None
) -> tuple[str, str | None]:
    """The target and key to use: arguments, then environment, then the local data dir."""
    directory = Path(data_dir) if data_dir is not None else default_data_dir()
    target = target or os.environ.get("CONVEYOR_TARGET")
    if not target:
        target = read_server_addresses(directory).get("grpc", DEFAULT_GRPC_TARGET)
    api_key = api_key or os.environ.get("CONVEYOR_API_KEY") or read_admin_key(directory)
    return target, api_key
