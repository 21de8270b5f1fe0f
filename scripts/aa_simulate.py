#!/usr/bin/env python3
"""A/A simulations: how often does each test of ``vecrank experiment report`` cry wolf?

Each simulated experiment compares two arms that are the same ranker, so every "significant"
result is a false positive, and a test at the 5% level should be significant in about 5% of
runs, whatever the number of users. Users differ the way real ones do:

* each user has their own click propensity, ``Beta(--beta-a, --beta-b)`` (mean 0.1, sd 0.11 by
  default), and converts (a ``purchase``) with probability ``1 - 0.7 ** clicks``;
* users make ``1 + NegativeBinomial(1, 1 / --requests)`` requests (mean ``--requests``, a long
  tail of heavy users), each showing 3 to ``--k`` items; a shown item at position p is clicked
  with probability ``propensity * 2 / (1 + p) ** 0.5`` (a position bias), capped at 1.

Two designs, each at every ``--users`` count:

* ``ab``: ``n`` users in each of two arms (exactly, so the sample-ratio check sees a fair split);
* ``interleaving``: ``n`` interleaved users and ``n`` in the holdout; per request both "rankers"
  are independent random orders of the same 40 items, merged by :func:`team_draft`, and a click
  credits the team of its item (:func:`credit`, :func:`outcome`) — the service's own functions.

With ``--level report`` (the default) every simulated experiment becomes stored-event documents
(impressions with request id, position and arm label; clicks and purchases citing the request
id) and goes through :func:`vecrank.rank.experiments.analyse`, the function behind ``vecrank
experiment report``, so the tests counted are exactly the report's: every entry of
``comparisons``, the sample-ratio check, the interleaving winner and p-values. ``--level
statistics`` skips the events: the same per-user values go straight into the functions
``analyse`` calls (:func:`compare`, :func:`preference`, :func:`srm_test`), several times faster
(``tests/test_aa.py`` uses it, and checks that both levels give identical results).

A test counts as significant where the report calls it so (its ``significant`` field). The
report never calls ``ctr_independent`` (it assumes independent impressions; ``significant`` is
None): for it, and for reports from before the ``significant`` field, a p-value below
``--alpha`` counts, and the row says ``[reference only]``.

Output: per design, users and test, the share of experiments in which the test gave a p-value at
all (``tested``: below the report's minimum number of users it gives none and calls nothing),
the false-positive rate (significant / all experiments) with a Clopper-Pearson 95% interval and
its ratio to the nominal level; ``--json`` prints the same as JSON on stdout. A progress bar
goes to stderr.

Example:
    .venv/bin/python scripts/aa_simulate.py --sims 200 --users 3 10 200 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest
from tqdm import tqdm

from vecrank.rank.experiment_report import UserValues, compare
from vecrank.rank.experiments import HOLDOUT, INTERLEAVED, Arm, Experiment, analyse
from vecrank.rank.interleaving import credit, outcome, preference, team_draft
from vecrank.rank.stats import click_ndcg, srm_test

T0 = 1_700_000_000_000
CATALOG = tuple(f"i{j}" for j in range(40))
DESIGNS = ("ab", "interleaving")
LEVELS = ("report", "statistics")


@dataclass(frozen=True)
class Population:
    """How simulated users behave (see the module docstring)."""

    beta_a: float = 0.6
    beta_b: float = 5.4
    requests: float = 4.0
    k: int = 10
    conversion_per_click: float = 0.3


@dataclass(frozen=True)
class SimRequest:
    request_id: str
    shown: tuple[tuple[str, str], ...]  # (item, team or unit), best first
    clicked: tuple[int, ...]  # indices into shown


@dataclass(frozen=True)
class SimUser:
    user: str
    unit: str  # an arm, "interleaved" or "holdout"
    requests: tuple[SimRequest, ...]
    converted: bool


def _experiment(design: str) -> Experiment:
    if design == "ab":
        return Experiment(
            "aa", arms=(Arm("control"), Arm("treatment")), salt="aa", started_at=T0, stopped_at=T0 + 10**9
        )
    if design == "interleaving":
        return Experiment(
            "aa",
            arms=(Arm("A"), Arm("B")),
            type="interleaving",
            salt="aa",
            holdout=0.5,
            started_at=T0,
            stopped_at=T0 + 10**9,
        )
    raise ValueError(f"design must be one of {', '.join(DESIGNS)}, not {design!r}")


def simulate_users(
    design: str, n_users: int, rng: np.random.Generator, pop: Population = Population()
) -> tuple[Experiment, list[SimUser]]:
    """One A/A experiment of ``design``: ``n_users`` per arm (A/B) or per unit (interleaving)."""
    exp = _experiment(design)
    units = ("control", "treatment") if design == "ab" else (INTERLEAVED, HOLDOUT)
    orders = random.Random(int(rng.integers(2**63)))  # the rankers' random orders, fast
    n_items = range(len(CATALOG))
    users: list[SimUser] = []
    for unit in units:
        propensity = rng.beta(pop.beta_a, pop.beta_b, n_users)
        n_requests = 1 + rng.negative_binomial(1, 1 / pop.requests, n_users)
        sizes = rng.integers(3, pop.k + 1, int(n_requests.sum()))
        positions = np.concatenate([np.arange(1, size + 1) for size in sizes])
        owner = np.repeat(np.repeat(np.arange(n_users), n_requests), sizes)  # the user of each impression
        clicks = (rng.random(len(positions)) < np.minimum(1.0, propensity[owner] * 2 / np.sqrt(1 + positions))).tolist()
        converts = rng.random(n_users)
        start = 0
        request = 0
        for u in range(n_users):
            name, requests, n_clicks = f"{unit}-u{u}", [], 0
            for r in range(int(n_requests[u])):
                size, rid = int(sizes[request]), f"{unit}-u{u}-r{r}"
                if unit == INTERLEAVED:
                    lists = {a.name: [CATALOG[j] for j in orders.sample(n_items, size)] for a in exp.arms}
                    shown = tuple(team_draft(lists, size, seed=rid))
                else:  # which items does not matter to any test of one ranker's list, only how many
                    shown = tuple((item, unit) for item in CATALOG[:size])
                clicked = tuple(i for i, c in enumerate(clicks[start : start + size]) if c)
                requests.append(SimRequest(rid, shown, clicked))
                n_clicks += len(clicked)
                start += size
                request += 1
            converted = bool(converts[u] < 1 - (1 - pop.conversion_per_click) ** n_clicks)
            users.append(SimUser(name, unit, tuple(requests), converted))
    return exp, users


def to_events(exp: Experiment, users: Sequence[SimUser]) -> list[dict[str, Any]]:
    """The stored-event documents the service would have written for ``users``."""
    events: list[dict[str, Any]] = []
    ts = T0 + 1
    for user in users:
        for req in user.requests:
            for pos, (item, team) in enumerate(req.shown, 1):
                events.append(
                    {
                        "user_id": user.user,
                        "item_id": item,
                        "type": "impression",
                        "timestamp": ts,
                        "request_id": req.request_id,
                        "position": pos,
                        "arm": exp.label(team),
                    }
                )
            events += [
                {
                    "user_id": user.user,
                    "item_id": req.shown[i][0],
                    "type": "click",
                    "timestamp": ts + 1,
                    "request_id": req.request_id,
                }
                for i in req.clicked
            ]
            ts += 10
        if user.converted:
            events.append(
                {"user_id": user.user, "item_id": "i0", "type": "purchase", "timestamp": ts, "request_id": None}
            )
    return events


def report_level(exp: Experiment, users: Sequence[SimUser], *, n_boot: int, seed: int, alpha: float) -> dict[str, Any]:
    """The experiment through the whole report: events, attribution, :func:`analyse`."""
    return analyse(exp, to_events(exp, users), n_boot=n_boot, seed=seed, series_points=1, alpha=alpha).to_dict()


def _mean(values: list[float]) -> float:
    """``float(np.mean(values))`` as :func:`analyse` computes it, without numpy's overhead for one value."""
    return values[0] if len(values) == 1 else float(np.mean(values))


