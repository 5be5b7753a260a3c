"""`conveyor projects ...`, `keys ...` and `webhooks ...`."""

from __future__ import annotations

from typing import Any

import click
from google.protobuf import field_mask_pb2

from conveyor.client._requests import duration
from conveyor.client.cli._output import Output
from conveyor.client.cli._params import DURATION, LIMIT, RATE_LIMIT, ROLE, rate_limits
from conveyor.client.cli._progress import all_pages
from conveyor.client.cli._session import session
from conveyor.v1 import project_pb2


@click.group()
def projects() -> None:
    """Projects (creating one needs the bootstrap admin key)."""


@projects.command(name="list")
def list_projects() -> None:
    """The projects this key can see."""
    Output().many(list(session().client().list_projects()), "project")


@projects.command(name="get")
@click.argument("project_id", metavar="[PROJECT]", required=False)
def get_project(project_id: str | None) -> None:
    """A project (default: the current one)."""
    current = session()
    name = f"projects/{project_id.removeprefix('projects/')}" if project_id else current.parent()
    Output().one(current.client().get_project(name))


@projects.command(name="create")
@click.argument("project_id")
@click.option("--display-name", default="")
@click.option("--callback-url", default="", help="where finished tasks are POSTed")
def create_project(project_id: str, display_name: str, callback_url: str) -> None:
    """Create a project."""
    Output().one(
        session()
        .client()
        .create_project(project_id, display_name=display_name, callback_url=callback_url)
    )


@projects.command(name="update")
@click.argument("project_id", metavar="[PROJECT]", required=False)
@click.option("--display-name", default=None)
@click.option("--callback-url", default=None, help='"" clears it')
@click.option(
    "--rate-limit",
    "limits",
    type=RATE_LIMIT,
    multiple=True,
    help="the default request limit of the project's keys for a class (read, write, bulk,"
    " stream, worker): calls per second and burst, e.g. read=50/100; CLASS=default lifts it",
)
def update_project(
    project_id: str | None,
    display_name: str | None,
    callback_url: str | None,
    limits: tuple[tuple[str, Any], ...],
) -> None:
    """Change the fields given (and only those)."""
    current = session()
    name = f"projects/{project_id.removeprefix('projects/')}" if project_id else current.parent()
    message = project_pb2.Project(name=name)
    paths = []
    if display_name is not None:
        message.display_name = display_name
        paths.append("display_name")
    if callback_url is not None:
        message.callback_url = callback_url
        paths.append("callback_url")
    limits_message, limit_paths = rate_limits(limits)
    message.rate_limits.CopyFrom(limits_message)
    paths += limit_paths
    if not paths:
        raise click.UsageError("give --display-name, --callback-url and/or --rate-limit")
    request = project_pb2.UpdateProjectRequest(
        project=message, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )
    Output().one(current.client().projects.UpdateProject(request))


@click.group()
def keys() -> None:
    """API keys of the project."""


_KEY_LIMIT_HELP = (
    "this key's request limit for a class (read, write, bulk, stream, worker): calls per"
    " second and burst, e.g. read=50/100 (read=0: unlimited); CLASS=default follows the"
    " project's; repeat for several classes"
)


@keys.command(name="create")
@click.option("--role", type=ROLE, required=True)
@click.option("--display-name", default="")
@click.option("--rate-limit", "limits", type=RATE_LIMIT, multiple=True, help=_KEY_LIMIT_HELP)
def create_key(role: int, display_name: str, limits: tuple[tuple[str, Any], ...]) -> None:
    """Mint a key; its secret is shown this once."""
    current = session()
    Output().one(
        current.client().create_api_key(
            current.parent(),
            role,  # type: ignore[arg-type]
            display_name=display_name,
            rate_limits=rate_limits(limits)[0],
        )
    )


@keys.command(name="update")
@click.argument("key_name", metavar="KEY")
@click.option("--display-name", default=None)
@click.option("--rate-limit", "limits", type=RATE_LIMIT, multiple=True, help=_KEY_LIMIT_HELP)
def update_key(
    key_name: str, display_name: str | None, limits: tuple[tuple[str, Any], ...]
) -> None:
    """Change the fields given (and only those)."""
    current = session()
    message = project_pb2.ApiKey(name=current.child("apiKeys", key_name))
    limits_message, paths = rate_limits(limits)
    message.rate_limits.CopyFrom(limits_message)
    if display_name is not None:
        message.display_name = display_name
        paths.append("display_name")
    if not paths:
        raise click.UsageError("give --display-name and/or --rate-limit")
    request = project_pb2.UpdateApiKeyRequest(
        api_key=message, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )
    Output().one(current.client().projects.UpdateApiKey(request))


@keys.command(name="list")
def list_keys() -> None:
    """The project's keys (never their secrets)."""
    current = session()
    client = current.client()
    request = project_pb2.ListApiKeysRequest(parent=current.parent())
    Output().many(all_pages(client.projects.ListApiKeys, request, "api_keys"), "api_key")


@keys.command(name="delete")
@click.argument("key_name", metavar="KEY")
def delete_key(key_name: str) -> None:
    """Revoke a key at once."""
    current = session()
    name = current.child("apiKeys", key_name)
    current.client().delete_api_key(name)
    Output().one({"deleted": name})


@click.group()
def webhooks() -> None:
    """The project's webhook secret and deliveries."""


def _secret_name() -> str:
    return f"{session().parent()}/webhookSecret"


@webhooks.command()
def secret() -> None:
    """The current signing secret (and the previous one during a rotation)."""
    request = project_pb2.GetWebhookSecretRequest(name=_secret_name())
    Output().one(session().client().projects.GetWebhookSecret(request))


@webhooks.command()
@click.option("--grace", type=DURATION, default=None, help="how long the old one stays valid")
def rotate(grace: object) -> None:
    """Make a new signing secret (shown once)."""
    request = project_pb2.RotateWebhookSecretRequest(name=_secret_name())
    if grace is not None:
        request.grace_period.CopyFrom(duration(grace))  # type: ignore[arg-type]
    Output().one(session().client().projects.RotateWebhookSecret(request))


@webhooks.command()
@click.option("--limit", type=LIMIT, default=50, show_default=True, help="0: all")
def deliveries(limit: int) -> None:
    """Recent delivery attempts (the webhook.* events), newest last."""
    current = session()
    found = list(
        current.client().list_events(types=["webhook.*"], project=current.resolve_project())
    )
    if limit:
        found = found[-limit:]
    Output().many(found, "event")


COMMANDS = [projects, keys, webhooks]
