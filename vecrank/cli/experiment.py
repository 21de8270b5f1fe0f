"""``vecrank experiment``: create, list, show, start, stop, delete and report online experiments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from vecrank.cli._common import app, echo_json, echo_table, json_option
from vecrank.errors import VecrankError


def parse_arm(text: str) -> dict[str, Any]:
    """``NAME=MODEL[,weight=W][,KEY=VALUE...]``: MODEL is ``ID@VERSION``, ``ID`` (its active version,
    pinned now) or ``none``; other keys are retrieval settings (``pool``, ``num_candidates``...).

    Example:
        >>> parse_arm("treatment=vecrank@2,weight=3,pool=200")
        {'name': 'treatment', 'model': 'vecrank@2', 'weight': 3.0, 'retrieval': {'pool': '200'}}
    """
    name, sep, rest = text.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise ValueError(f"{text!r} is not NAME=MODEL[,weight=W][,KEY=VALUE...]")
    model, *pairs = [p.strip() for p in rest.split(",")]
    arm: dict[str, Any] = {"name": name.strip(), "model": model, "weight": 1.0, "retrieval": {}}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{pair!r} in {text!r} is not KEY=VALUE")
        if key.strip() == "weight":
            try:
                arm["weight"] = float(value)
            except ValueError:
                raise ValueError(f"weight {value!r} in {text!r} is not a number") from None
        else:
            arm["retrieval"][key.strip()] = value.strip()
    return arm


def _arms(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[dict[str, Any]]:
    try:
        return [parse_arm(v) for v in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _store():
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.rank.experiments import ExperimentStore

    ctx = app()
    return ExperimentStore(ctx.client, ctx.settings)


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group("experiment", short_help="A/B and interleaving experiments: create, start, stop, report.")
def experiment_command() -> None:
    """Experiments in <prefix>-experiments. The service (`vecrank serve`) assigns users of the
    running experiment to arms by hash(user, salt); `report` reads their events back."""


@experiment_command.command("create", short_help="Define an experiment (a draft until started).")
@click.argument("experiment_id")
@click.option(
    "--arm",
    "arms",
    multiple=True,
    callback=_arms,
    metavar="NAME=MODEL[,weight=W][,KEY=V]",
    help="An arm: MODEL is ID@VERSION, ID (its active version, pinned now) or none; KEY=V are retrieval "
    "settings (pool, num_candidates, mmr_lambda, ...). Repeat; the first is the control unless --control.",
)
@click.option(
    "--file",
    "file_",
    type=click.Path(dir_okay=False, exists=True),
    help="A JSON definition {type, arms: [{name, model, weight, retrieval}], holdout, ...} instead of --arm.",
)
@click.option(
    "--type",
    "type_",
    type=click.Choice(["ab", "interleaving"]),
    default=None,
    help="ab (users split between arms) or interleaving (two arms merged by team draft) [default: ab].",
)
@click.option(
    "--holdout",
    type=click.FloatRange(0, 0.5),
    default=None,
    help="Share of users kept on the default ranker [default: 0].",
)
@click.option("--control", default=None, help="The arm the others are compared with [default: the first].")
@click.option("--salt", default=None, help="Assignment salt [default: random]; reuse one only to repeat a split.")
@click.option(
    "--conversion",
    "conversion_types",
    multiple=True,
    metavar="TYPE",
    help="Event type(s) that count as a conversion [default: purchase].",
)
@click.option("--ndcg-k", type=click.IntRange(1, 1000), default=None, help="Depth of the click NDCG [default: 10].")
@click.option("--description", default=None)
@json_option
def experiment_create_command(
    experiment_id, arms, file_, type_, holdout, control, salt, conversion_types, ndcg_k, description, as_json
) -> None:
    """Create a draft experiment. Example:

    vecrank experiment create rerank-v2 --arm control=vecrank@1 --arm treatment=vecrank@2 --holdout 0.05
    """
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.rank.experiments import Arm, Experiment, resolve_model

    ctx = app()
    spec: dict[str, Any] = {}
    if file_:
        try:
            spec = json.loads(Path(file_).read_text())
        except (OSError, ValueError) as exc:
            raise click.BadParameter(f"cannot read {file_}: {exc}", param_hint="--file") from None
        if not isinstance(spec, dict):
            raise click.BadParameter(f"{file_} must hold a JSON object", param_hint="--file")
    if arms and spec.get("arms"):
        raise click.UsageError("give the arms with --arm or in --file, not both")
    arm_list = list(arms) or list(spec.get("arms") or [])
    if len(arm_list) < 2:
        raise click.UsageError("an experiment needs at least two arms (--arm NAME=MODEL, repeated)")
    options = {
        "type": type_,
        "holdout": holdout,
        "control": control,
        "salt": salt,
        "ndcg_k": ndcg_k,
        "description": description,
        "conversion_types": tuple(conversion_types) or None,
    }
    for key, value in options.items():
        if value is not None:
            spec[key] = value
    try:
        resolved: list[Arm] = []
        for arm in arm_list:
            arm = dict(arm)
            arm["model"] = resolve_model(ctx.client, ctx.settings, arm.get("model"))
            resolved.append(Arm.from_dict(arm))
        known = {"type", "holdout", "control", "salt", "ndcg_k", "description", "conversion_types", "click_types"}
        unknown = set(spec) - known - {"arms", "id", "experiment_id"}
        if unknown:
            raise click.UsageError(f"unknown key(s) in the definition: {', '.join(sorted(unknown))}")
        fields: dict[str, Any] = {k: tuple(v) if k.endswith("_types") else v for k, v in spec.items() if k in known}
        exp = Experiment(experiment_id=experiment_id, arms=tuple(resolved), **fields)
        exp = _store().create(exp)
    except VecrankError as exc:
        raise _fail(exc) from None
    _echo(
        exp,
        as_json,
        f"created experiment {exp.experiment_id} (draft); start it with "
        f"`vecrank experiment start {exp.experiment_id}`",
    )


def _echo(exp, as_json: bool, line: str | None = None) -> None:
    if as_json:
        echo_json(exp.summary())
        return
    if line:
        click.echo(line)
    _describe(exp)


def _describe(exp) -> None:
    shares = exp.expected_shares()
    click.echo(
        f"{exp.experiment_id}: {exp.type}, {exp.status}; control {exp.control}; holdout {exp.holdout:.1%}; "
        f"started {exp.summary()['started_at'] or '-'}, stopped {exp.summary()['stopped_at'] or '-'}"
    )
    rows = []
    for a in exp.arms:
        share = shares.get(a.name, shares.get("interleaved", 0.0))
        rows.append(
            {
                "arm": a.name,
                "model": a.model or "none",
                "weight": f"{a.weight:g}",
                "users": f"{share:.1%}",
                "retrieval": ", ".join(f"{k}={v}" for k, v in a.retrieval.items()) or "-",
            }
        )
    echo_table(rows)


@experiment_command.command("list", short_help="Every experiment and its status.")
@json_option
def experiment_list_command(as_json: bool) -> None:
    exps = _store().list()
    if as_json:
        echo_json([e.summary() for e in exps])
    elif exps:
        echo_table(
            [
                {
                    "id": e.experiment_id,
                    "type": e.type,
                    "status": e.status,
                    "arms": ", ".join(f"{a.name}={a.model or 'none'}" for a in e.arms),
                    "holdout": f"{e.holdout:.0%}",
                    "started": e.summary()["started_at"] or "-",
                    "stopped": e.summary()["stopped_at"] or "-",
                }
                for e in exps
            ]
        )
    else:
        click.echo("No experiments yet; create one with `vecrank experiment create`.")


@experiment_command.command("show", short_help="One experiment's definition.")
@click.argument("experiment_id")
@json_option
def experiment_show_command(experiment_id: str, as_json: bool) -> None:
    try:
        exp = _store().get(experiment_id)
    except VecrankError as exc:
        raise _fail(exc) from None
    _echo(exp, as_json)


@experiment_command.command("start", short_help="Start assigning users (one experiment runs at a time).")
@click.argument("experiment_id")
@json_option
def experiment_start_command(experiment_id: str, as_json: bool) -> None:
    try:
        exp = _store().start(experiment_id)
    except VecrankError as exc:
        raise _fail(exc) from None
    _echo(exp, as_json, f"started {experiment_id}; running services pick it up within their refresh interval")


@experiment_command.command("stop", short_help="Stop it; serving returns to the default ranker.")
@click.argument("experiment_id")
@click.confirmation_option("--yes", prompt="Stop this experiment? It cannot be started again")
@json_option
def experiment_stop_command(experiment_id: str, as_json: bool) -> None:
    try:
        exp = _store().stop(experiment_id)
    except VecrankError as exc:
        raise _fail(exc) from None
    _echo(exp, as_json, f"stopped {experiment_id}; `vecrank experiment report {experiment_id}` reads its results")


@experiment_command.command("delete", short_help="Delete a definition that is not running (events stay).")
@click.argument("experiment_id")
@click.confirmation_option("--yes", prompt="Delete this experiment's definition?")
def experiment_delete_command(experiment_id: str) -> None:
    try:
        _store().delete(experiment_id)
    except VecrankError as exc:
        raise _fail(exc) from None
    click.echo(f"deleted {experiment_id}")


def _fmt(x: Any, pct: bool = False, digits: int = 4) -> str:
    if x is None:
        return "-"
    return f"{x:.2%}" if pct else f"{x:.{digits}g}"


def _ci(ci: Any, pct: bool = False) -> str:
    return "-" if not ci else f"[{_fmt(ci[0], pct)}, {_fmt(ci[1], pct)}]"


def _call(result: dict[str, Any]) -> str:
    """A comparison's verdict for the table: significant, not significant, reference only, too few users."""
    if result.get("significant") is None:
        if result.get("p_value") is not None:
            return "reference only"
        return "too few users" if (result.get("note") or "").startswith("too few users") else "-"
    return "significant" if result["significant"] else "not significant"