def statistics_level(
    exp: Experiment, users: Sequence[SimUser], *, n_boot: int, seed: int, alpha: float
) -> dict[str, Any]:
    """The same tests straight from the users' outcomes: the functions :func:`analyse` calls
    (:func:`compare`, :func:`preference`, :func:`srm_test`) on the same per-user values, without
    events and attribution (fast; ``tests/test_aa.py`` checks both levels agree)."""
    by_unit: dict[str, list[SimUser]] = {u: [] for u in exp.expected_shares()}
    for user in users:
        by_unit[user.unit].append(user)
    values = {
        unit: UserValues.of(
            clicks=[sum(len(r.clicked) for r in us.requests) for us in group],
            exposures=[sum(len(r.shown) for r in us.requests) for us in group],
            ndcg=[_mean([click_ndcg([i + 1 for i in r.clicked], k=exp.ndcg_k) for r in us.requests]) for us in group],
            converted=[float(us.converted) for us in group],
        )
        for unit, group in by_unit.items()
    }
    options = {"n_boot": n_boot, "seed": seed, "alpha": alpha}
    srm = srm_test({u: v.users for u, v in values.items()}, exp.expected_shares())
    if exp.type == "ab":
        return {
            "comparisons": {"treatment": compare(values["control"], values["treatment"], **options)},
            "srm": srm.to_dict(),
            "interleaving": None,
        }
    a, b = exp.control, next(x.name for x in exp.arms if x.name != exp.control)
    wins: dict[str, list[int]] = {}
    for us in by_unit[INTERLEAVED]:
        for r in us.requests:
            result = outcome(credit(dict(r.shown), [r.shown[i][0] for i in r.clicked]), a, b)
            if result is not None:
                wins.setdefault(us.user, [0, 0, 0])[0 if result == a else 1 if result == b else 2] += 1
    comparisons = compare(
        values[HOLDOUT], values[INTERLEAVED], metrics=("ctr", "clicks_per_user", "ctr_independent"), **options
    )
    return {
        "comparisons": {INTERLEAVED: comparisons},
        "srm": srm.to_dict(),
        "interleaving": preference(wins, a, b, alpha=alpha).to_dict(),
    }


