"""An SDK worker as a separate process (drillkit.effect_worker), to kill, freeze and thaw."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["WorkerProcess"]

_DRILLS = Path(__file__).resolve().parent.parent


class WorkerProcess:
    """`python -m drillkit.effect_worker <args>` with the API key in its environment."""

    def __init__(self, args: list[str], *, api_key: str, log_path: Path) -> None:
        env = dict(os.environ)
        env["CONVEYOR_API_KEY"] = api_key
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_DRILLS), env.get("PYTHONPATH")]))
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "drillkit.effect_worker", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: signal.Signals) -> None:
        if self.alive():
            self.process.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.process.wait(30)

    def close(self) -> None:
        """SIGKILL and reap (the drill is over: nothing it checks is left to finish).
        Idempotent."""
        if self.alive():
            self.kill()
