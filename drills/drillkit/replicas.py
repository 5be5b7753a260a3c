"""One `conveyor serve` replica as a real process, started on port 0 over a shared database.

A replica restarted after a fault comes back on the ports it had, as a replica of a real
deployment keeps its address, so clients and workers find it again by themselves.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["Replica", "conveyor_command", "serves_processes"]

# A replica starting on a loaded machine migrates, mints keys and imports grpc first.
START_TIMEOUT = 120.0


def conveyor_command() -> list[str]:
    """The `conveyor` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("conveyor")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from conveyor.client.cli import main; main()"]


@functools.cache
def serves_processes() -> bool:
    """Whether `conveyor serve` takes `--processes` (issue #17 adds it)."""
    shown = subprocess.run(
        [*conveyor_command(), "serve", "--help"], capture_output=True, text=True, timeout=120
    )
    return "--processes" in shown.stdout


class Replica:
    """`conveyor serve --data-dir <dir> --grpc-address 127.0.0.1:0 ...` as a child process.

    `grace` is CONVEYOR_SHUTDOWN_GRACE: how long in-flight calls get after SIGTERM.
    """

    def __init__(
        self,
        name: str,
        root: Path,
        database_url: str,
        *,
        grace: float = 5.0,
        processes: int = 1,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.env = env or {}
        """Added to the process's environment (e.g. the pooler settings)."""
        self.processes = processes
        self.data_dir = root / name
        self.log_path = root / f"{name}.log"
        self.database_url = database_url
        self.grace = grace
        self.grpc_target = ""
        self.http_address = ""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, *, same_ports: bool = False) -> Replica:
        """Starts the process and returns once it serves (server.json written)."""
        grpc_address = self.grpc_target if same_ports and self.grpc_target else "127.0.0.1:0"
        http_address = self.http_address if same_ports and self.http_address else "127.0.0.1:0"
        server_json = self.data_dir / "server.json"
        # A replica killed with SIGKILL leaves its server.json behind.
        server_json.unlink(missing_ok=True)
        env = dict(os.environ)
        env["CONVEYOR_SHUTDOWN_GRACE"] = str(self.grace)
        env.pop("DATABASE_URL", None)
        env.update(self.env)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *conveyor_command(),
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--grpc-address",
                    grpc_address,
                    "--http-address",
                    http_address,
                    "--database-url",
                    self.database_url,
                    "--log-level",
                    "warning",
                    *(["--processes", str(self.processes)] if self.processes > 1 else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own process group, so SIGKILL takes every process of the replica.
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"replica {self.name} exited with {self.process.returncode}: {self.log_tail()}"
                )
            try:
                addresses = json.loads(server_json.read_text())
            except (OSError, ValueError):
                addresses = None
            if addresses:
                self.grpc_target = addresses["grpc"]
                self.http_address = addresses["http"]
                return self
            if time.monotonic() > deadline:
                raise TimeoutError(f"replica {self.name} did not start: {self.log_tail()}")
            time.sleep(0.05)

    def admin_key(self) -> str:
        """The bootstrap admin key (only the first replica of a database writes it)."""
        return (self.data_dir / "admin.key").read_text().strip()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: signal.Signals) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL to every process of the replica (as a container kill does), and reap."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.wait(30)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def log_tail(self, size: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def close(self) -> None:
        """SIGTERM and wait; SIGKILL when it does not exit in time. Idempotent."""
        if not self.alive():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(self.grace + 20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