def _called(result: Mapping[str, Any], alpha: float) -> bool:
    """The report's call where it makes one, else (a reference-only test, or a report from before
    ``significant`` existed) what the p-value says at ``alpha``."""
    if result.get("significant") is not None:
        return bool(result["significant"])
    p = result.get("p_value")
    return p is not None and p < alpha


def reference_only(result: Mapping[str, Any]) -> bool:
    """A result the report shows but never calls (``significant`` None although it has a p-value)."""
    return "significant" in result and result["significant"] is None and result.get("p_value") is not None


def significant_tests(report: Mapping[str, Any], alpha: float) -> dict[str, tuple[bool, bool]]:
    """``{test: (significant, tested)}`` for every test in a report's ``to_dict()``: ``tested``
    where the test gave a p-value (not, say, below the report's minimum number of users).
    Reference-only tests (see :func:`reference_only`) are named with a ``[reference only]`` suffix."""
    out: dict[str, tuple[bool, bool]] = {}
    for unit, metrics in report["comparisons"].items():
        for metric, result in metrics.items():
            name = f"{metric} ({unit} vs control)" if unit != "interleaved" else f"{metric} (interleaved vs holdout)"
            out[name + (" [reference only]" if reference_only(result) else "")] = (
                _called(result, alpha),
                result.get("p_value") is not None,
            )
    srm = report["srm"]
    out["srm"] = (bool(srm["mismatch"]), srm["p_value"] is not None)
    pref = report.get("interleaving")
    if pref:
        tested = pref["p_value"] is not None
        out["interleaving winner"] = (pref["winner"] is not None, tested)
        out["interleaving p_value"] = (tested and pref["p_value"] < alpha, tested)
        out["interleaving sign_test_p"] = (
            pref["sign_test_p"] is not None and pref["sign_test_p"] < alpha,
            pref["sign_test_p"] is not None,
        )
    return out


