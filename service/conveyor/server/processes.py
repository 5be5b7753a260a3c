"""`conveyor serve --processes N`: N server processes behind one pair of ports.

One Python process runs one event loop, so one server uses one core. The supervisor
(this module) starts N ordinary servers that share the gRPC and HTTP ports through
SO_REUSEPORT (the kernel spreads connections over them); each has its own pool, and
they coordinate through PostgreSQL exactly as replicas on different machines do.

What the supervisor owns, so that N processes look like one server:
- the embedded PostgreSQL, when there is no DATABASE_URL, and the migrations;
- the ports: a port 0 is resolved here (a socket bound with SO_REUSEPORT holds it until
  every process listens), so all processes bind the same concrete port;
- server.json, written once every process listens (each writes its own
  processes/<slot>.json first) and removed at the end;
- shutdown: SIGTERM or SIGINT is passed on to every process as SIGTERM (they drain as
  one server does) and the supervisor returns when all have ended. A process that
  exits by itself takes the others down too: a server with a dead part is not
  half-healthy, it is restarted whole. Each process also gets SIGTERM if the
  supervisor dies (PR_SET_PDEATHSIG), so nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from conveyor.server.address import format_address, parse_address
from conveyor.server.datadir import DataDirLock
from conveyor.server.embedded_install import embedded_postgres
from conveyor.server.logging import configure_logging, get_logger
from conveyor.server.settings import Settings
from conveyor.server.store.migrate import migrate

if TYPE_CHECKING:
    from conveyor.server.embedded import EmbeddedPostgres

__all__ = ["process_count", "run_processes"]

_log = get_logger(__name__)

START_TIMEOUT = 120.0
"""Seconds the processes get to listen before the supervisor gives up."""
_PR_SET_PDEATHSIG = 1


def process_count(value: str) -> int:
    """`--processes`: a count of 1 or more, or `auto` (the machine's cores)."""
    if value == "auto":
        return os.cpu_count() or 1
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"--processes {value!r} must be a count or 'auto'") from None
    if count < 1:
        raise ValueError(f"--processes {value!r} must be at least 1")
    return count


def _reserve(address: str) -> tuple[str, socket.socket | None]:
    """A concrete host:port for `address`; a port 0 is held by a bound socket until the
    processes listen on it (SO_REUSEPORT lets them bind beside it)."""
    host, port = parse_address(address)
    if port != 0:
        return address, None
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(sockaddr)
    return format_address(host, sock.getsockname()[1]), sock


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the supervisor dies (Linux). Only a plain C
    call here: libc was loaded before the fork."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None) if sys.platform == "linux" else None
except OSError:
    _LIBC = None


