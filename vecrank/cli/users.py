"""``vecrank users``: the users index, brought back to what the events index implies."""

from __future__ import annotations

import sys

import click

from vecrank.cli._common import app, echo_json, json_option
from vecrank.errors import VecrankError

_CHUNK = 500  # users rebuilt per step (one progress tick)


@click.group("users", short_help="Rebuild users' histories and states from the events index.")
def users_command() -> None:
    """Each user's document holds their newest interactions and their state (profile, fold-in,
    co-occurrence scores...), kept up to date as events arrive."""


@users_command.command("rebuild", short_help="Set users' histories and states to what the events imply.")
@click.option("--user", "users", multiple=True, metavar="ID", help="Only this user (repeatable); default: every user.")
@click.option(
    "--max-history", type=click.IntRange(1, 10_000), default=200, show_default=True, help="Interactions kept per user."
)
@json_option
def rebuild_command(users: tuple[str, ...], max_history: int, as_json: bool) -> None:
    """Whatever interrupted an earlier events batch (a timeout after the bulk, a killed process),
    this brings every named user (or all of them) to exactly what the events index holds: the
    newest interactions, their count, and the state recomputed from them. Idempotent; safe to run
    while events arrive."""
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.ingest.events import rebuild
    from vecrank.ingest.users import event_users
    from vecrank.rank.store import refresh_profiles

    ctx = app()
    try:
        ids = sorted(set(users)) if users else event_users(ctx.client, ctx.settings)
        rebuilt = 0
        with click.progressbar(
            length=len(ids), label="rebuilding users", file=sys.stderr, hidden=as_json or len(ids) <= _CHUNK
        ) as bar:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                rebuilt += rebuild(
                    ctx.client, ctx.settings, chunk, max_history=max_history, refresh_states=refresh_profiles
                )
                bar.update(len(chunk))
    except VecrankError as exc:
        raise click.ClickException(str(exc)) from None
    result = {"users": len(ids), "rebuilt": rebuilt}
    if as_json:
        echo_json(result)
    else:
        click.echo(f"rebuilt {rebuilt} of {len(ids)} user(s) from {ctx.settings.index('events')}")
