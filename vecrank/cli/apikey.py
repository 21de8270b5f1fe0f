"""``vecrank apikey``: create, list and revoke the API keys `vecrank serve` accepts."""

from __future__ import annotations

import click

from vecrank.cli._common import app, echo_json, echo_table, json_option
from vecrank.serve.auth import SCOPES, ApiKeyError, ApiKeyStore


def _store():
    ctx = app()
    return ApiKeyStore(ctx.client, ctx.settings)


@click.group("apikey", short_help="API keys for `vecrank serve`: create, list, revoke.")
def apikey_command() -> None:
    """API keys in <prefix>-apikeys: each has an id, a name and scopes (recommend: GET/POST
    /recommendations; events: POST /events; admin: everything). Only a salted hash of each
    secret is stored; `create` prints the key once."""


@apikey_command.command("create", short_help="Make a key and print it once.")
@click.option("--name", required=True, help="What the key is for, e.g. search-page or backend.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(SCOPES),
    help="recommend, events or admin (every scope); repeat for several.",
)
@json_option
def apikey_create_command(name: str, scopes: tuple[str, ...], as_json: bool) -> None:
    """Create a key and print it (vrk_<id>_<secret>) on stdout. It is shown only this once: the
    store keeps a salted hash. Example:

    \b
        vecrank apikey create --name page --scope recommend --scope events
    """

    try:
        key, token = _store().create(name, scopes)
    except ApiKeyError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        echo_json({**key.to_dict(), "key": token})
        return
    click.echo(token)
    click.echo(
        f"created API key {key.key_id} ({key.name}; scopes {', '.join(key.scopes)}). The line above is the "
        "key, shown only now: store it; send it as 'Authorization: Bearer <key>'.",
        err=True,
    )


@apikey_command.command("list", short_help="Every key: id, name, scopes, created, revoked (never the secrets).")
@json_option
def apikey_list_command(as_json: bool) -> None:
    keys = _store().list()
    if as_json:
        echo_json([k.to_dict() for k in keys])
    elif keys:
        echo_table(
            [
                {
                    "id": k.key_id,
                    "name": k.name,
                    "scopes": ",".join(k.scopes),
                    "created": k.to_dict()["created_at"],
                    "revoked": k.to_dict()["revoked_at"] or "-",
                }
                for k in keys
            ]
        )
    else:
        click.echo("No API keys yet; create one with `vecrank apikey create --name NAME --scope recommend`.")


@apikey_command.command("revoke", short_help="Revoke a key (services refuse it within their key cache time).")
@click.argument("key_id")
@click.confirmation_option("--yes", prompt="Revoke this key? Clients using it will get 401")
@json_option
def apikey_revoke_command(key_id: str, as_json: bool) -> None:
    """Revoke KEY_ID (the id `vecrank apikey list` shows). Running services refuse it once their
    cached copy expires: within `vecrank serve --key-cache` seconds (30 by default)."""

    try:
        key, now = _store().revoke(key_id.strip())
    except ApiKeyError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        echo_json(key.to_dict())
    elif now:
        click.echo(
            f"revoked API key {key.key_id} ({key.name}); running services refuse it within their key cache "
            "time (`vecrank serve --key-cache`, 30 s by default)"
        )
    else:
        click.echo(f"API key {key.key_id} ({key.name}) was already revoked")
