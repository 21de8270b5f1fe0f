"""``vecrank signals``: behavioural signals on the items, computed from the events."""

from __future__ import annotations

from typing import Any

import click

from vecrank.cli._common import app, echo_json, echo_table, json_option
from vecrank.ingest.signals import refresh_signals


@click.group("signals", short_help="Compute the items' behavioural signals from the events.")
def signals_command() -> None:
    """Impressions, clicks, smoothed CTR, windowed popularity, last interaction and ratings per item."""


def _windows(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None  # vecrank.ingest.signals.DEFAULT_WINDOWS
    try:
        days = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of days", ctx=ctx, param=param) from None
    if not days or any(d <= 0 for d in days):
        raise click.BadParameter("windows must be positive numbers of days", ctx=ctx, param=param)
    return days


@signals_command.command("refresh", short_help="Recompute every item's signals (optionally as of a past time).")
@click.option(
    "--as-of",
    default=None,
    metavar="TIME",
    help="Use only events up to this time (ISO 8601 or epoch seconds/ms) [default: now]. "
    "Offline evaluation uses it so that nothing from after the cut leaks into a feature.",
)
@click.option(
    "--windows",
    default=None,
    callback=_windows,
    metavar="DAYS,..",
    help="Popularity windows in days [default: 1,7,30,365, the windows the ranker's features read].",
)
@click.option(
    "--prior-strength",
    type=click.FloatRange(0),
    default=20.0,
    show_default=True,
    help="Pseudo-impressions pulling each item's CTR toward the global rate.",
)
@json_option
def refresh_command(as_of: str | None, windows: tuple[int, ...], prior_strength: float, as_json: bool) -> None:
    """Aggregate the events index into signals.* on each item of the live items index."""

    ctx = app()
    window_arg: dict[str, Any] = {"windows": windows} if windows else {}
    try:
        summary = refresh_signals(
            ctx.client,
            ctx.settings,
            as_of=as_of,
            prior_strength=prior_strength,
            **window_arg,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from None
    data = summary.to_dict()
    if as_json:
        echo_json(data)
    else:
        echo_table([{"signal refresh": k.replace("_", " "), "value": v} for k, v in data.items()])
    if summary.failed:
        click.get_current_context().exit(1)
