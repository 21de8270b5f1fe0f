"""``vecrank index``: versioned items indices behind the alias."""

from __future__ import annotations

import click

from vecrank.cli._common import (
    app,
    echo_json,
    echo_table,
    embedding_cache,
    field_types_option,
    index_options_options,
    json_option,
    live_model,
    model_options,
)
from vecrank.ingest import indices


@click.group("index", short_help="Create, list, reindex, switch, roll back and delete item index versions.")
def index_command() -> None:
    """Items live in versioned indices <prefix>-items-v<N> behind the alias <prefix>-items.

    A reindex builds the next version beside the live one and moves the alias atomically once it
    is verified, so searches never see a half-built index; the old version stays for rollback.
    """


def _echo(data, as_json: bool, text: str) -> None:
    if as_json:
        echo_json(data)
    else:
        click.echo(text)


@index_command.command("create", short_help="Create the next (empty) version.")
@click.option("--template", required=True, metavar="PATTERN", help="Text template the vectors are made from.")
@click.option("--id-field", default="id", show_default=True)
@field_types_option("Declared field type (repeatable).")
@click.option("--shards", type=click.IntRange(1, 1024), default=1, show_default=True)
@click.option("--replicas", type=click.IntRange(0, 16), default=0, show_default=True)
@model_options
@index_options_options
@json_option
def create_command(
    template: str,
    id_field: str,
    field_types: dict[str, str],
    shards: int,
    replicas: int,
    make_embedder,
    index_options,
    as_json: bool,
) -> None:
    """Create <prefix>-items-v<N+1>. The alias points at it only if there was no alias yet."""

    ctx = app()
    embedder = make_embedder(live_model(ctx.client, ctx.settings))
    try:
        spec = indices.IndexSpec(
            model=embedder.model_name,
            dims=embedder.dimensions,
            template=template,
            id_field=id_field,
            similarity=embedder.similarity,
            index_options=index_options or indices.VectorIndexOptions(),
            field_types=field_types,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    name = indices.create_version(ctx.client, ctx.settings, spec, shards=shards, replicas=replicas)
    live = indices.live_index(ctx.client, ctx.settings)
    _echo(
        {"index": name, "live": name == live},
        as_json,
        f"Created {name}" + (" (live)" if name == live else f"; the alias still points at {live}"),
    )


@index_command.command("list", short_help="List versions with docs, size, model and which is live.")
@json_option
def list_command(as_json: bool) -> None:
    ctx = app()
    rows = indices.describe_versions(ctx.client, ctx.settings)
    if as_json:
        echo_json(rows)
    elif not rows:
        click.echo(f"No versions of {ctx.settings.index('items')} yet.")
    else:
        echo_table(
            [{**r, "live": "*" if r["live"] else ""} for r in rows],
            ["version", "live", "index", "docs", "size_mb", "model", "dims", "index_type", "created_at"],
        )


@index_command.command("reindex", short_help="Build the next version (new model/template/options) and switch to it.")
@click.option("--template", default=None, metavar="PATTERN", help="New text template [default: the live one's].")
@field_types_option("Declared field types for the new version [default: the live one's].")
@click.option("--no-switch", is_flag=True, help="Build and verify, but leave the alias where it is.")
@click.option(
    "--verify-sample",
    type=click.IntRange(0, 1000),
    default=20,
    show_default=True,
    help="Documents whose vectors are checked against a fresh embedding.",
)
@click.option("--no-cache", is_flag=True, help="Do not use the embedding cache.")
@model_options
@index_options_options
@json_option
def reindex_command(
    template: str | None,
    field_types: dict[str, str],
    no_switch: bool,
    verify_sample: int,
    no_cache: bool,
    make_embedder,
    index_options,
    as_json: bool,
) -> None:
    """Re-embed only what the change requires; verify counts and sampled vectors; move the alias atomically.

    Without --model the new version keeps the live one's model.
    """
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.ingest.reindex import reindex

    ctx = app()
    embedder = make_embedder(live_model(ctx.client, ctx.settings))
    cache = embedding_cache(not no_cache)
    try:
        summary = reindex(
            ctx.client,
            ctx.settings,
            embedder=embedder,
            template=template,
            index_options=index_options,
            field_types=field_types or None,
            cache=cache,
            verify_sample=verify_sample,
            switch=not no_switch,
        )
    finally:
        if cache is not None:
            cache.close()
    verb = "now live" if summary.switched else "built, alias unchanged"
    _echo(
        summary.to_dict(),
        as_json,
        f"{summary.target} {verb}: {summary.docs} docs ({summary.copied_vectors} vectors copied, "
        f"{summary.from_cache} from cache, {summary.embedded} embedded), {summary.verified_sample} verified, "
        f"{summary.seconds}s. Previous: {summary.source}.",
    )


@index_command.command("switch", short_help="Point the alias at version N.")
@click.argument("version", type=click.IntRange(1))
@json_option
def switch_command(version: int, as_json: bool) -> None:
    ctx = app()
    name = indices.switch(ctx.client, ctx.settings, version)
    _echo({"live": name}, as_json, f"{ctx.settings.index('items')} -> {name}")


@index_command.command("rollback", short_help="Point the alias back at the previous version.")
@json_option
def rollback_command(as_json: bool) -> None:
    ctx = app()
    name = indices.rollback(ctx.client, ctx.settings)
    _echo({"live": name}, as_json, f"{ctx.settings.index('items')} -> {name}")


@index_command.command("delete", short_help="Delete version N (never the live one).")
@click.argument("version", type=click.IntRange(1))
@click.confirmation_option("--yes", prompt="Delete this index version and its documents?")
@json_option
def delete_command(version: int, as_json: bool) -> None:
    ctx = app()
    name = indices.delete_version(ctx.client, ctx.settings, version)
    _echo({"deleted": name}, as_json, f"Deleted {name}")
