"""``vecrank ingest``: item catalogs (embedded into the live items index), deletions, events."""

from __future__ import annotations

from pathlib import Path

import click

from vecrank.cli._common import (
    app,
    confirm_on_terminal,
    default_dead_letter_path,
    echo_json,
    echo_table,
    embedding_cache,
    event_bounds_options,
    event_types_options,
    field_types_option,
    index_options_options,
    json_option,
    live_model,
    model_options,
    parse_pairs,
)
from vecrank.ingest.indices import IndexSpec


@click.group("ingest", short_help="Load item catalogs and interaction events into Elasticsearch.")
def ingest_command() -> None:
    """Load item catalogs (embedded with sentence-transformers) and interaction events."""


def _print_summary(title: str, data: dict, as_json: bool) -> None:
    if as_json:
        echo_json(data)
        return
    click.echo(title)
    echo_table(
        [
            {"count": k.replace("_", " "), "value": v}
            for k, v in data.items()
            if not isinstance(v, dict) and v not in (None, "")
        ]
    )
    for reason, n in (data.get("failures") or {}).items():
        click.echo(f"  failed: {n} × {reason}")


@ingest_command.command("items", short_help="Embed a catalog (JSONL, CSV, Parquet or -) into the items index.")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--template",
    required=True,
    metavar="PATTERN",
    help='Text to embed, from the item\'s fields, e.g. "{title}. {genres}. {overview}".',
)
@click.option("--id-field", default="id", show_default=True, help="Field holding the item id.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv", "parquet"]),
    default=None,
    help="Input format [default: from the file suffix; JSONL for stdin].",
)
@click.option("--vector-field", default=None, help="Field with precomputed vectors (used as given).")
@click.option("--tombstone-field", default=None, help="Field that marks deleted items (true/1/yes).")
@field_types_option(
    "Declare a field's type (keyword, text, long, integer, float, double, boolean, date); "
    "values are converted to it (dates to epoch ms), a value that does not convert is a "
    "bad row. Others are inferred, strings as keyword facets. Repeatable."
)
@click.option(
    "--dead-letter",
    type=click.Path(dir_okay=False),
    default=None,
    help="JSONL file for failed rows [default: <state>/dead-letters/items-<time>.jsonl].",
)
@click.option("--strict", is_flag=True, help="Stop at the first bad row.")
@click.option("--dry-run", is_flag=True, help="Validate and compare with the index; write and embed nothing.")
@click.option("--batch-size", type=click.IntRange(1, 10000), default=256, show_default=True, help="Rows per batch.")
@click.option("--no-cache", is_flag=True, help="Do not use the embedding cache.")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal].")
@model_options
@index_options_options
@json_option
def items_command(
    path: str,
    template: str,
    id_field: str,
    fmt: str | None,
    vector_field: str | None,
    tombstone_field: str | None,
    field_types: dict[str, str],
    dead_letter: str | None,
    strict: bool,
    dry_run: bool,
    batch_size: int,
    no_cache: bool,
    progress: bool | None,
    make_embedder,
    index_options,
    as_json: bool,
) -> None:
    """Embed the items in PATH and write them to the live items index (created as v1 if absent).

    Unchanged items (same content hash) are skipped; vectors already computed for the same text
    come from the embedding cache. Bad rows go to the dead-letter file and the run goes on. The
    summary reconciles: read = written + skipped + deleted + failed. Exit 1 if any row failed.
    """
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.ingest.items import ItemSource, ingest_items

    ctx = app()
    try:
        source = ItemSource(
            template=template,
            id_field=id_field,
            vector_field=vector_field,
            tombstone_field=tombstone_field,
            format=fmt,
            field_types=field_types,
        )

        IndexSpec(model="-", dims=1, template=template, field_types=field_types)  # validates types early
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    embedder = make_embedder(live_model(ctx.client, ctx.settings))
    dead = Path(dead_letter) if dead_letter else default_dead_letter_path("items")
    cache = embedding_cache(not no_cache and not dry_run)
    try:
        summary = ingest_items(
            ctx.client,
            ctx.settings,
            path,
            source,
            embedder=embedder,
            cache=cache,
            index_options=index_options,
            dead_letter_path=None if dry_run else dead,
            strict=strict,
            dry_run=dry_run,
            batch_size=batch_size,
            progress=progress,
        )
    except (ValueError, FileNotFoundError, IsADirectoryError, ImportError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if cache is not None:
            cache.close()
    if summary.failed == 0 and not dry_run and dead.exists() and dead.stat().st_size == 0:
        dead.unlink()
        summary.dead_letter_path = None
    _print_summary(f"{'Dry run: ' if dry_run else ''}ingested {path} into {summary.index}", summary.to_dict(), as_json)
    if summary.failed:
        click.get_current_context().exit(1)


@ingest_command.command("delete", short_help="Delete items by id (a file of ids, one per line, or -).")
@click.option(
    "--ids",
    "ids_path",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="File with one item id per line, or - for stdin.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def delete_command(ids_path: str, yes: bool, as_json: bool) -> None:
    """Delete the listed items from the live items index. Ids that are not there are counted as missing.

    With --ids - the confirmation is asked on the terminal (stdin holds the ids); without a
    terminal the command refuses unless --yes is given.
    """
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.ingest.items import delete_items, iter_ids

    ids = list(iter_ids(ids_path))
    ctx = app()
    if not yes:
        question = f"Delete {len(ids)} item(s) from {ctx.settings.index('items')}?"
        if ids_path == "-":  # stdin held the ids: ask on the terminal, or refuse without one
            confirm_on_terminal(question)
        else:
            click.confirm(question, abort=True)
    counts = delete_items(ctx.client, ctx.settings, ids)
    _print_summary("deleted items", {"requested": len(ids), **counts}, as_json)


@ingest_command.command("events", short_help="Append interaction events (JSONL or CSV) and update users.")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--column",
    "columns",
    multiple=True,
    callback=parse_pairs,
    metavar="FIELD=COLUMN",
    help="Where a field is in the file when named differently, e.g. user=userId item=movieId "
    "value=rating. Fields: user, item, type, value, timestamp, request_id, position, arm, "
    "model_version. Repeatable.",
)
@click.option("--type", "default_type", default=None, help="Type of rows without a type column (e.g. rating).")
@event_types_options
@event_bounds_options
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None)
@click.option("--allow-unknown-items", is_flag=True, help="Keep events of items not in the items index.")
@click.option("--no-users", is_flag=True, help="Do not update the users' recent histories.")
@click.option(
    "--max-history", type=click.IntRange(1, 10000), default=200, show_default=True, help="Interactions kept per user."
)
@click.option(
    "--dead-letter",
    type=click.Path(dir_okay=False),
    default=None,
    help="JSONL file for failed rows [default: <state>/dead-letters/events-<time>.jsonl].",
)
@click.option("--batch-size", type=click.IntRange(1, 100000), default=1000, show_default=True)
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal].")
@json_option
def events_command(
    path: str,
    columns: dict[str, str],
    default_type: str | None,
    event_types,
    event_bounds,
    fmt: str | None,
    allow_unknown_items: bool,
    no_users: bool,
    max_history: int,
    dead_letter: str | None,
    batch_size: int,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Append the events in PATH to the events index; the same event twice is stored once.

    Malformed rows, implausible ones (see --min-timestamp, --max-future, --rating-range) and
    events of unknown items are counted and go to the dead-letter file; they never stop the run.
    Exit 1 if any row failed. `vecrank serve` takes the same --event-type, --negative and bounds
    options for POST /events: give both the same.
    """
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.ingest.events import ingest_events
    from vecrank.rank.store import refresh_profiles

    ctx = app()
    dead = Path(dead_letter) if dead_letter else default_dead_letter_path("events")
    try:
        summary = ingest_events(
            ctx.client,
            ctx.settings,
            path,
            columns=columns or None,
            default_type=default_type,
            event_types=event_types,
            bounds=event_bounds,
            dead_letter_path=dead,
            allow_unknown_items=allow_unknown_items,
            update_users=not no_users,
            refresh_states=refresh_profiles,
            max_history=max_history,
            batch_size=batch_size,
            format=fmt,
            progress=progress,
        )
    except (ValueError, FileNotFoundError, IsADirectoryError) as exc:
        raise click.ClickException(str(exc)) from None
    if dead.exists() and dead.stat().st_size == 0:
        dead.unlink()
    data = summary.to_dict()
    _print_summary(f"ingested events from {path}", data, as_json)
    if summary.failed or summary.unknown_items:
        click.get_current_context().exit(1)