def run(
    *,
    sims: int = 200,
    users: Sequence[int] = (3, 10, 200),
    designs: Sequence[str] = DESIGNS,
    seed: int = 0,
    alpha: float = 0.05,
    n_boot: int = 2000,
    pop: Population = Population(),
    level: str = "report",
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``sims`` A/A experiments per design and user count; the false-positive rate of each test.

    ``level``: ``report`` (events through :func:`analyse`) or ``statistics`` (:func:`statistics_level`).
    """
    if sims < 1:
        raise ValueError(f"sims must be at least 1, not {sims}")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    evaluate = report_level if level == "report" else statistics_level
    cells = [(d, n) for d in designs for n in users]
    bar = tqdm(total=sims * len(cells), desc="A/A experiments", unit="exp", file=sys.stderr, disable=not progress)
    results: list[dict[str, Any]] = []
    for di, (design, n) in enumerate(cells):
        hits: dict[str, int] = {}
        tested: dict[str, int] = {}
        runs: dict[str, int] = {}
        for s in range(sims):
            rng = np.random.default_rng([seed, di, n, s])
            exp, sim_users = simulate_users(design, n, rng, pop)
            rep = evaluate(exp, sim_users, n_boot=n_boot, seed=s, alpha=alpha)
            for test, (sig, with_p) in significant_tests(rep, alpha).items():
                hits[test] = hits.get(test, 0) + int(sig)
                tested[test] = tested.get(test, 0) + int(with_p)
                runs[test] = runs.get(test, 0) + 1
            bar.update()
        for test in sorted(runs, key=_order):
            k, m = hits[test], runs[test]
            ci = binomtest(k, m).proportion_ci(0.95, method="exact")
            results.append(
                {
                    "design": design,
                    "users": n,
                    "test": test,
                    "significant": k,
                    "tested": tested[test],
                    "sims": m,
                    "rate": k / m,
                    "ci95": [float(ci.low), float(ci.high)],
                    "ratio_to_nominal": k / m / alpha,
                }
            )
    bar.close()
    return {
        "sims": sims,
        "users": list(users),
        "designs": list(designs),
        "seed": seed,
        "alpha": alpha,
        "n_boot": n_boot,
        "level": level,
        "population": asdict(pop),
        "results": results,
    }


def _order(test: str) -> tuple[int, str]:
    lead = (
        "ctr ",
        "ctr_independent",
        "conversion",
        "clicks_per_user",
        "ndcg",
        "interleaving winner",
        "interleaving p_value",
        "interleaving sign_test_p",
        "srm",
    )
    return next((i for i, p in enumerate(lead) if test.startswith(p)), len(lead)), test


def _rows(summary: Mapping[str, Any]) -> Iterator[str]:
    yield (
        f"{'design':<13} {'users':>5}  {'test':<58} {'tested':>7} {'false pos.':>10}  {'95% CI':<16} "
        f"{'x nominal':>9}"
    )
    for r in summary["results"]:
        lo, hi = r["ci95"]
        yield (
            f"{r['design']:<13} {r['users']:>5}  {r['test']:<58} {r['tested'] / r['sims']:>7.0%} {r['rate']:>9.1%}  "
            f"[{lo:5.1%}, {hi:5.1%}]  {r['ratio_to_nominal']:>8.2f}x"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=200, help="A/A experiments per design and user count [200]")
    parser.add_argument(
        "--users",
        type=int,
        nargs="+",
        default=[3, 10, 200],
        help="users per arm (A/B) and per unit (interleaving) [3 10 200]",
    )
    parser.add_argument("--design", dest="designs", choices=DESIGNS, nargs="+", default=list(DESIGNS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument(
        "--bootstrap",
        dest="n_boot",
        type=int,
        default=2000,
        help="resamples per bootstrap, as the report's --bootstrap [2000]",
    )
    parser.add_argument("--beta-a", type=float, default=Population.beta_a)
    parser.add_argument("--beta-b", type=float, default=Population.beta_b)
    parser.add_argument("--requests", type=float, default=Population.requests, help="mean requests per user [4]")
    parser.add_argument("--k", type=int, default=Population.k, help="most items per list [10]")
    parser.add_argument(
        "--level",
        choices=LEVELS,
        default="report",
        help="report: events through the report's analyse(); statistics: the same test functions "
        "on per-user values, faster [report]",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    pop = Population(beta_a=args.beta_a, beta_b=args.beta_b, requests=args.requests, k=args.k)
    summary = run(
        sims=args.sims,
        users=args.users,
        designs=args.designs,
        seed=args.seed,
        alpha=args.alpha,
        n_boot=args.n_boot,
        pop=pop,
        level=args.level,
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{args.sims} A/A experiments per row, alpha {args.alpha}, seed {args.seed}; users per arm (A/B) "
            f"or per unit (interleaving)"
        )
        for line in _rows(summary):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
