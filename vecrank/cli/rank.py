"""``vecrank evaluate``, ``vecrank train`` and ``vecrank model``: the XGBoost ranker's life cycle."""

from __future__ import annotations


import click

from vecrank.cli._common import app, json_option


def _spec(facets: tuple[str, ...], item_fields: tuple[str, ...], cooc: bool):
    from vecrank.rank.features import FeatureSpec

    return FeatureSpec(item_numeric=tuple(item_fields), facets=tuple(facets), cooc=cooc)


def _shared(fn):
    for decorator in reversed([
        click.option("--facet", "facets", multiple=True, metavar="FIELD",
                     help="Item facet for the user-item affinity feature (e.g. genres). Repeatable."),
        click.option("--item-field", "item_fields", multiple=True, metavar="FIELD",
                     help="Numeric item field used as a feature (e.g. year). Repeatable."),
        click.option("--horizon-days", type=click.FloatRange(1), default=180.0, show_default=True,
                     help="Label window after each cut: the user's positives in [cut, cut + H]."),
        click.option("--train-cuts", type=click.IntRange(1, 20), default=3, show_default=True,
                     help="Training cuts per user, spread over 50%-80% of their interactions; the latest "
                          "20%% of requests are the early-stopping slice."),
        click.option("--max-train-requests", type=click.IntRange(10), default=1500, show_default=True,
                     help="Replay at most this many training requests (the latest)."),
        click.option("--bucket-days", type=click.FloatRange(min=0.001), default=30.0, show_default=True,
                     help="Requests read signals and popular items as of the start of their bucket of this size."),
        click.option("--pool", type=click.IntRange(10, 1000), default=100, show_default=True,
                     help="Candidates retrieved and ranked per request."),
        click.option("--popular-mix", type=click.IntRange(0, 1000), default=50, show_default=True,
                     help="Popular items added to each kNN pool, so behaviour has candidates of its own."),
        click.option("--cooc/--no-cooc", default=True, show_default=True,
                     help="Co-occurrence (users who liked the user's recent likes also liked...) as a feature."),
        click.option("--cooc-mix", type=click.IntRange(0, 1000), default=50, show_default=True,
                     help="Co-liked items added to each pool (with --cooc)."),
        click.option("--objective", type=click.Choice(["rank:ndcg", "rank:pairwise", "rank:map"]),
                     default="rank:ndcg", show_default=True),
        click.option("--model-id", default="vecrank", show_default=True, help="Registry id of the model."),
        click.option("--activate", is_flag=True, help="Make the new version the active one."),
        click.option("--seed", type=int, default=0, show_default=True),
    ]):
        fn = decorator(fn)
    return fn


def _register(ctx, model, activate: bool):
    from vecrank.rank.model import Registry

    registry = Registry(ctx.client, ctx.settings)
    model = registry.register(model)
    if activate:
        model = registry.set_status(model.model_id, model.version, "active")
    return model


@click.command("evaluate", short_help="Train on the past, compare with baselines on what came next.")
@click.option("--test-fraction", type=click.FloatRange(0.01, 0.9), default=0.2, show_default=True,
              help="Share of the event timeline after the split time T.")
@click.option("--max-users", type=click.IntRange(1), default=None, help="Evaluate at most this many users.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="vecrank-eval", show_default=True,
              help="Folder for evaluation.json and evaluation.png.")
@click.option("--register/--no-register", default=True, show_default=True, help="Register the trained model.")
@_shared
@json_option
def evaluate_command(test_fraction, max_users, out_dir, register, facets, item_fields, horizon_days, train_cuts,
                     max_train_requests, bucket_days, pool, popular_mix, cooc, cooc_mix, objective, model_id, activate, seed,
                     as_json) -> None:
    """Train the ranker on replays before T (the 1 - test-fraction quantile of event times); hold
    out each later user's last test-fraction of interactions; compare NDCG@10, Recall@10/50, MRR,
    coverage and diversity with most-popular, co-occurrence, ALS and kNN-only on the same users.
    Read-only: the past is computed from the events, the index is not rewritten."""
    from vecrank.cli import echo_json, echo_table
    from vecrank.rank import Recommender
    from vecrank.rank.evaluate import EvalConfig, load_events, run, write_outputs
    from vecrank.rank.train import TrainConfig

    ctx = app()
    events = load_events(ctx.client, ctx.settings)
    if not events:
        raise click.ClickException(f"no events in {ctx.settings.index('events')}; run `vecrank ingest events` first")
    catalog = ctx.client.count(index=ctx.settings.index("items"))["count"]
    report = run(Recommender(ctx.client, ctx.settings), events, _spec(facets, item_fields, cooc), catalog_size=catalog,
                 config=EvalConfig(test_fraction=test_fraction, horizon_days=horizon_days, train_cuts=train_cuts,
                                   max_train_requests=max_train_requests, bucket_days=bucket_days,
                                   pool=pool, max_users=max_users, popular_mix=popular_mix, cooc_mix=cooc_mix),
                 train_config=TrainConfig(objective=objective, seed=seed), model_id=model_id)
    files = write_outputs(report, out_dir)
    result = {**report.to_dict(), "files": files}
    if register:
        model = _register(ctx, report.model, activate)
        result["model"] = {"id": model.model_id, "version": model.version, "status": model.status}
    if as_json:
        echo_json(result)
        return
    echo_table(report.table())
    c = report.comparison
    click.echo(f"\ncandidate pool recall@{pool}: {report.candidate_recall:.4f}; users: {report.split['evaluated_users']}")
    click.echo(f"vecrank NDCG@10 {c['ndcg@10_vecrank']:.4f} vs best other ({c['best_other']}) "
               f"{c['ndcg@10_best_other']:.4f}: ratio {c['ratio']}, difference {c['difference']:+.4f} "
               f"(95% CI {c['ci95'][0]:+.4f} .. {c['ci95'][1]:+.4f})")
    click.echo(f"wrote {files['json']} and {files['png']}")
    if register:
        click.echo(f"registered {result['model']['id']} v{result['model']['version']} ({result['model']['status']})")


