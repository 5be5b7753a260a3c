"""Server settings: defaults, environment variables and command-line overrides."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from conveyor.server.address import parse_address

__all__ = ["LOG_LEVELS", "Settings"]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# The API key roles (domain/auth.py), for --compat-anonymous; settings is a leaf.
_ROLES = ("viewer", "worker", "operator", "admin")

# Environment variable -> Settings field. DATABASE_URL has no CONVEYOR_ prefix because
# that is the name every PostgreSQL tool and hosting platform already sets.
_ENV_FIELDS = {
    "CONVEYOR_DATA_DIR": "data_dir",
    "CONVEYOR_GRPC_ADDRESS": "grpc_address",
    "CONVEYOR_HTTP_ADDRESS": "http_address",
    "DATABASE_URL": "database_url",
    "CONVEYOR_LISTEN_DATABASE_URL": "listen_database_url",
    "CONVEYOR_DATABASE_PREPARE": "database_prepare",
    "CONVEYOR_LOG_LEVEL": "log_level",
    "CONVEYOR_SHUTDOWN_GRACE": "shutdown_grace",
    "CONVEYOR_WEBHOOK_ALLOW": "webhook_allow",
    "CONVEYOR_EVENT_RETENTION": "event_retention",
    "CONVEYOR_GATEWAY_TARGET": "gateway_target",
    "CONVEYOR_EMBEDDED": "embedded",
    "CONVEYOR_COMPAT_ANONYMOUS": "compat_anonymous",
}


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("conveyor"))


@dataclass(frozen=True)
class Settings:
    """Everything the server process needs to know before it starts.

    Construct it with `Settings.from_env` so flags override the environment, which
    overrides the defaults. Construction validates, so a bad value fails at start with a
    message naming the setting.
    """

    data_dir: Path = field(default_factory=_default_data_dir)
    """Holds server.json, admin.key and (without database_url) the embedded PostgreSQL."""
    grpc_address: str = "127.0.0.1:50051"
    """host:port for gRPC; port 0 picks a free port (see server.json for the real one)."""
    http_address: str = "127.0.0.1:8080"
    """host:port for REST, /metrics and /healthz; port 0 picks a free port."""
    database_url: str | None = None
    """PostgreSQL connection string; None starts an embedded PostgreSQL in data_dir."""
    listen_database_url: str | None = None
    """Connection string of the replica's one LISTEN connection; None: database_url. Behind
    a transaction-mode pooler, point it at PostgreSQL directly (or a session-mode pool):
    LISTEN needs a session of its own, or wake-ups fall back to the once-a-second poll."""
    database_prepare: bool = True
    """Whether statements are prepared on the server (psycopg's prepare_threshold, the
    lease statement prepared at once, `SET plan_cache_mode` per connection). Off for
    poolers that cannot track prepared statements, like PgBouncer before 1.21 in
    transaction mode (docs/scaling.md)."""
    log_level: str = "info"
    """One of LOG_LEVELS."""
    shutdown_grace: float = 10.0
    """Seconds in-flight RPCs and HTTP requests get to finish after SIGTERM."""
    webhook_allow: tuple[str, ...] = ()
    """Hosts webhooks may target besides public ones (for example a local test receiver)."""
    event_retention: float = 7 * 86400.0
    """Seconds events are kept; env accepts seconds or 90s, 30m, 12h, 7d."""
    gateway_target: str | None = None
    """gRPC target the REST gateway calls (e.g. `grpc.internal:50051`); None: this process."""
    process_slot: int | None = None
    """Set in the processes of `conveyor serve --processes N` (server/processes.py): the
    listeners share their ports (SO_REUSEPORT) and the addresses go to
    processes/<slot>.json, the supervisor writing the one server.json."""
    embedded: bool = True
    """Whether an unset database_url may start the embedded PostgreSQL. The production
    image sets CONVEYOR_EMBEDDED=0, so a missing DATABASE_URL stops it at start instead
    of silently keeping the data in a throwaway container."""
    compat_anonymous: str | None = None
    """A role (viewer, worker, operator, admin) that keyless requests to the seed APIs
    (compat/) from loopback addresses act with, in the `default` project; None (the
    default) refuses them like any keyless call."""

    def __post_init__(self) -> None:
        for name in ("grpc_address", "http_address"):
            try:
                parse_address(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        level = self.log_level.lower()
        if level not in LOG_LEVELS:
            raise ValueError(f"log_level {self.log_level!r} must be one of {', '.join(LOG_LEVELS)}")
        # Frozen: __setattr__ is blocked, so normalise through object's.
        object.__setattr__(self, "log_level", level)
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if not math.isfinite(self.shutdown_grace) or self.shutdown_grace < 0:
            raise ValueError(f"shutdown_grace {self.shutdown_grace!r} must be seconds >= 0")
        if not math.isfinite(self.event_retention) or self.event_retention <= 0:
            raise ValueError(f"event_retention {self.event_retention!r} must be seconds > 0")
        if self.compat_anonymous == "":
            object.__setattr__(self, "compat_anonymous", None)
        if self.compat_anonymous is not None:
            role = self.compat_anonymous.strip().lower()
            if role not in _ROLES:
                raise ValueError(
                    f"compat_anonymous {self.compat_anonymous!r} must be one of {', '.join(_ROLES)}"
                )
            object.__setattr__(self, "compat_anonymous", role)
        if self.gateway_target == "":
            object.__setattr__(self, "gateway_target", None)
        if self.database_url == "":
            # An empty DATABASE_URL almost always means "unset" in shell scripts.
            object.__setattr__(self, "database_url", None)
        if self.listen_database_url == "":
            object.__setattr__(self, "listen_database_url", None)
        if self.database_url is None and not self.embedded:
            raise ValueError(
                "DATABASE_URL is not set and CONVEYOR_EMBEDDED=0: point DATABASE_URL at "
                "PostgreSQL, or set CONVEYOR_EMBEDDED=1 for the embedded one (it needs the "
                "postgres extra)"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Build settings from `environ`, then apply `overrides` (command-line flags).

        Overrides that are None are ignored, so an absent flag leaves the environment's
        value in place. Unknown override names raise TypeError, like the constructor.
        """
        values: dict[str, Any] = {}
        for env_name, field_name in _ENV_FIELDS.items():
            raw = environ.get(env_name)
            if raw is not None:
                values[field_name] = _from_env_text(field_name, env_name, raw)
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` applied (and validated)."""
        return dataclasses.replace(self, **changes)


# The spellings of CONVEYOR_EMBEDDED and CONVEYOR_DATABASE_PREPARE; empty means unset
# (both default to on).
_BOOLEANS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def _from_env_text(field_name: str, env_name: str, raw: str) -> Any:
    if field_name == "data_dir":
        return Path(raw).expanduser()
    if field_name == "shutdown_grace":
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{env_name}={raw!r} must be a number of seconds") from None
    if field_name == "event_retention":
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        text = raw.strip().lower()
        scale = units.get(text[-1:], 0)
        try:
            return float(text[:-1]) * scale if scale else float(text)
        except ValueError:
            raise ValueError(
                f"{env_name}={raw!r} must be seconds or like 90s, 30m, 12h, 7d"
            ) from None
    if field_name in ("embedded", "database_prepare"):
        text = raw.strip().lower()
        if text not in _BOOLEANS:
            raise ValueError(f"{env_name}={raw!r} must be 1 or 0 (on or off)") from None
        return _BOOLEANS[text]
    if field_name == "webhook_allow":
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw
