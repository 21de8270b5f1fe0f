"""``vecrank cf``, ``vecrank evaluate``, ``vecrank train`` and ``vecrank model``: the collaborative
vectors and the XGBoost ranker's life cycle."""

from __future__ import annotations

import dataclasses
import functools

import click

from vecrank.cli._common import app, echo_json, echo_table, json_option
from vecrank.errors import VecrankError
from vecrank.ingest import indices


def _replay_config(ctx, facets: tuple[str, ...], item_fields: tuple[str, ...], pool: dict[str, int]):
    """The typed pool, state, collaborative and feature settings a model is trained and served with."""
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.rank.features import FeatureSpec
    from vecrank.rank.offline import PoolConfig, ReplayConfig
    from vecrank.rank.state import StateConfig

    live = indices.live_index(ctx.client, ctx.settings)
    if live is None:
        raise click.ClickException(
            f"no items index behind {indices.alias_name(ctx.settings)}; " "run `vecrank ingest items` first"
        )
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.rank.queries import flatten_mapping

    types = flatten_mapping(ctx.client.indices.get_mapping(index=live)[live]["mappings"]["properties"])
    unknown = [f for f in (*facets, *item_fields) if f not in types]
    if unknown:
        raise click.UsageError(
            f"no field {', '.join(unknown)} in {live}; its fields: "
            f"{', '.join(sorted(k for k in types if '.' not in k))}"
        )
    pool_config = PoolConfig(**pool)
    spec = FeatureSpec.for_fields(item_fields, facets, types, pool=pool_config.to_dict())
    return ReplayConfig(pool=pool_config, state=StateConfig(facets=tuple(facets)), spec=spec)


#: --pool-<source>: its default (PoolConfig's, which a test holds equal; the CLI does not import
#: the replay code to start) and what the source adds to the pool
POOL_OPTIONS = {
    "text": (100, "nearest items to the user's text profile."),
    "cf": (100, "highest collaborative scores."),
    "cooc": (50, "the user's most co-occurring items."),
    "seq": (50, "the items most likely to come next."),
    "ease": (50, "the highest EASE scores of the user's likes."),
    "popular": (50, "the most popular items (30 days)."),
    "trending": (50, "the trending items (7 days against the 30-day rate)."),
}


@dataclasses.dataclass(frozen=True)
class _Training:
    """The options evaluate and train share: what they replay and how they train."""

    facets: tuple[str, ...]
    item_fields: tuple[str, ...]
    horizon_days: float
    train_cuts: int
    max_train_requests: int
    bucket_days: float
    refits: int
    objective: str
    model_id: str
    activate: bool
    seed: int
    pool: dict[str, int]  # --pool-<source>, by source

    def replay_config(self, ctx):
        return _replay_config(ctx, self.facets, self.item_fields, self.pool)

    def eval_config(self, **more):
        """The replay settings as an ``EvalConfig``, with ``more`` of its fields."""
        # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
        from vecrank.rank.evaluate import EvalConfig

        return EvalConfig(
            refits=self.refits,
            horizon_days=self.horizon_days,
            train_cuts=self.train_cuts,
            max_train_requests=self.max_train_requests,
            bucket_days=self.bucket_days,
            **more,
        )

    def train_config(self):
        # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
        from vecrank.rank.train import TrainConfig

        return TrainConfig(objective=self.objective, seed=self.seed)


