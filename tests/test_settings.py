"""Settings: defaults, environment, flag overrides and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.server.settings import Settings


def test_flags_override_environment_which_overrides_defaults() -> None:
    environ = {
        "CONVEYOR_DATA_DIR": "/srv/conveyor",
        "CONVEYOR_GRPC_ADDRESS": "0.0.0.0:6000",
        "CONVEYOR_LOG_LEVEL": "DEBUG",
        "CONVEYOR_SHUTDOWN_GRACE": "2.5",
        "CONVEYOR_WEBHOOK_ALLOW": " localhost, hooks.internal ,",
        "DATABASE_URL": "postgresql://db/conveyor",
    }

    settings = Settings.from_env(environ, grpc_address="127.0.0.1:0", http_address=None)

    assert settings.data_dir == Path("/srv/conveyor")
    assert settings.grpc_address == "127.0.0.1:0"
    assert settings.http_address == "127.0.0.1:8080"
    assert settings.database_url == "postgresql://db/conveyor"
    assert settings.log_level == "debug"
    assert settings.shutdown_grace == 2.5
    assert settings.webhook_allow == ("localhost", "hooks.internal")


def test_defaults() -> None:
    settings = Settings.from_env({})

    assert settings.grpc_address == "127.0.0.1:50051"
    assert settings.database_url is None
    assert settings.data_dir.name == "conveyor"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"grpc_address": "localhost"}, "grpc_address"),
        ({"http_address": "127.0.0.1:99999"}, "port must be"),
        ({"grpc_address": "::1:80"}, "brackets"),
        ({"log_level": "loud"}, "log_level"),
        ({"shutdown_grace": -1.0}, "shutdown_grace"),
    ],
)
def test_invalid_values_name_the_setting(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**changes)  # type: ignore[arg-type]


def test_ipv6_and_port_zero_are_accepted() -> None:
    assert Settings(grpc_address="[::1]:0").grpc_address == "[::1]:0"


def test_bad_grace_in_environment_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="CONVEYOR_SHUTDOWN_GRACE"):
        Settings.from_env({"CONVEYOR_SHUTDOWN_GRACE": "soon"})


def test_pooler_settings_from_environment_and_flags() -> None:
    from conveyor.server.__main__ import build_parser, settings_from_args

    # Defaults: prepared statements on, the LISTEN connection on DATABASE_URL.
    default = Settings.from_env({"DATABASE_URL": "postgresql://bouncer/conveyor"})
    assert default.database_prepare is True
    assert default.listen_database_url is None

    environ = {
        "DATABASE_URL": "postgresql://bouncer/conveyor",
        "CONVEYOR_LISTEN_DATABASE_URL": "postgresql://primary/conveyor",
        "CONVEYOR_DATABASE_PREPARE": "OFF",
    }
    settings = Settings.from_env(environ)
    assert settings.database_prepare is False
    assert settings.listen_database_url == "postgresql://primary/conveyor"

    args = build_parser().parse_args(
        ["--database-prepare", "on", "--listen-database-url", "postgresql://other/conveyor"]
    )
    flagged = settings_from_args(args, environ)
    assert flagged.database_prepare is True
    assert flagged.listen_database_url == "postgresql://other/conveyor"
    # An absent flag leaves the environment's value.
    assert settings_from_args(build_parser().parse_args([]), environ).database_prepare is False
    # An empty URL means unset, like DATABASE_URL.
    assert Settings.from_env({"CONVEYOR_LISTEN_DATABASE_URL": ""}).listen_database_url is None
    with pytest.raises(ValueError, match="CONVEYOR_DATABASE_PREPARE='sometimes'"):
        Settings.from_env({"CONVEYOR_DATABASE_PREPARE": "sometimes"})
