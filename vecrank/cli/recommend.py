"""``vecrank recommend``: candidates for a user and/or search text, as a table or JSON."""

from __future__ import annotations

from typing import Any

import click

from vecrank.cli._common import app, echo_json, echo_table, json_option
from vecrank.errors import VecrankError


def parse_filters(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, Any]:
    """``genres=Comedy`` (repeat a field for any of several values), ``year>=1990``, ``year<2000``:
    the service's parser (:func:`vecrank.rank.queries.parse_filter_expressions`), its errors as
    usage errors."""
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.rank.queries import RequestError, parse_filter_expressions

    try:
        return parse_filter_expressions(list(values))
    except RequestError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@click.command("recommend", short_help="Candidates for a user and/or search text (kNN on the profile).")
@click.option("--user", default=None, help="User id (its profile and history come from the users index).")
@click.option("--query", default=None, help="Search-box text.")
@click.option(
    "--context",
    "context_items",
    multiple=True,
    metavar="ITEM_ID",
    help="Item(s) on screen, used when the user has no history. Repeatable.",
)
@click.option(
    "--filter",
    "filters",
    multiple=True,
    callback=parse_filters,
    metavar="FIELD=VALUE",
    help="genres=Comedy (repeat for any of several), year>=1990, year<2000. Repeatable.",
)
@click.option("-k", "k", type=int, default=10, show_default=True, help="How many items.")
@click.option("--num-candidates", type=int, default=None, help="HNSW candidates [default: max(100, 4k)].")
@click.option("--include-seen", is_flag=True, help="Do not exclude items the user already consumed.")
@click.option(
    "--interests",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Interests to search separately (multi-interest).",
)
@click.option(
    "--query-weight",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Share of the query text when blended with the profile.",
)
@click.option(
    "--text-boost",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Add a BM25 match on the text with this boost.",
)
@click.option(
    "--mmr", "mmr_lambda", type=click.FloatRange(0, 1), default=None, help="Diversify with MMR (1 = relevance only)."
)
@click.option("--group-field", default=None, help="At most --max-per-group items per value of this field.")
@click.option("--max-per-group", type=click.IntRange(1), default=None)
@click.option(
    "--model",
    "model_id",
    default="vecrank",
    show_default=True,
    help="Rank with this model's active version; without one, candidates keep their kNN order.",
)
@click.option("--no-rank", is_flag=True, help="Candidates in kNN order, no ranker.")
@click.option(
    "--rerank",
    type=click.Choice(["auto", "python", "plugin"]),
    default="auto",
    show_default=True,
    help="Where the model runs: in Python, inside Elasticsearch (the vecrank plugin), or the plugin "
    "when it is installed and the model has its plugin features.",
)
@click.option("--explain", is_flag=True, help="Each item's top feature contributions (XGBoost pred_contribs).")
@click.option(
    "--show",
    default=None,
    metavar="FIELDS",
    help="Comma-separated fields to print [default: title or the first text-like field].",
)
@json_option
def recommend_command(
    user,
    query,
    context_items,
    filters,
    k,
    num_candidates,
    include_seen,
    interests,
    query_weight,
    text_boost,
    mmr_lambda,
    group_field,
    max_per_group,
    model_id,
    no_rank,
    rerank,
    explain,
    show,
    as_json,
) -> None:
    """Retrieve candidates for a user and/or a search query, and say which path was taken
    (profile, multi_interest, profile+query, query, context or popular)."""
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.rank import Recommender, RequestError, RetrieveConfig

    ctx = app()
    try:
        config = RetrieveConfig(
            exclude_seen=not include_seen,
            max_interests=interests,
            query_weight=query_weight,
            text_boost=text_boost,
            mmr_lambda=mmr_lambda,
            group_field=group_field,
            max_per_group=max_per_group,
        )
        recommender = Recommender(ctx.client, ctx.settings, config=config)
        model = None if no_rank else _active_model(ctx, model_id)
        args = {
            "user": user,
            "query": query,
            "context_items": context_items,
            "filters": filters,
            "num_candidates": num_candidates,
        }
        if model is not None:
            # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
            from vecrank.rank.model import search_model_id
            from vecrank.rank.ranker import Ranker

            search = _active_model(ctx, search_model_id(model_id)) if query else None
            ranked = Ranker(recommender, model, rerank=rerank, search_model=search).recommend(
                k=k, explain=explain, **args
            )
            _print_ranked(ranked, show, as_json)
            return
        result = recommender.candidates(k=k, **args)
    except RequestError as exc:
        raise click.UsageError(str(exc)) from None
    except VecrankError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        echo_json(result.to_dict())
        return
    rows = [_row(rank, c, c.score, show) for rank, c in enumerate(result.candidates, 1)]
    click.echo(
        f"path: {result.path}{' (cold start)' if result.cold_start else ''}; no ranker (kNN order); "
        f"{len(result.candidates)} items; excluded {result.excluded} seen; "
        f"{result.timings_ms['total']:.1f} ms ({result.timings_ms['elasticsearch']:.1f} in Elasticsearch)"
    )
    echo_table(rows)


def _row(rank: int, candidate, score: float | None, show: str | None) -> dict[str, Any]:
    """One table row: rank, id, the --show fields (default: title, name or text), score, cosine."""
    fields = (
        [c.strip() for c in show.split(",")]
        if show
        else ([f for f in ("title", "name") if f in candidate.fields][:1] or ["text"])
    )
    return {
        "#": rank,
        "item": candidate.item_id,
        **{f: _short(candidate.fields.get(f)) for f in fields},
        "score": "" if score is None else f"{score:.4f}",
        "cosine": "" if candidate.cosine is None else f"{candidate.cosine:.4f}",
    }


def _short(value: Any, width: int = 60) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list) else "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _active_model(ctx, model_id: str):
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.rank.model import Registry

    try:
        return Registry(ctx.client, ctx.settings).get(model_id)
    except VecrankError:
        return None


def _print_ranked(ranked, show: str | None, as_json: bool) -> None:
    if as_json:
        echo_json(ranked.to_dict())
        return
    rows = []
    for rank, r in enumerate(ranked.items, 1):
        row = _row(rank, r.candidate, r.score, show)
        if r.contributions:
            top = sorted(((k, v) for k, v in r.contributions.items() if k != "bias"), key=lambda kv: -abs(kv[1]))[:3]
            row["top features"] = ", ".join(f"{k} {v:+.3f}" for k, v in top)
        rows.append(row)
    t = ranked.timings_ms
    where = " inside Elasticsearch" if ranked.rerank == "plugin" else ""
    by = ranked.ranked_by if ranked.ranked_by is not None else f"nothing, retrieval order ({ranked.unranked_reason})"
    click.echo(
        f"path: {ranked.path}{' (cold start)' if ranked.cold_start else ''}; ranked by {by}{where}; "
        f"{len(ranked.items)} items; {t['total']:.1f} ms (retrieval {t['retrieval']:.1f}, features "
        f"{t['features']:.1f}, model {t['model']:.1f}); request {ranked.request_id}"
    )
    echo_table(rows)