def _shared(fn):
    """``fn`` with the options of :class:`_Training`, which it receives as one ``training`` argument."""

    @functools.wraps(fn)
    def command(**kwargs):
        pool = {name: kwargs.pop(f"pool_{name}") for name in POOL_OPTIONS}
        shared = {f.name: kwargs.pop(f.name) for f in dataclasses.fields(_Training) if f.name != "pool"}
        return fn(training=_Training(**shared, pool=pool), **kwargs)

    for decorator in reversed(
        [
            click.option(
                "--facet",
                "facets",
                multiple=True,
                metavar="FIELD",
                help="Item facet for the user-item affinity feature (e.g. genres). Repeatable.",
            ),
            click.option(
                "--item-field",
                "item_fields",
                multiple=True,
                metavar="FIELD",
                help="Numeric item field as a feature (item.F), or a date field as the item's age at the "
                "request (age.F). Repeatable.",
            ),
            click.option(
                "--horizon-days",
                type=click.FloatRange(1),
                default=180.0,
                show_default=True,
                help="Label window after each cut: the user's likes in [cut, cut + H].",
            ),
            click.option(
                "--train-cuts",
                type=click.IntRange(1, 20),
                default=3,
                show_default=True,
                help="Training cuts per user, from 50% to 1 - test-fraction of their interactions before "
                "each ranker's instant; the latest 20% of requests choose the tree shape and stop it.",
            ),
            click.option(
                "--max-train-requests",
                type=click.IntRange(10),
                default=50_000,
                show_default=True,
                help="At most this many training requests per ranker (the latest).",
            ),
            click.option(
                "--bucket-days",
                type=click.FloatRange(min=0.001),
                default=1.0,
                show_default=True,
                help="Replayed requests read the signals as of the start of their bucket (a daily refresh).",
            ),
            click.option(
                "--refits",
                type=click.IntRange(2, 100),
                default=10,
                show_default=True,
                help="Refit instants at the i/refits quantiles of the interactions' times: the collaborative "
                "model, its neighbours, the ranker and the baselines are refitted at each.",
            ),
            *(
                click.option(
                    f"--pool-{name}",
                    type=click.IntRange(0, 1000),
                    default=default,
                    show_default=True,
                    help=f"Pool: {what}",
                )
                for name, (default, what) in POOL_OPTIONS.items()
            ),
            click.option(
                "--objective",
                type=click.Choice(["rank:ndcg", "rank:pairwise", "rank:map"]),
                default="rank:ndcg",
                show_default=True,
            ),
            click.option("--model-id", default="vecrank", show_default=True, help="Registry id of the model."),
            click.option("--activate", is_flag=True, help="Make the new version the active one."),
            click.option("--seed", type=int, default=0, show_default=True),
        ]
    ):
        command = decorator(command)
    return command


def _registered(ctx, report, files: dict[str, str], *, register: bool, activate: bool) -> dict:
    """An evaluation's JSON result: the report, its files, and the model it trained on
    everything, registered (and activated) when asked."""
    result = {**report.to_dict(), "files": files}
    if register and report.model is not None:
        model, refreshed = _register(ctx, report.model, activate)
        result["model"] = {"id": model.model_id, "version": model.version, "status": model.status}
        if refreshed is not None:
            result["model"]["users_refreshed"] = refreshed
    return result


def _register(ctx, model, activate: bool):
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.rank.model import Registry

    model = Registry(ctx.client, ctx.settings).register(model)
    if not activate:
        return model, None
    return _activate(ctx, model.model_id, model.version)


def _activate(ctx, model_id: str, version: int, *, skip_users: bool = False):
    """Make a version active and recompute every user's stored state with its state rule, so that
    its requests read them with the user document alone (else each computes a stale one on the
    fly, one read more). Returns the model and how many users were recomputed (None: not
    recomputed, skipped or no rule recorded)."""
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.rank.model import Registry
    from vecrank.rank.offline import ReplayConfig
    from vecrank.rank.store import refresh_all_users

    model = Registry(ctx.client, ctx.settings).set_status(model_id, version, "active")
    config = (model.training or {}).get("config")
    if not config or skip_users:
        return model, None
    return model, refresh_all_users(ctx.client, ctx.settings, config=ReplayConfig.from_dict(config).state)


# --- cf -------------------------------------------------------------------------------------------


@click.group("cf", short_help="Collaborative item vectors and neighbours from the events.")
def cf_command() -> None:
    """Implicit ALS item factors, co-occurrence and sequence neighbours, fitted from the events
    index and written as the next items version (a second dense_vector, cf_vector)."""


