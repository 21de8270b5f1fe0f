"""The statistics of an experiment report: which test answers which question, and the report's shape.

:func:`vecrank.rank.experiment_analysis.analyse` attributes events to requests and users; this module
turns each unit's per-user values (:class:`UserValues`) into its totals (:class:`ArmStats`) and
each arm's comparisons with the control (:func:`compare`), in the order the report, ``--json``
and the plots show them:

==================  ============================================================================
key                 test
==================  ============================================================================
``ctr``             CTR with users as clusters: delta method over users, Welch t
                    (:func:`~vecrank.rank.stats.clustered_rate_test`). **The CTR to read.**
``conversion``      share of exposed users who converted, two-proportion z-test over users
``clicks_per_user`` bootstrap over users (Welch t below 50 users per arm)
``ndcg``            click NDCG per user, the same
``ctr_independent`` CTR by the two-proportion z-test over exposures, which *assumes independent
                    impressions*: one user's impressions are not, so with users who click at
                    different rates it calls A/A differences far more often than 5% (19-45% in
                    the A/A runs of ``scripts/aa_simulate.py``). Shown for reference only:
                    its ``significant`` is always None and its ``note`` says why.
==================  ============================================================================

Every entry is its result's ``to_dict()`` (``control``, ``treatment``, ``diff``, ``ci``,
``relative_lift``, ``lift_ci``, ``p_value``, ``method``, ``alpha``, ``significant``, ``note``...)
plus ``label``. No test calls a result with fewer than :data:`~vecrank.rank.stats.MIN_USERS`
(10) users in either arm: ``ci`` and ``p_value`` are None, ``significant`` None and ``note``
reads "too few users to call".

Example:
    >>> v = UserValues.of(clicks=[1, 0, 2], exposures=[10, 10, 10], ndcg=[1.0, 0.0, 0.6], converted=[1, 0, 0])
    >>> ArmStats.from_values("control", v, requests=4).ctr
    0.1
    >>> compare(v, v)["ctr"]["note"]
    'too few users to call: 3 and 3 (at least 10 per group)'
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vecrank.rank import stats
from vecrank.rank.experiment_plot import plot_series
from vecrank.rank.interleaving import PreferenceResult

__all__ = ["COMPARISONS", "LABELS", "ArmStats", "ExperimentReport", "UserValues", "compare", "interval_half_width"]

#: The comparisons of an A/B arm with the control, in the order they are shown.
COMPARISONS = ("ctr", "conversion", "clicks_per_user", "ndcg", "ctr_independent")
LABELS = {
    "ctr": "CTR, users as clusters",
    "conversion": "conversion (share of users)",
    "clicks_per_user": "clicks per user",
    "ndcg": "NDCG from clicks, per user",
    "ctr_independent": "CTR assuming independent impressions",
}
INDEPENDENT_NOTE = (
    "assumes independent impressions; a user's impressions are not (users click at different "
    "rates), so this test is too confident: reference only, never called — read ctr"
)


def iso_utc(ms: int | None) -> str | None:
    """Epoch milliseconds as an ISO 8601 UTC instant (seconds), None for None."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class UserValues:
    """One unit's per-user outcomes, aligned: a row per exposed user."""

    clicks: np.ndarray
    exposures: np.ndarray
    ndcg: np.ndarray  # the mean over the user's requests of their click NDCG
    converted: np.ndarray  # 1.0 where the user converted, else 0.0

    def __post_init__(self) -> None:
        sizes = {f.name: len(getattr(self, f.name)) for f in fields(self)}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"per-user values must have one length each, not {sizes}")

    @classmethod
    def of(
        cls, *, clicks: Sequence[float], exposures: Sequence[float], ndcg: Sequence[float], converted: Sequence[float]
    ) -> UserValues:
        """From sequences (copied into float arrays)."""
        return cls(*(np.array(x, dtype=np.float64) for x in (clicks, exposures, ndcg, converted)))

    @property
    def users(self) -> int:
        return len(self.clicks)