@experiment_command.command(
    "report", short_help="Per-arm metrics with 95% intervals, lift, p-values, SRM check, plots."
)
@click.argument("experiment_id")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write one PNG per metric over time here [default: vecrank-experiments/<id>].",
)
@click.option("--no-plots", is_flag=True, help="Skip the PNGs.")
@click.option(
    "--bootstrap",
    "n_boot",
    type=click.IntRange(100, 100_000),
    default=2000,
    show_default=True,
    help="Bootstrap resamples of users.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--attribution-hours",
    type=click.FloatRange(0),
    default=24.0,
    show_default=True,
    help="How long after the end clicks and conversions still count.",
)
@click.option("--fail-on-srm", is_flag=True, help="Exit 1 when the sample-ratio check fails.")
@json_option
def experiment_report_command(
    experiment_id, out_dir, no_plots, n_boot, seed, attribution_hours, fail_on_srm, as_json
) -> None:
    """Report an experiment from its events: per arm exposures, CTR, clicks per user, conversion
    and NDCG from click positions; each arm against the control with a 95% interval, relative
    lift, p-value and call. CTR leads with users as clusters (`ctr`); `ctr_independent`, which
    assumes independent impressions, is shown for reference and never called. No test is called
    with fewer than 10 users per arm. A chi-square sample-ratio check; for interleaving, the
    preference with its interval, exact sign test and winner."""
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.rank.experiments import report

    ctx = app()
    try:
        rep = report(
            ctx.client,
            ctx.settings,
            experiment_id,
            n_boot=n_boot,
            seed=seed,
            attribution_ms=int(attribution_hours * 3_600_000),
        )
    except VecrankError as exc:
        raise _fail(exc) from None
    plots = [] if no_plots else rep.plot(out_dir or Path("vecrank-experiments") / experiment_id)
    data = rep.to_dict() | {"plots": plots}
    if rep.srm.mismatch:
        bar = "!" * 78
        click.echo(
            f"{bar}\n!! {rep.srm.message()}\n!! The split is broken: do not trust this experiment's results.\n{bar}",
            err=True,
        )
    if as_json:
        echo_json(data)
    else:
        exp = rep.experiment
        click.echo(
            f"{exp.experiment_id} ({exp.type}, {exp.status}) from {data['window']['start']} to "
            f"{data['window']['end']}; control {exp.control}"
        )
        echo_table(
            [
                {
                    "arm": name,
                    "users": s.users,
                    "requests": s.requests,
                    "exposures": s.exposures,
                    "clicks": s.clicks,
                    "ctr": _fmt(s.ctr, True),
                    "clicks/user": _fmt(s.clicks_per_user),
                    "conversion": _fmt(s.conversion, True),
                    f"ndcg@{exp.ndcg_k}": _fmt(s.ndcg),
                }
                for name, s in rep.arms.items()
            ]
        )
        rows: list[dict[str, Any]] = []
        notes: dict[str, Any] = {}
        for arm, metrics in rep.comparisons.items():
            for metric, r in metrics.items():
                pct = metric in ("ctr", "ctr_independent", "conversion")
                rows.append(
                    {
                        "vs control": arm,
                        "metric": metric,
                        "test": r["label"],
                        "control": _fmt(r["control"], pct),
                        "arm": _fmt(r["treatment"], pct),
                        "diff": _fmt(r["diff"], pct),
                        "95% CI": _ci(r["ci"], pct),
                        "lift": _fmt(r["relative_lift"], True),
                        "lift 95% CI": _ci(r["lift_ci"], True),
                        "p": _fmt(r["p_value"], digits=3),
                        "call": _call(r),
                    }
                )
                if r.get("note"):
                    notes.setdefault(r["note"], []).append(f"{arm} {metric}")
        if rows:
            click.echo("")
            echo_table(rows)
            click.echo(
                f"call: significant at p < {rep.alpha:g}; CTR reads `ctr` (users as clusters, Welch t); "
                f"no test is called below {rep.min_users} users per arm"
            )
            for note, where in notes.items():
                click.echo(f"note ({', '.join(where)}): {note}")
        if rep.interleaving is not None:
            p = rep.interleaving
            click.echo(
                f"\ninterleaving: {p.b} won {p.wins_b}, {p.a} won {p.wins_a}, ties {p.ties} of "
                f"{p.requests_with_clicks} requests with clicks ({p.users} users); share won by {p.b} "
                f"{_fmt(p.share_b)} 95% CI {_ci(p.ci)}, p {_fmt(p.p_value, digits=3)}; users preferring "
                f"{p.b}/{p.a}: {p.users_preferring_b}/{p.users_preferring_a}, exact sign test p "
                f"{_fmt(p.sign_test_p, digits=3)}; winner: {p.winner or 'none'}" + (f" ({p.note})" if p.note else "")
            )
        click.echo(f"\n{rep.srm.message()}")
        for w in rep.warnings:
            if not w.startswith("SAMPLE RATIO MISMATCH"):
                click.echo(f"warning: {w}", err=True)
        if plots:
            click.echo(f"plots: {', '.join(plots)}")
    if fail_on_srm and rep.srm.mismatch:
        raise click.exceptions.Exit(1)