@cf_command.command("fit", short_help="Fit from every event; write the next items version; refresh users.")
@click.option("--factors", type=click.IntRange(1, 1024), default=64, show_default=True, help="Latent dimensions.")
@click.option("--regularization", type=click.FloatRange(0), default=0.05, show_default=True)
@click.option(
    "--alpha",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Confidence of a positive event.",
)
@click.option("--iterations", type=click.IntRange(1, 200), default=15, show_default=True)
@click.option(
    "--neighbours",
    type=click.IntRange(1, 1000),
    default=50,
    show_default=True,
    help="Co-liked items that count per item (and sequence followers kept).",
)
@click.option("--no-switch", is_flag=True, help="Build and verify the new version but leave the alias.")
@click.option("--skip-users", is_flag=True, help="Do not refresh the users' stored vectors and scores.")
@json_option
def cf_fit_command(factors, regularization, alpha, iterations, neighbours, no_switch, skip_users, as_json) -> None:
    """Readers keep the live version until the alias moves in one atomic request; the old version
    stays for `vecrank index rollback`. Then every user's stored state (their fold-in vector,
    co-occurrence and sequence scores) is recomputed against the new model."""
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.ingest.cf import CFConfig, fit_index
    from vecrank.rank.store import refresh_all_users

    ctx = app()
    config = CFConfig(
        factors=factors, regularization=regularization, alpha=alpha, iterations=iterations, neighbours=neighbours
    )
    try:
        summary = fit_index(ctx.client, ctx.settings, config, switch=not no_switch).to_dict()
        if summary["switched"] and not skip_users:
            summary["users_refreshed"] = refresh_all_users(ctx.client, ctx.settings)
    except VecrankError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        echo_json(summary)
    else:
        echo_table([{"key": k, "value": v} for k, v in summary.items() if k != "failures"])


# --- evaluate / train -------------------------------------------------------------------------------


@click.command("evaluate", short_help="Rolling refits: every system fitted on the past, tested on what came next.")
@click.option(
    "--test-fraction",
    type=click.FloatRange(0.01, 0.9),
    default=0.2,
    show_default=True,
    help="Each user's held-out share of interactions.",
)
@click.option(
    "--first-test-quantile",
    type=click.FloatRange(0.01, 0.9),
    default=None,
    help="Test cuts come after this quantile of the interactions' times (the burn-in before it); "
    "default 0.2 for the recommendation task, 0.5 for search (its rankers learn from the "
    "searches before).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="vecrank-eval",
    show_default=True,
    help="Folder for evaluation.json and evaluation.png.",
)
@click.option(
    "--register/--no-register",
    default=True,
    show_default=True,
    help="Also train the serving model on everything and register it (recommendation task).",
)
@click.option(
    "--task",
    type=click.Choice(["recommend", "search"]),
    default="recommend",
    show_default=True,
    help="recommend: the profile path against the collaborative baselines; search: requests from a "
    "search log (--searches) against BM25, the query kNN and their hybrid.",
)
@click.option(
    "--searches",
    "searches_path",
    type=click.Path(dir_okay=False, exists=True),
    metavar="FILE",
    help="The search log for --task search: rows with user, query, item (chosen) and timestamp "
    "(JSONL, CSV or Parquet).",
)
@_shared
@json_option
def evaluate_command(
    test_fraction, first_test_quantile, out_dir, register, task, searches_path, training, as_json
) -> None:
    """At each refit instant, vecrank (collaborative model, neighbours, ranker) and the baselines
    (popular, co-occurrence, item-kNN, ALS, EASE, text kNN) are fitted on the events before it;
    each user whose last test-fraction of interactions starts after the burn-in is tested once,
    by the systems of the last refit before their cut. NDCG@10, Recall@10/50, MRR, coverage and
    diversity with bootstrap intervals, the paired difference to every baseline, and a cold-item
    slice. Read-only: the past is computed from the events, the index is not rewritten."""
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.rank.evaluate import load_past, run, write_outputs

    ctx = app()
    replay = training.replay_config(ctx)
    if first_test_quantile is None:
        first_test_quantile = 0.5 if task == "search" else 0.2
    config = training.eval_config(test_fraction=test_fraction, first_test_quantile=first_test_quantile)
    if task == "search":
        if searches_path is None:
            raise click.UsageError("--task search needs --searches FILE (a search log)")
        _evaluate_search(ctx, replay, config, searches_path, out_dir, training, as_json, register=register)
        return
    try:
        past = load_past(ctx.client, ctx.settings, replay_config=replay, config=config)
        report = run(
            past,
            replay_config=replay,
            config=config,
            model_id=training.model_id,
            final_model=register,
            train_config=training.train_config(),
        )
    except VecrankError as exc:
        raise click.ClickException(str(exc)) from None
    result = _registered(ctx, report, write_outputs(report, out_dir), register=register, activate=training.activate)
    summary = (
        f"pool recall: {report.candidate_recall.get('pool', 0):.4f}; users: {report.split['evaluated_users']}"
        f" ({report.slices['cold_items']['users']} with cold items); {report.seconds:.0f} s"
    )
    more = []
    if cold := report.slices["cold_items"].get("comparison"):
        more.append(
            f"cold items: vecrank Recall@50 {cold['recall@50_vecrank']:.4f} vs best collaborative "
            f"({cold['best_other']}) {cold['recall@50_best_other']:.4f}: ratio {cold['ratio']}"
        )
    _echo_evaluation(report, result, as_json, summary=summary, more=more)


