"""A real PgBouncer in transaction mode in front of the test session's PostgreSQL.

Debian's `pgbouncer` package (1.18, which cannot track prepared statements in
transaction mode) is what .ci/run installs. It listens on a unix socket in its own
temporary directory only (no TCP port, so concurrent test runs never collide), forwards
every database name to the session's PostgreSQL (the `*` fallback: each test makes its
own database) and trusts the user named in its userlist, as the embedded PostgreSQL
trusts its socket. Run as root, PgBouncer must drop to another user: the one owning
PostgreSQL's socket directory, which can reach that socket.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

__all__ = ["PGBOUNCER", "PgBouncer"]

PGBOUNCER = (
    os.environ.get("CONVEYOR_PGBOUNCER") or shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
)
_PORT = 6432
"""Only names the socket file (.s.PGSQL.6432): PgBouncer listens on no TCP port."""


class PgBouncer:
    """One PgBouncer process; `url(database_url)` routes a test's URL through it."""

    def __init__(self, postgres_url: str) -> None:
        params = conninfo_to_dict(postgres_url)
        self._user = str(params.get("user") or "postgres")
        self._server_host = str(params.get("host") or "/var/run/postgresql")
        self._server_port = str(params.get("port") or "5432")
        self._dir = Path(tempfile.mkdtemp(prefix="conveyor-test-pgbouncer-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> str:
        path = self._dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def url(self, database_url: str) -> str:
        """`database_url` (a database on the session's PostgreSQL) through PgBouncer."""
        return make_conninfo(database_url, host=str(self._dir), port=str(_PORT))

    def _admin_url(self) -> str:
        return self.url(make_conninfo(user=self._user, dbname="pgbouncer"))

    def transactions(self, database_url: str) -> int:
        """Transactions PgBouncer has passed to `database_url`'s database so far."""
        dbname = conninfo_to_dict(database_url)["dbname"]
        # The admin console speaks the simple query protocol only: no parameters.
        with psycopg.connect(self._admin_url(), autocommit=True, prepare_threshold=None) as conn:
            cur = conn.execute("SHOW STATS")
            names = [column.name for column in cur.description or ()]
            for row in cur.fetchall():
                stats = dict(zip(names, row, strict=True))
                if stats["database"] == dbname:
                    return int(stats["total_xact_count"])
        return 0

    def start(self, within: float = 15.0) -> None:
        """Start PgBouncer and return once it accepts connections."""
        run_as: list[str] = []
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root; the socket directory's owner (the
            # embedded PostgreSQL's user) can both reach PostgreSQL and use our files.
            owner = (
                Path(self._server_host).stat().st_uid if self._server_host.startswith("/") else 0
            )
            user = pwd.getpwuid(owner).pw_name if owner != 0 else "nobody"
            os.chown(self._dir, owner if owner != 0 else pwd.getpwnam("nobody").pw_uid, -1)
            run_as = ["-u", user]
        self._dir.chmod(0o755)
        (self._dir / "userlist.txt").write_text(f'"{self._user}" ""\n')
        config = self._dir / "pgbouncer.ini"
        config.write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host={self._server_host} port={self._server_port}",
                    "[pgbouncer]",
                    "pool_mode = transaction",
                    f"unix_socket_dir = {self._dir}",
                    f"listen_port = {_PORT}",
                    "auth_type = trust",
                    f"admin_users = {self._user}",
                    f"auth_file = {self._dir / 'userlist.txt'}",
                    f"logfile = {self._dir / 'pgbouncer.log'}",
                    # Two replicas' pools (20 each), the listeners and the test's own.
                    "max_client_conn = 200",
                    "default_pool_size = 20",
                    # Quiet: connection lines for every test database would flood the log.
                    "log_connections = 0",
                    "log_disconnections = 0",
                    "",
                ]
            )
        )
        self._process = subprocess.Popen(
            [PGBOUNCER, *run_as, str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        probe = self._admin_url()
        deadline = time.monotonic() + within
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self._process.returncode}: {self.log}")
            try:
                # The admin console answers without touching PostgreSQL.
                with psycopg.connect(probe, autocommit=True, prepare_threshold=None) as conn:
                    conn.execute("SHOW VERSION")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)