@click.command("train", short_help="Train the ranker (replayed history or the serving log) and register it.")
@click.option("--from-log", is_flag=True,
              help="Train on the feature rows serving logged (same spec), labelled by later events within "
                   "--horizon-days, the latest 20%% of requests for early stopping.")
@_shared
@json_option
def train_command(from_log, facets, item_fields, horizon_days, train_cuts, max_train_requests, bucket_days, pool,
                  popular_mix, cooc, cooc_mix, objective, model_id, activate, seed, as_json) -> None:
    """Replay the whole event history (per-user cuts, the latest requests), or use the serving
    feature log, train and register a version."""
    from vecrank.rank import Recommender
    from vecrank.rank.evaluate import EvalConfig, load_events, train_model
    from vecrank.rank.model import RankerModel
    from vecrank.rank.train import TrainConfig, from_feature_log, select_ranker

    ctx = app()
    if from_log:
        spec = _spec(facets, item_fields, cooc)
        table = from_feature_log(ctx.client, ctx.settings, spec, horizon_days=horizon_days)
        if not any(table.label):
            raise click.ClickException(f"no labelled rows in {ctx.settings.index('feature-log')} for this feature "
                                       f"spec ({table.summary()['requests']} requests logged)")
        train, valid = table.split_by_time(0.2)
        config = TrainConfig(objective=objective, seed=seed)
        booster, info, config = select_ranker(train, valid, config)
        model = _register(ctx, RankerModel.from_booster(model_id, spec, booster, params=config.to_dict(), training={
            "source": "feature-log", "train": train.summary(), "valid": valid.summary(), **info,
            "horizon_days": horizon_days}), activate)
        _echo_trained(model, as_json)
        return
    events = load_events(ctx.client, ctx.settings)
    if not events:
        raise click.ClickException(f"no events in {ctx.settings.index('events')}; run `vecrank ingest events` first")
    end = max(int(e["timestamp"]) for e in events) + 1  # every event may label a training request
    model = train_model(Recommender(ctx.client, ctx.settings), events, _spec(facets, item_fields, cooc),
                        cutoff_ms=end, config=EvalConfig(horizon_days=horizon_days, train_cuts=train_cuts, pool=pool,
                                                         max_train_requests=max_train_requests,
                                                         bucket_days=bucket_days, popular_mix=popular_mix,
                                                         cooc_mix=cooc_mix),
                        train_config=TrainConfig(objective=objective, seed=seed), model_id=model_id)
    _echo_trained(_register(ctx, model, activate), as_json)


def _echo_trained(model, as_json: bool) -> None:
    from vecrank.cli import echo_json

    info = {"id": model.model_id, "version": model.version, "status": model.status, "training": model.training}
    if as_json:
        echo_json(info)
    else:
        click.echo(f"registered {model.model_id} v{model.version} ({model.status}); "
                   f"{model.training['train']['rows']} training rows, best iteration {model.training['best_iteration']}")


@click.group("model", short_help="List, show, activate and archive registered rankers.")
def model_command() -> None:
    """Ranker versions in <prefix>-models (also under <state>/models/)."""


@model_command.command("list", short_help="Every registered version.")
@json_option
def model_list_command(as_json: bool) -> None:
    from vecrank.cli import echo_json, echo_table
    from vecrank.rank.model import Registry

    ctx = app()
    models = Registry(ctx.client, ctx.settings).list()
    rows = [{"model": m.model_id, "version": m.version, "status": m.status, "objective": m.objective,
             "features": len(m.spec.names), "created_at": m.created_at,
             "ndcg@10": (m.metrics.get("comparison") or {}).get("ndcg@10_vecrank", "")} for m in models]
    if as_json:
        echo_json(rows)
    elif rows:
        echo_table(rows)
    else:
        click.echo("No models registered yet; run `vecrank evaluate` or `vecrank train`.")


@model_command.command("show", short_help="One version's features, metrics and training summary.")
@click.argument("model_id")
@click.argument("version", type=int, required=False)
def model_show_command(model_id: str, version: int | None) -> None:
    from vecrank.cli import echo_json
    from vecrank.rank.model import Registry

    ctx = app()
    model = Registry(ctx.client, ctx.settings).get(model_id, version)
    echo_json({k: v for k, v in model.to_doc().items() if k != "booster"})


@model_command.command("activate", short_help="Serve this version (the active one is archived).")
@click.argument("model_id")
@click.argument("version", type=int)
def model_activate_command(model_id: str, version: int) -> None:
    from vecrank.rank.model import Registry

    ctx = app()
    Registry(ctx.client, ctx.settings).set_status(model_id, version, "active")
    click.echo(f"{model_id} v{version} is active")


@model_command.command("archive", short_help="Archive this version.")
@click.argument("model_id")
@click.argument("version", type=int)
def model_archive_command(model_id: str, version: int) -> None:
    from vecrank.rank.model import Registry

    ctx = app()
    Registry(ctx.client, ctx.settings).set_status(model_id, version, "archived")
    click.echo(f"{model_id} v{version} is archived")


__all__ = ["evaluate_command", "model_command", "train_command"]