def _echo_evaluation(
    report, result: dict, as_json: bool, *, summary: str, more: list[str] | None = None, model_note: str = ""
) -> None:
    """An evaluation's JSON result, or for people its table, ``summary``, the comparison with the
    best other system, ``more`` lines, the files written and the model registered (``model_note``
    after its status)."""
    if as_json:
        echo_json(result)
        return
    echo_table(report.table())
    c = report.comparison
    click.echo(f"\n{summary}")
    click.echo(
        f"vecrank NDCG@10 {c['ndcg@10_vecrank']:.4f} vs best other ({c['best_other']}) "
        f"{c['ndcg@10_best_other']:.4f}: ratio {c['ratio']}, difference {c['difference']:+.4f} "
        f"(95% CI {c['ci95'][0]:+.4f} .. {c['ci95'][1]:+.4f})"
    )
    for line in more or []:
        click.echo(line)
    click.echo(f"wrote {result['files']['json']} and {result['files']['png']}")
    if "model" in result:
        model = result["model"]
        click.echo(f"registered {model['id']} v{model['version']} ({model['status']}){model_note}")
        if "users_refreshed" in model:
            click.echo(f"{model['users_refreshed']} users' states recomputed for its rule")


def _evaluate_search(
    ctx, replay, config, searches_path: str, out_dir: str, training: _Training, as_json: bool, *, register: bool
) -> None:
    """``evaluate --task search``: the search rankers and the baselines on the search log's
    requests; with ``register``, the search model trained on every request (``<model_id>-search``)."""
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.rank import search_eval
    from vecrank.rank.evaluate import load_past
    from vecrank.rank.model import search_model_id
    from vecrank.rank.recommender import Recommender

    try:
        searches = search_eval.read_searches(searches_path)
        past = load_past(ctx.client, ctx.settings, replay_config=replay, config=config)
        report = search_eval.run(
            Recommender(ctx.client, ctx.settings),
            past,
            searches,
            replay_config=replay,
            horizon_days=config.horizon_days,
            first_test_quantile=config.first_test_quantile,
            train_config=training.train_config(),
            final_model=register,
            model_id=search_model_id(training.model_id),
            progress=not as_json,
        )
    except VecrankError as exc:
        raise click.ClickException(str(exc)) from None
    files = search_eval.write_outputs(report, out_dir)
    _echo_evaluation(
        report,
        _registered(ctx, report, files, register=register, activate=training.activate),
        as_json,
        summary=f"pool recall: {report.candidate_recall['pool']:.4f}; {report.split['evaluated_requests']} requests "
        f"of {report.split['evaluated_users']} users; {report.seconds:.0f} s",
        model_note=": requests with search text are ranked by it",
    )


