"""One server per data directory: an exclusive lock on <data-dir>/server.lock.

Two servers on one data dir would share the embedded PostgreSQL, overwrite each
other's server.json and delete it on exit. The lock is an flock held for the server's
life (the kernel drops it when the process dies, so a crash leaves no stale lock); the
file holds the owner's pid, and server.json its addresses, for the refusal message.
`conveyor migrate` and `conveyor admin-key reset` take no lock: they may run beside
the server that owns the directory.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; the lock is skipped there
    fcntl = None  # type: ignore[assignment]

__all__ = ["DataDirInUse", "DataDirLock"]


class DataDirInUse(RuntimeError):
    """Another live server holds the data directory."""


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / "server.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Takes the lock, or raises DataDirInUse naming the holder's pid and addresses."""
        if fcntl is None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(self._refusal(holder)) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drops the lock (the file stays: removing it would race with a new owner)."""
        fd, self._fd = self._fd, None
        if fd is not None and fcntl is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _refusal(self, pid: str) -> str:
        try:
            addresses = json.loads((self.data_dir / "server.json").read_text("utf-8"))
        except (OSError, ValueError):
            addresses = {}
        if isinstance(addresses, dict) and addresses.get("grpc"):
            where = f"gRPC {addresses.get('grpc')}, HTTP {addresses.get('http', '?')}"
        else:
            where = "still starting, no addresses yet"
        return (
            f"another conveyor server (pid {pid}; {where}) is already serving the data "
            f"directory {self.data_dir}. Stop it, or give this one another --data-dir "
            "(or CONVEYOR_DATA_DIR)."
        )
