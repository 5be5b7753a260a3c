"""Drill: one drill's world (a fresh database, its replicas, its workers, its effect log).

Everything a drill starts is ended when the drill ends, whatever happened.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from conveyor.client import Client
from drillkit import pgbouncer
from drillkit.checker import Verdict, check, wait_terminal
from drillkit.effect_worker import KIND
from drillkit.effects import read_effects
from drillkit.postgres import DrillPostgres
from drillkit.replicas import Replica, serves_processes
from drillkit.workers import WorkerProcess

__all__ = [
    "FULL_SETUPS",
    "KIND",
    "PROJECT",
    "RETRY",
    "SETUPS",
    "SHORT_SETUPS",
    "Drill",
    "Figure",
    "Scale",
    "Setup",
    "short_setups",
]

PROJECT = "default"
# Faults cost attempts (an expired lease counts one), so drills give tasks plenty, and a
# short fixed backoff so a re-run is not what the drain waits for.
RETRY: dict[str, Any] = {"max_attempts": 50, "backoff": "fixed", "initial_backoff": 0.2}
BATCH = 500

PROCESSES_PENDING = "needs `conveyor serve --processes` (issue #17), which this server lacks"


@dataclass(frozen=True)
class Setup:
    """How a drill's replicas and stream workers run: the dispatch paths to guard."""

    name: str
    batches: bool = True
    """Stream workers take LeaseBatch and send ReportBatch messages; unary workers lease
    several tasks per call and report them with ReportTasks (issue #17)."""
    processes: int = 1
    """`conveyor serve --processes N` (issue #17)."""
    pgbouncer: bool = False
    """The replicas' pools go through a transaction-mode PgBouncer with prepared
    statements off and their LISTEN connections direct (docs/scaling.md)."""

    def require(self) -> None:
        """Skips the drill when the server cannot run this setup yet."""
        if self.processes > 1 and not serves_processes():
            pytest.skip(PROCESSES_PENDING)
        if self.pgbouncer and (missing := pgbouncer.installed()) is not None:
            pytest.skip(missing)


SETUPS = {
    "batched": Setup("batched"),
    "unbatched": Setup("unbatched", batches=False),
    "processes-2": Setup("processes-2", processes=2),
    "pgbouncer": Setup("pgbouncer", pgbouncer=True),
}
FULL_SETUPS = ("batched", "unbatched", "processes-2")
"""What the full form runs every drill with; a drill asks for more with `short_setups`
(the replica drills add "pgbouncer", which the outage drills were not written for)."""
SHORT_SETUPS = ("batched",)
"""The short form guards the batched path (the SDK's default); the full form adds one
message per task and --processes. A drill can ask for more in the short form with
`short_setups`."""

F = TypeVar("F", bound=Callable[..., object])


def short_setups(*names: str) -> Callable[[F], F]:
    """The setups a drill runs with in the short form (default SHORT_SETUPS)."""

    def mark(function: F) -> F:
        function.short_setups = names  # type: ignore[attr-defined]
        return function

    return mark


Figure = Callable[[str], None]
"""Records a drill's pass figure (the `figure` fixture)."""


@dataclass(frozen=True)
class Scale:
    """Sizes of one form of the drills: the short one (CI) or the full one (--full)."""

    full: bool

    def pick(self, short: float, full: float) -> float:
        return full if self.full else short

    def count(self, short: int, full: int) -> int:
        return full if self.full else short