@click.command("train", short_help="Fit the collaborative vectors, train the ranker on replays (or the log), register.")
@click.option(
    "--from-log",
    is_flag=True,
    help="Train on the feature rows serving logged (same spec), labelled by later likes within "
    "--horizon-days, the latest 20% of requests choosing the shape and stopping it. The replay "
    "options (--train-cuts, --max-train-requests, --bucket-days, --refits) do not apply; the "
    "pool options are recorded with the model, which serving then uses.",
)
@click.option("--skip-cf-fit", is_flag=True, help="Keep the live collaborative vectors (no `vecrank cf fit` first).")
@_shared
@json_option
def train_command(from_log, skip_cf_fit, training, as_json) -> None:
    """Replay the whole history (per-user cuts, each request seeing only what existed before it),
    or use the serving feature log; train and register a version. The model records its pool,
    user-state and collaborative settings, and serving uses them."""
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.ingest.cf import fit_index
    from vecrank.rank.evaluate import fit_rankers, load_past
    from vecrank.rank.model import RankerModel
    from vecrank.rank.store import live_cf_meta, refresh_all_users
    from vecrank.rank.train import fit_ranker, from_feature_log

    ctx = app()
    replay = training.replay_config(ctx)
    train_config = training.train_config()
    horizon_days, model_id = training.horizon_days, training.model_id
    try:
        if not skip_cf_fit:
            fit_index(ctx.client, ctx.settings, replay.cf)
            refresh_all_users(ctx.client, ctx.settings, config=replay.state)
        elif (live := live_cf_meta(ctx.client, ctx.settings)) is not None:
            replay = dataclasses.replace(replay, cf=live.config)  # the model records the factors it is served with
        if from_log:
            table = from_feature_log(ctx.client, ctx.settings, replay.spec, horizon_days=horizon_days)
            if not any(table.label):
                raise click.ClickException(
                    f"no labelled rows in {ctx.settings.index('feature-log')} for this "
                    f"feature spec ({table.summary()['requests']} requests logged)"
                )
            booster, info, chosen = fit_ranker(table, train_config)
            model = RankerModel.from_booster(
                model_id,
                replay.spec,
                booster,
                params=chosen.to_dict(),
                training={
                    "source": "feature-log",
                    **info,
                    "horizon_days": horizon_days,
                    "config": replay.to_dict(),
                },
            )
        else:
            config = training.eval_config()
            past = load_past(ctx.client, ctx.settings, replay_config=replay, config=config)
            models, _ = fit_rankers(
                past, [None], replay_config=replay, config=config, train_config=train_config, model_id=model_id
            )
            if None not in models:
                raise click.ClickException("no training request has a later like: nothing to learn from")
            model = models[None]
        registered, refreshed = _register(ctx, model, training.activate)
        _echo_trained(registered, refreshed, as_json)
    except VecrankError as exc:
        raise click.ClickException(str(exc)) from None


def _echo_trained(model, refreshed: int | None, as_json: bool) -> None:
    info = {"id": model.model_id, "version": model.version, "status": model.status, "training": model.training}
    if refreshed is not None:
        info["users_refreshed"] = refreshed
    if as_json:
        echo_json(info)
    else:
        click.echo(
            f"registered {model.model_id} v{model.version} ({model.status}); "
            f"{model.training['train']['rows']} training rows, best iteration {model.training['best_iteration']}"
            + (f"; {refreshed} users' states recomputed for its rule" if refreshed is not None else "")
        )


@click.group("model", short_help="List, show, activate and archive registered rankers.")
def model_command() -> None:
    """Ranker versions in <prefix>-models (also under <state>/models/)."""


@model_command.command("list", short_help="Every registered version.")
@json_option
def model_list_command(as_json: bool) -> None:
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.rank.model import Registry

    ctx = app()
    models = Registry(ctx.client, ctx.settings).list()
    rows = [
        {
            "model": m.model_id,
            "version": m.version,
            "status": m.status,
            "objective": m.objective,
            "features": len(m.spec.names),
            "created_at": m.created_at,
            "ndcg@10": (m.metrics.get("comparison") or {}).get("ndcg@10_vecrank", ""),
        }
        for m in models
    ]
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
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.rank.model import Registry

    ctx = app()
    model = Registry(ctx.client, ctx.settings).get(model_id, version)
    echo_json({k: v for k, v in model.to_doc().items() if k != "booster"})


@model_command.command("activate", short_help="Serve this version (the active one is archived).")
@click.argument("model_id")
@click.argument("version", type=int)
@click.option(
    "--skip-users",
    is_flag=True,
    help="Do not recompute the users' stored states for this model's rule "
    "(requests then compute stale ones on the fly, one read more).",
)
def model_activate_command(model_id: str, version: int, skip_users: bool) -> None:
    """Every user's stored state is recomputed with the activated model's state rule, so that its
    requests read them with the user document alone."""
    ctx = app()
    _, refreshed = _activate(ctx, model_id, version, skip_users=skip_users)
    click.echo(f"{model_id} v{version} is active")
    if refreshed is not None:
        click.echo(f"{refreshed} users' states recomputed for its rule")


@model_command.command("archive", short_help="Archive this version.")
@click.argument("model_id")
@click.argument("version", type=int)
def model_archive_command(model_id: str, version: int) -> None:
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.rank.model import Registry

    ctx = app()
    Registry(ctx.client, ctx.settings).set_status(model_id, version, "archived")
    click.echo(f"{model_id} v{version} is archived")


__all__ = ["cf_command", "evaluate_command", "model_command", "train_command"]