class _Supervisor:
    def __init__(self, settings: Settings, count: int, environ: Mapping[str, str]) -> None:
        self.settings = settings
        self.count = count
        self.environ = environ
        self.children: list[subprocess.Popen[bytes]] = []
        self.stopping = False
        self.server_json: str | None = None
        self.slots = settings.data_dir / "processes"

    def on_signal(self, signum: int, _frame: object) -> None:
        if self.stopping:
            # A second signal: an impatient operator gets an immediate stop.
            for child in self.children:
                with contextlib.suppress(OSError):
                    child.kill()
            return
        _log.info("shutdown requested", signal=signal.Signals(signum).name)
        self.stopping = True

    def spawn(self, database_url: str, grpc_address: str, http_address: str) -> None:
        env = dict(self.environ)
        # In the environment rather than argv, where `ps` would show a password.
        env["DATABASE_URL"] = database_url
        if self.settings.compat_anonymous is not None:
            env["CONVEYOR_COMPAT_ANONYMOUS"] = self.settings.compat_anonymous
        # Flags reach the processes through their environment twins.
        if self.settings.listen_database_url is not None:
            env["CONVEYOR_LISTEN_DATABASE_URL"] = self.settings.listen_database_url
        env["CONVEYOR_DATABASE_PREPARE"] = "on" if self.settings.database_prepare else "off"
        for slot in range(self.count):
            argv = [
                sys.executable,
                "-m",
                "conveyor.server",
                "--process-slot",
                str(slot),
                "--data-dir",
                str(self.settings.data_dir),
                "--grpc-address",
                grpc_address,
                "--http-address",
                http_address,
                "--log-level",
                self.settings.log_level,
            ]
            self.children.append(subprocess.Popen(argv, env=env, preexec_fn=_die_with_parent))

    def exited(self) -> bool:
        return any(child.poll() is not None for child in self.children)

    def wait_listening(self) -> dict[str, str] | None:
        """The addresses once every process listens; None when stopped or one died."""
        deadline = time.monotonic() + START_TIMEOUT
        while not self.stopping and not self.exited():
            found = [self.slots / f"{slot}.json" for slot in range(self.count)]
            if all(path.exists() for path in found):
                with contextlib.suppress(OSError, ValueError):
                    addresses: dict[str, str] = json.loads(found[0].read_text("utf-8"))
                    return addresses
            if time.monotonic() > deadline:
                _log.error("processes did not start in time", timeout=START_TIMEOUT)
                return None
            time.sleep(0.05)
        return None

    def write_server_json(self, addresses: dict[str, str]) -> None:
        text = json.dumps(addresses)
        path = self.settings.data_dir / "server.json"
        tmp = path.with_name(f".server.json.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        self.server_json = text

    def stop_children(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace + 10
        for child in self.children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _log.warning("process ignored SIGTERM; killing it", pid=child.pid)
                child.kill()
                child.wait()

    def remove_files(self) -> None:
        path = self.settings.data_dir / "server.json"
        with contextlib.suppress(OSError):
            if self.server_json is not None and path.read_text("utf-8") == self.server_json:
                path.unlink()
        for slot in range(self.count):
            (self.slots / f"{slot}.json").unlink(missing_ok=True)


def run_processes(settings: Settings, count: int, environ: Mapping[str, str]) -> int:
    """Runs `count` server processes until SIGTERM or SIGINT; returns the exit code."""
    configure_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # One server per data directory: the supervisor holds the lock for its processes.
    lock = DataDirLock(settings.data_dir)
    lock.acquire()
    try:
        return _supervise(settings, count, environ)
    finally:
        lock.release()


def _supervise(settings: Settings, count: int, environ: Mapping[str, str]) -> int:
    supervisor = _Supervisor(settings, count, environ)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, supervisor.on_signal)
    embedded: EmbeddedPostgres | None = None
    held: list[socket.socket] = []
    code = 1
    try:
        database_url = settings.database_url
        if database_url is None:
            embedded = embedded_postgres(settings.data_dir)
            database_url = embedded.start()
        # Once here rather than N times under the migration lock.
        asyncio.run(migrate(database_url, prepare=settings.database_prepare))
        grpc_address, grpc_sock = _reserve(settings.grpc_address)
        http_address, http_sock = _reserve(settings.http_address)
        held = [s for s in (grpc_sock, http_sock) if s is not None]
        supervisor.remove_files()
        supervisor.spawn(database_url, grpc_address, http_address)
        addresses = supervisor.wait_listening()
        for sock in held:
            sock.close()
        if addresses is not None:
            supervisor.write_server_json(addresses)
            _log.info("conveyor serving", processes=count, **addresses)
            while not supervisor.stopping and not supervisor.exited():
                time.sleep(0.1)
        if supervisor.stopping:
            code = 0
        else:
            _log.error("a server process exited; stopping the others")
    finally:
        for sock in held:
            sock.close()
        supervisor.stop_children()
        if code == 0 and any(child.returncode != 0 for child in supervisor.children):
            code = 1
        supervisor.remove_files()
        if embedded is not None:
            embedded.stop()
    return code