@dataclass(frozen=True)
class ArmStats:
    """One assignment unit's totals (an arm, ``interleaved`` or ``holdout``)."""

    name: str
    users: int = 0
    requests: int = 0
    exposures: int = 0
    clicks: int = 0
    converted_users: int = 0
    ctr: float | None = None
    clicks_per_user: float | None = None
    conversion: float | None = None
    ndcg: float | None = None

    @classmethod
    def from_values(cls, name: str, values: UserValues, *, requests: int) -> ArmStats:
        users, exposures = values.users, int(values.exposures.sum())
        clicks, converted = int(values.clicks.sum()), int(values.converted.sum())
        return cls(
            name,
            users=users,
            requests=requests,
            exposures=exposures,
            clicks=clicks,
            converted_users=converted,
            ctr=clicks / exposures if exposures else None,
            clicks_per_user=clicks / users if users else None,
            conversion=converted / users if users else None,
            ndcg=float(values.ndcg.mean()) if users else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def compare(
    control: UserValues,
    treatment: UserValues,
    *,
    metrics: Sequence[str] = COMPARISONS,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    min_users: int = stats.MIN_USERS,
) -> dict[str, dict[str, Any]]:
    """The comparisons of ``treatment`` with ``control`` (see the module docstring), as JSON-ready dicts.

    Args:
        control: the control's per-user values.
        treatment: the treatment's.
        metrics: which of :data:`COMPARISONS`, in the order given.
        n_boot: bootstrap resamples for the per-user metrics.
        seed: seeds the resampling.
        alpha: 1 - confidence level, and the level of ``significant``.
        min_users: fewest users per arm for any call.
    """
    unknown = [m for m in metrics if m not in COMPARISONS]
    if unknown:
        raise ValueError(f"unknown comparison(s) {unknown}; known: {', '.join(COMPARISONS)}")
    c, t = control, treatment
    out: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        if metric == "ctr":
            result = stats.clustered_rate_test(
                c.clicks, c.exposures, t.clicks, t.exposures, alpha=alpha, min_users=min_users
            ).to_dict()
        elif metric == "ctr_independent":
            naive = stats.proportion_test(
                int(c.clicks.sum()), int(c.exposures.sum()), int(t.clicks.sum()), int(t.exposures.sum()), alpha=alpha
            )
            result = dataclasses.replace(naive, note=INDEPENDENT_NOTE).to_dict() | {"significant": None}
        elif metric == "conversion":
            result = stats.proportion_test(
                int(c.converted.sum()), c.users, int(t.converted.sum()), t.users, alpha=alpha, min_n=min_users
            ).to_dict()
        else:
            values = {"clicks_per_user": (c.clicks, t.clicks), "ndcg": (c.ndcg, t.ndcg)}[metric]
            result = stats.bootstrap_test(*values, n_boot=n_boot, seed=seed, alpha=alpha, min_users=min_users).to_dict()
        out[metric] = {"label": LABELS[metric], **result}
    return out


class ReportedExperiment(Protocol):
    """What a report reads of its :class:`vecrank.rank.experiment_definition.Experiment` (whose
    module imports this one, so this one names only the attributes it uses)."""

    experiment_id: str
    type: str
    status: str
    control: str | None
    ndcg_k: int

    def summary(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ExperimentReport:
    experiment: ReportedExperiment
    window: tuple[int, int]
    arms: dict[str, ArmStats]
    comparisons: dict[str, dict[str, dict[str, Any]]]
    srm: stats.SrmResult
    interleaving: PreferenceResult | None
    # metric -> unit -> (t, value, half-width of its 95% interval, users as clusters; None below the minimum)
    series: dict[str, dict[str, list[tuple[int, float | None, float | None]]]]
    counts: dict[str, int]
    warnings: list[str]
    alpha: float = 0.05
    min_users: int = stats.MIN_USERS

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment.summary(),
            "window": {"start": iso_utc(self.window[0]), "end": iso_utc(self.window[1])},
            "control": self.experiment.control,
            "arms": {k: v.to_dict() for k, v in self.arms.items()},
            "comparisons": self.comparisons,
            "srm": self.srm.to_dict() | {"message": self.srm.message()},
            "interleaving": self.interleaving.to_dict() if self.interleaving else None,
            "thresholds": {
                "alpha": self.alpha,
                "min_users": self.min_users,
                "bootstrap_min_users": stats.BOOTSTRAP_MIN_USERS,
                "srm": self.srm.threshold,
            },
            "counts": self.counts,
            "warnings": self.warnings,
        }

    def plot(self, out_dir: str | Path) -> list[str]:
        """One PNG per metric: its cumulative value per arm over time with a 95% band (users as
        clusters for the rates and the preference); under the title, each arm's test against the
        control (for CTR the clustered one, the one the report leads with). Returns the paths
        (:func:`vecrank.rank.experiment_plot.plot_series`)."""
        return plot_series(
            out_dir,
            experiment_id=self.experiment.experiment_id,
            control=self.experiment.control,
            ndcg_k=self.experiment.ndcg_k,
            series=self.series,
            comparisons=self.comparisons,
            interleaving=self.interleaving,
        )


def interval_half_width(
    metric: str, values: UserValues, *, alpha: float = 0.05, min_users: int = stats.MIN_USERS
) -> float | None:
    """Half-width of one unit's ``1 - alpha`` interval for ``metric``: t with ``users - 1`` degrees
    of freedom; for CTR users as clusters (:func:`~vecrank.rank.stats.clustered_ratio_variance`,
    ``n_eff - 1``). None below ``min_users`` users."""
    n = values.users
    if n < max(2, min_users):
        return None
    df: float = n - 1
    if metric == "ctr":
        _, var, n_eff = stats.clustered_ratio_variance(values.clicks, values.exposures)
        se, df = (math.sqrt(var) if math.isfinite(var) else None), max(1.0, n_eff - 1)
    elif metric == "conversion":
        p = float(values.converted.mean())
        se = math.sqrt(p * (1 - p) / n)
    else:
        x = values.clicks if metric == "clicks_per_user" else values.ndcg
        se = float(np.std(x, ddof=1) / math.sqrt(n))
    return None if se is None else stats.t_quantile(alpha, df) * se