class Drill:
    def __init__(self, postgres: DrillPostgres, root: Path) -> None:
        self.postgres = postgres
        self.root = root
        self.database_url = postgres.database()
        self.effects_path = root / "effects.log"
        self.reports_path = root / "reports.log"
        self.replicas: list[Replica] = []
        self.workers: list[WorkerProcess] = []
        self._key = ""
        self._worker_ids = itertools.count(1)
        self._pgbouncer: Any = None

    # Processes.

    def replica(
        self, name: str, *, grace: float = 5.0, processes: int = 1, setup: Setup | None = None
    ) -> Replica:
        """Starts a `conveyor serve` replica over the drill's database (as `setup` says:
        its processes, and whether it goes through PgBouncer)."""
        if setup is not None:
            processes = setup.processes
        url, env = self.database_url, {}
        if setup is not None and setup.pgbouncer:
            if self._pgbouncer is None:
                self._pgbouncer = pgbouncer.start(self.postgres.url)
            url = self._pgbouncer.url(self.database_url)
            env = {
                "CONVEYOR_LISTEN_DATABASE_URL": self.database_url,
                "CONVEYOR_DATABASE_PREPARE": "off",
            }
        started = Replica(name, self.root, url, grace=grace, processes=processes, env=env)
        self.replicas.append(started)
        started.start()
        if not self._key:
            self._key = started.admin_key()
        return started

    @property
    def api_key(self) -> str:
        return self._key

    def client(self, replica: Replica, **options: Any) -> Client:
        return Client(replica.grpc_target, api_key=self._key, project=PROJECT, **options)

    def channel(self, replica: Replica) -> grpc.Channel:
        """A plain channel to `replica`: no retries, so a drill sees every code as sent."""
        return grpc.insecure_channel(replica.grpc_target)

    @property
    def metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """The call metadata of the admin key, for stubs on `channel()`."""
        return (("authorization", f"Bearer {self._key}"),)

    def worker(
        self,
        *targets: Replica,
        mode: str = "stream",
        concurrency: int = 4,
        threads: int = 1,
        work: float = 0.005,
        lease_duration: float = 3.0,
        queue: str = "default",
        batches: bool = True,
        batch: int = 1,
    ) -> WorkerProcess:
        """Starts an effect worker process on the replicas' addresses (now)."""
        worker_id = f"w{next(self._worker_ids)}"
        args = [
            "--mode",
            mode,
            "--project",
            PROJECT,
            "--queue",
            queue,
            "--concurrency",
            str(concurrency),
            "--threads",
            str(threads),
            "--work",
            str(work),
            "--lease-duration",
            str(lease_duration),
            "--worker-id",
            worker_id,
            "--effects",
            str(self.effects_path),
            "--reports",
            str(self.reports_path),
        ]
        for target in targets:
            args += ["--target", target.grpc_target]
        if not batches:
            args.append("--unbatched")
        elif mode == "unary" and batch > 1:
            args += ["--batch", str(batch)]
        started = WorkerProcess(
            args, api_key=self._key, log_path=self.root / f"worker-{worker_id}.log"
        )
        self.workers.append(started)
        return started

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        for replica in self.replicas:
            replica.close()
        if self._pgbouncer is not None:
            self._pgbouncer.stop()

    # Work and its check.

    def create_tasks(
        self, client: Client, count: int, *, queue: str = "default", **options: Any
    ) -> list[str]:
        """Creates `count` effect tasks in batches; returns their ids (all acknowledged)."""
        ids: list[str] = []
        spec = {"queue": queue, "retry_policy": RETRY, **options}
        while len(ids) < count:
            size = min(BATCH, count - len(ids))
            specs: list[Any] = [
                {"kind": KIND, "input": {"n": len(ids) + i}, **spec} for i in range(size)
            ]
            answer = client.batch_create_tasks(
                specs,
                atomic=True,
                timeout=60,
            )
            ids += [result.task.name.rsplit("/", 1)[-1] for result in answer.results]
        return ids

    def wait_terminal(self, accepted: Iterable[str], timeout: float) -> int:
        return wait_terminal(self.database_url, PROJECT, accepted, timeout=timeout)

    def check(self, accepted: Iterable[str]) -> Verdict:
        return check(self.database_url, PROJECT, accepted, read_effects(self.effects_path))

    def reports(self) -> list[tuple[str, str, str]]:
        """The unary workers' report outcomes: (task_id, lease_id, outcome)."""
        if not self.reports_path.exists():
            return []
        return [
            (fields[0], fields[1], fields[2])
            for fields in (line.split() for line in self.reports_path.read_text().splitlines())
        ]
