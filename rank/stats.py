"""Statistics for online experiments: rates, per-user means, sample-ratio checks, click NDCG.

Every test compares a *treatment* with a *control* and reports the same things: both values,
the absolute difference with its 95% confidence interval, the relative lift with its interval,
a two-sided p-value, and whether that p-value is under ``alpha`` (``significant``).

Users are the unit of randomisation, so users are the unit of uncertainty wherever one user
contributes several observations:

* :func:`clustered_rate_test`: CTR (clicks / exposures) with users as clusters. One user's
  impressions share that user's taste, so they are not independent trials. The ratio-of-sums
  estimator's delta-method variance over users, with a Welch t reference (Satterthwaite degrees
  of freedom from the two arms' variances) rather than the normal, because with few users the
  variance itself is uncertain. **This is the CTR test the report leads with.**
* :func:`proportion_test`: rates whose unit *is* an independent trial (conversion = converted
  users / exposed users): Wald interval for the difference (unpooled), pooled two-proportion
  z-test, Katz log-ratio interval for the lift. Applied to CTR it assumes independent
  impressions; with users who click at different rates it is significant in A/A tests far more
  often than ``alpha`` (``scripts/aa_simulate.py``), so the report shows it for reference only.
* :func:`bootstrap_test`: per-user metrics (clicks per user, NDCG from click positions). From
  :data:`BOOTSTRAP_MIN_USERS` users per group: users resampled with replacement within each
  arm, percentile intervals, the p-value twice the smaller tail of the resampled differences
  around zero. With fewer users the percentile bootstrap is too confident (it treats the few
  values seen as the whole population: three users who all clicked more give a zero-width
  interval and p = 0), so below that the interval and p-value are Welch's t-test's.
* :data:`MIN_USERS`: below this many users in a group, none of these tests makes a call: the
  point estimates are reported, the interval and p-value are None and ``note`` says why.
* :func:`srm_test`: the chi-square goodness-of-fit test of the users per arm against the
  configured weights. A p-value under 0.001 (the usual threshold: SRM checks run on every
  report, so a stricter level keeps false alarms rare) means the split is broken and the
  experiment's results should not be trusted.
* :func:`sign_test`: the exact two-sided binomial test of wins against losses.
* :func:`click_ndcg`: a request's NDCG@k where the clicked positions are the relevant ones.

Example:
    >>> r = proportion_test(100, 1000, 130, 1000)
    >>> round(r.diff, 3), round(r.relative_lift, 2), r.significant
    (0.03, 0.3, True)
    >>> bootstrap_test([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]).note
    'too few users to call: 3 and 3 (at least 10 per group)'
    >>> round(click_ndcg([1, 3], k=10), 5)
    0.91972
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import Field, asdict, dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
from scipy.special import bdtr, chdtrc, ndtr, ndtri, stdtr, stdtrit

__all__ = [
    "BOOTSTRAP_MIN_USERS",
    "MIN_USERS",
    "BootstrapResult",
    "ProportionResult",
    "SrmResult",
    "bootstrap_test",
    "click_ndcg",
    "clustered_rate_test",
    "clustered_ratio_variance",
    "proportion_test",
    "ratio_variance",
    "sign_test",
    "srm_test",
    "t_quantile",
    "welch_df",
]

SRM_THRESHOLD = 0.001
#: Fewest users per group (per arm; for interleaving, users with a decided request) before a
#: test calls a result. Below it the tests' large-sample references do not hold (the A/A runs of
#: ``scripts/aa_simulate.py`` at 3 users per arm: 13-18% false positives before this rule).
MIN_USERS = 10
#: Fewest users per group for the percentile bootstrap; between :data:`MIN_USERS` and this,
#: :func:`bootstrap_test` uses Welch's t-test instead.
BOOTSTRAP_MIN_USERS = 50
_CELLS = 4_000_000  # resampled values held in memory at once


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _z(alpha: float) -> float:
    return float(-ndtri(alpha / 2))


def t_quantile(alpha: float, df: float) -> float:
    """The two-sided ``1 - alpha`` critical value of Student's t with ``df`` degrees of freedom.

    Example:
        >>> round(t_quantile(0.05, 9), 4), round(t_quantile(0.05, 1e9), 4)
        (2.2622, 1.96)
    """
    return float(stdtrit(df, 1 - alpha / 2))


def _p_normal(stat: float) -> float:
    return float(2 * ndtr(-abs(stat)))


def _p_t(stat: float, df: float) -> float:
    return float(2 * stdtr(df, -abs(stat)))


def _too_few(n_control: int, n_treatment: int, min_users: int) -> str:
    return f"too few users to call: {n_control} and {n_treatment} (at least {min_users} per group)"


def welch_df(v1: float, n1: float, v2: float, n2: float) -> float:
    """Welch-Satterthwaite degrees of freedom of ``sqrt(v1 + v2)``, the variances of two
    estimates from ``n1`` and ``n2`` (effective) independent units, each variance on ``n - 1``.
    At least 1 (the Cauchy); groups of one unit or less count as 1 each.

    Example:
        >>> welch_df(1.0, 4, 1.0, 4)
        6.0
    """
    parts = v1**2 / max(1.0, n1 - 1) + v2**2 / max(1.0, n2 - 1)
    return max(1.0, (v1 + v2) ** 2 / parts) if parts > 0 else math.nan


def _lift_interval(m1: float, m2: float, se_log: float, crit: float) -> tuple[float, float]:
    """The interval of the lift ``m2 / m1 - 1`` from the log ratio's standard error and critical value."""
    log_ratio = math.log(m2 / m1)
    return (math.exp(log_ratio - crit * se_log) - 1, math.exp(log_ratio + crit * se_log) - 1)


class _WelchT(NamedTuple):
    ci: tuple[float, float]
    lift_ci: tuple[float, float] | None
    stat: float | None
    p_value: float
    df: float | None


def _welch_t(m1: float, v1: float, n1: float, m2: float, v2: float, n2: float, alpha: float) -> _WelchT:
    """Welch's t of ``m2 - m1``, the estimates' variances ``v1`` and ``v2`` from ``n1`` and ``n2``
    (effective) users: the difference's interval, the lift's on the log ratio, the statistic, its
    two-sided p-value and the degrees of freedom. Without any variance (every user of both groups
    at their group's value exactly) the interval is the point and the p-value 1 or 0."""
    diff = m2 - m1
    se = math.sqrt(v1 + v2)
    if se == 0:
        return _WelchT((diff, diff), None, None, 1.0 if diff == 0 else 0.0, None)
    df = welch_df(v1, n1, v2, n2)
    t_crit = t_quantile(alpha, df)
    stat = diff / se
    lift_ci = _lift_interval(m1, m2, math.sqrt(v1 / m1**2 + v2 / m2**2), t_crit) if m1 > 0 and m2 > 0 else None
    return _WelchT((diff - t_crit * se, diff + t_crit * se), lift_ci, stat, _p_t(stat, df), df)


class _Called:
    """``significant`` and ``to_dict`` of a test's result, a frozen dataclass whose fields include
    ``p_value`` and ``alpha`` (declared by each result, where its field order puts them)."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]
    p_value: float | None
    alpha: float

    @property
    def significant(self) -> bool | None:
        """``p_value < alpha``; None where no p-value could be computed."""
        return None if self.p_value is None else self.p_value < self.alpha

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant}


@dataclass(frozen=True)
class _TwoGroups(_Called):
    """The fields every two-group result starts with (treatment minus control)."""

    control: float | None
    treatment: float | None
    n_control: int
    n_treatment: int
    diff: float | None
    ci: tuple[float, float] | None
    relative_lift: float | None
    lift_ci: tuple[float, float] | None


@dataclass(frozen=True)
class ProportionResult(_TwoGroups):
    """Two proportions compared (treatment minus control)."""

    z: float | None  # the test statistic (a t statistic where ``df`` is set)
    p_value: float | None
    method: str = "two-proportion z-test"
    df: float | None = None  # degrees of freedom of the t reference; None: the normal
    alpha: float = 0.05
    note: str | None = None  # why no call is made, or how to read the result


def _no_call(
    p1: float | None,
    p2: float | None,
    n1: int,
    n2: int,
    diff: float | None,
    lift: float | None,
    note: str,
    *,
    alpha: float,
    method: str = ProportionResult.method,
) -> ProportionResult:
    """Two rates' estimates without an interval or a p-value; ``note`` says why."""
    return ProportionResult(p1, p2, n1, n2, diff, None, lift, None, None, None, method, alpha=alpha, note=note)


def proportion_test(
    x_control: int, n_control: int, x_treatment: int, n_treatment: int, *, alpha: float = 0.05, min_n: int = 1
) -> ProportionResult:
    """Compare two rates ``x / n`` whose trials are independent.

    Args:
        x_control: successes in the control (converted users).
        n_control: trials in the control (exposed users).
        x_treatment: successes in the treatment.
        n_treatment: trials in the treatment.
        alpha: 1 - confidence level of the intervals, and the level of ``significant``.
        min_n: fewest trials per group for an interval and a p-value (the report passes
            :data:`MIN_USERS` when the trials are users).

    Returns:
        Rates, difference with Wald interval, relative lift with Katz log-ratio interval, the
        pooled z statistic and its two-sided p-value. Fields that cannot be computed (no trials,
        a zero control rate for the lift) are None.

    Example:
        >>> r = proportion_test(50, 500, 50, 500)
        >>> r.diff, r.p_value, r.significant
        (0.0, 1.0, False)
    """
    for name, x, n in (("control", x_control, n_control), ("treatment", x_treatment, n_treatment)):
        if n < 0 or x < 0 or x > n:
            raise ValueError(f"{name}: successes {x} must be between 0 and trials {n}")
    if n_control == 0 or n_treatment == 0:
        rate1 = x_control / n_control if n_control else None
        rate2 = x_treatment / n_treatment if n_treatment else None
        return ProportionResult(rate1, rate2, n_control, n_treatment, None, None, None, None, None, None, alpha=alpha)
    p1 = x_control / n_control
    p2 = x_treatment / n_treatment
    diff = p2 - p1
    lift = p2 / p1 - 1 if p1 > 0 else None
    if min(n_control, n_treatment) < max(1, min_n):
        return _no_call(
            p1, p2, n_control, n_treatment, diff, lift, _too_few(n_control, n_treatment, min_n), alpha=alpha
        )
    z_crit = _z(alpha)
    se = math.sqrt(p1 * (1 - p1) / n_control + p2 * (1 - p2) / n_treatment)
    ci = (diff - z_crit * se, diff + z_crit * se)
    pooled = (x_control + x_treatment) / (n_control + n_treatment)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_control + 1 / n_treatment))
    if se0 > 0:
        z = diff / se0
        p = _p_normal(z)
    else:  # both rates 0 or both 1: no evidence of a difference
        z, p = 0.0, 1.0
    lift_ci = None
    if p1 > 0 and p2 > 0:
        lift_ci = _lift_interval(p1, p2, math.sqrt((1 - p1) / x_control + (1 - p2) / x_treatment), z_crit)
    return ProportionResult(p1, p2, n_control, n_treatment, diff, ci, lift, lift_ci, _finite(z), p, alpha=alpha)


def ratio_variance(
    numerators: Sequence[float] | np.ndarray, denominators: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """``(r, var(r))`` for the ratio of sums ``r = sum(y) / sum(d)`` over independent units (users),
    by the delta method: ``var = n / (n - 1) * sum((y - r d)^2) / sum(d)^2``.

    Example:
        >>> r, v = ratio_variance([1, 0, 2, 1], [10, 10, 10, 10])
        >>> r, round(v, 8)
        (0.1, 0.00166667)
    """
    y = np.asarray(numerators, dtype=np.float64)
    d = np.asarray(denominators, dtype=np.float64)
    n, total = len(y), float(d.sum())
    if n < 2 or total <= 0:
        return (float(y.sum()) / total if total > 0 else math.nan), math.nan
    r = float(y.sum()) / total
    return r, float(n / (n - 1) * np.sum((y - r * d) ** 2) / total**2)


def clustered_ratio_variance(
    numerators: Sequence[float] | np.ndarray, denominators: Sequence[float] | np.ndarray
) -> tuple[float, float, float]:
    """``(r, var(r), n_eff)`` for the ratio of sums ``r = sum(y) / sum(d)`` over independent units,
    with the CR2 small-sample correction (Bell and McCaffrey, 2002) that the report's tests use.

    ``r`` is the mean of the units' rates ``y / d`` weighted by ``d``, so unit i's leverage is
    ``h = d / sum(d)``; each residual ``y - r d`` is scaled by ``1 / sqrt(1 - h)``:
    ``var = sum((y - r d)^2 / (1 - h)) / sum(d)^2``. With equal ``d`` that is exactly
    :func:`ratio_variance`; a heavy user (a large share of the exposures) gets a larger correction,
    because the plain delta method under-states the variance most when a few users carry most of
    the exposures. ``n_eff = sum(d)^2 / sum(d^2)`` is Kish's effective number of units, which
    sets the degrees of freedom of the t reference (``n_eff - 1``).

    Example:
        >>> r, v, n_eff = clustered_ratio_variance([1, 0, 2, 1], [10, 10, 10, 10])
        >>> r, round(v, 8), n_eff
        (0.1, 0.00166667, 4.0)
    """
    y = np.asarray(numerators, dtype=np.float64)
    d = np.asarray(denominators, dtype=np.float64)
    total = float(d.sum())
    r = float(y.sum()) / total if total > 0 else math.nan
    if len(y) < 2 or total <= 0:
        return r, math.nan, float(len(y))
    h = d / total
    n_eff = total**2 / float(np.sum(d**2))
    if float(h.max()) >= 1.0:  # one unit holds every trial: no variance to estimate
        return r, math.nan, n_eff
    return r, float(np.sum((y - r * d) ** 2 / (1 - h)) / total**2), n_eff


def clustered_rate_test(
    x_control: Sequence[float] | np.ndarray,
    n_control: Sequence[float] | np.ndarray,
    x_treatment: Sequence[float] | np.ndarray,
    n_treatment: Sequence[float] | np.ndarray,
    *,
    alpha: float = 0.05,
    min_users: int = MIN_USERS,
) -> ProportionResult:
    """Compare two rates ``sum(x) / sum(n)`` whose units (users) each hold several trials.

    Args:
        x_control: per control user, successes (their clicks).
        n_control: per control user, trials (their exposures).
        x_treatment: the same for treatment users.
        n_treatment: the same for treatment users.
        alpha: 1 - confidence level, and the level of ``significant``.
        min_users: fewest users per group for an interval and a p-value.

    Returns:
        Like :func:`proportion_test` (``n_*`` are user counts), with the variance over users of
        :func:`clustered_ratio_variance` for the difference and for the log ratio (lift
        interval), referred to a t distribution with Welch-Satterthwaite degrees of freedom
        (``df``) from the two arms' effective numbers of users.

    Example:
        >>> r = clustered_rate_test([1, 0, 2, 1] * 3, [10] * 12, [3, 2, 4, 3] * 3, [10] * 12)
        >>> round(r.diff, 3), r.df, r.significant
        (0.2, 22.0, True)
    """
    method = "delta method over users (CR2), Welch t"
    p1: float | None
    p2: float | None
    (p1, v1, e1), (p2, v2, e2) = (
        clustered_ratio_variance(x_control, n_control),
        clustered_ratio_variance(x_treatment, n_treatment),
    )
    n1, n2 = len(x_control), len(x_treatment)
    p1, p2 = _finite(p1), _finite(p2)
    diff = p2 - p1 if p1 is not None and p2 is not None else None
    lift = p2 / p1 - 1 if p1 is not None and p2 is not None and p1 > 0 else None
    if min(n1, n2) < min_users:
        return _no_call(p1, p2, n1, n2, diff, lift, _too_few(n1, n2, min_users), alpha=alpha, method=method)
    if not (math.isfinite(v1) and math.isfinite(v2)):  # a group without exposures, or one user holding them all
        note = "no variance over users to test with"
        return _no_call(p1, p2, n1, n2, diff, lift, note, alpha=alpha, method=method)
    # finite variances mean both groups have exposures (total > 0), so both rates are finite
    assert p1 is not None and p2 is not None and diff is not None
    t = _welch_t(p1, v1, e1, p2, v2, e2, alpha)
    return ProportionResult(
        p1, p2, n1, n2, diff, t.ci, lift, t.lift_ci, t.stat, t.p_value, method, df=t.df, alpha=alpha
    )


@dataclass(frozen=True)
class BootstrapResult(_TwoGroups):
    """Two per-user means compared (treatment minus control)."""

    p_value: float | None
    n_boot: int
    method: str = "bootstrap over users"
    df: float | None = None  # Welch t's degrees of freedom where the method is Welch's
    alpha: float = 0.05
    note: str | None = None


def _resampled_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` means of ``values`` resampled with replacement, in memory-bounded chunks."""
    out = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, _CELLS // max(1, len(values)))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, len(values), size=(stop - start, len(values)))
        out[start:stop] = values[idx].mean(axis=1)
    return out


def _welch(a: np.ndarray, b: np.ndarray, n_boot: int, alpha: float) -> BootstrapResult:
    """Welch's t-test and interval of ``mean(b) - mean(a)``; the lift's interval on the log ratio."""
    mean_a, mean_b = float(a.mean()), float(b.mean())
    va, vb = float(a.var(ddof=1)) / len(a), float(b.var(ddof=1)) / len(b)
    diff = mean_b - mean_a
    lift = mean_b / mean_a - 1 if mean_a > 0 else None
    method = f"Welch t over users (fewer than {BOOTSTRAP_MIN_USERS} users per group for the bootstrap)"
    t = _welch_t(mean_a, va, len(a), mean_b, vb, len(b), alpha)
    return BootstrapResult(
        mean_a, mean_b, len(a), len(b), diff, t.ci, lift, t.lift_ci, t.p_value, n_boot, method, df=t.df, alpha=alpha
    )


def bootstrap_test(
    control: Sequence[float] | np.ndarray,
    treatment: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
    min_users: int = MIN_USERS,
    bootstrap_min_users: int = BOOTSTRAP_MIN_USERS,
) -> BootstrapResult:
    """Compare the means of two groups of per-user values.

    Args:
        control: one value per control user (clicks of that user, their mean click NDCG...).
        treatment: one value per treatment user.
        n_boot: bootstrap resamples.
        seed: seeds the resampling, so a report is reproducible.
        alpha: 1 - confidence level, and the level of ``significant``.
        min_users: fewest users per group for an interval and a p-value.
        bootstrap_min_users: fewest users per group for the bootstrap; between ``min_users`` and
            this, Welch's t-test gives the interval and the p-value (``method`` says which).

    Returns:
        Means, difference with its interval, relative lift (ratio of means - 1) with its
        interval, and the p-value: by bootstrap (users resampled within each group) the
        percentile intervals and ``2 * min(P(d* <= 0), P(d* >= 0))`` (at least ``1 / n_boot``).
        None where a group is empty; no interval or p-value below ``min_users``.

    Example:
        >>> r = bootstrap_test([0, 1, 0, 1] * 50, [1, 1, 0, 1] * 50, n_boot=500)
        >>> round(r.diff, 2), r.ci[0] > 0, r.significant
        (0.25, True, True)
    """
    a = np.asarray(control, dtype=np.float64)
    b = np.asarray(treatment, dtype=np.float64)
    if n_boot < 100:
        raise ValueError(f"n_boot must be at least 100, not {n_boot}")
    if len(a) == 0 or len(b) == 0:
        return BootstrapResult(
            float(a.mean()) if len(a) else None,
            float(b.mean()) if len(b) else None,
            len(a),
            len(b),
            None,
            None,
            None,
            None,
            None,
            n_boot,
            alpha=alpha,
        )
    mean_a, mean_b = float(a.mean()), float(b.mean())
    diff = mean_b - mean_a
    lift = mean_b / mean_a - 1 if mean_a > 0 else None
    if min(len(a), len(b)) < max(2, min_users):
        note = _too_few(len(a), len(b), max(2, min_users))
        return BootstrapResult(
            mean_a, mean_b, len(a), len(b), diff, None, lift, None, None, n_boot, alpha=alpha, note=note
        )
    if min(len(a), len(b)) < bootstrap_min_users:
        return _welch(a, b, n_boot, alpha)
    rng = np.random.default_rng(seed)
    ma, mb = _resampled_means(a, n_boot, rng), _resampled_means(b, n_boot, rng)
    d = mb - ma
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    tails = min(float(np.mean(d <= 0)), float(np.mean(d >= 0)))
    p = min(1.0, max(2 * tails, 1 / n_boot))
    if float(np.ptp(np.concatenate([a, b]))) == 0.0:
        p = 1.0  # every value equal: the resamples carry no evidence at all
    lift_ci = None
    if mean_a > 0:
        ok = ma > 0
        if ok.mean() > 1 - alpha / 2:  # the ratio is defined in (nearly) every resample
            ratio = mb[ok] / ma[ok] - 1
            lift_ci = (float(np.percentile(ratio, lo)), float(np.percentile(ratio, hi)))
    ci = (float(np.percentile(d, lo)), float(np.percentile(d, hi)))
    return BootstrapResult(mean_a, mean_b, len(a), len(b), diff, ci, lift, lift_ci, p, n_boot, alpha=alpha)


@dataclass(frozen=True)
class SrmResult:
    """Sample-ratio-mismatch check: observed units per arm against the configured split."""

    observed: dict[str, int]
    expected: dict[str, float]
    chi2: float | None
    df: int
    p_value: float | None
    mismatch: bool
    threshold: float = SRM_THRESHOLD

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def message(self) -> str:
        shares = ", ".join(f"{k} {v} (expected {self.expected[k]:.1f})" for k, v in self.observed.items())
        if self.p_value is None:
            return f"sample ratio check not possible: {shares}"
        verdict = "SAMPLE RATIO MISMATCH" if self.mismatch else "sample ratio ok"
        return f"{verdict}: chi2 {self.chi2:.2f}, df {self.df}, p {self.p_value:.3g}; {shares}"


def srm_test(
    observed: Mapping[str, int], weights: Mapping[str, float], *, threshold: float = SRM_THRESHOLD
) -> SrmResult:
    """Chi-square goodness of fit of ``observed`` counts to the shares ``weights``.

    Args:
        observed: units (users) seen per arm; arms absent count 0.
        weights: each arm's share (any positive scale; normalised here).
        threshold: p-values below this flag a mismatch.

    Example:
        >>> srm_test({"a": 5000, "b": 5000}, {"a": 1, "b": 1}).mismatch
        False
        >>> srm_test({"a": 5200, "b": 4800}, {"a": 1, "b": 1}).mismatch
        True
    """
    names = list(weights)
    unknown = set(observed) - set(names)
    if unknown:
        raise ValueError(f"observed arms {sorted(unknown)} have no configured weight")
    total_w = float(sum(weights.values()))
    if total_w <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError("weights must be non-negative with a positive sum")
    obs = {n: int(observed.get(n, 0)) for n in names}
    total = sum(obs.values())
    expected = {n: total * weights[n] / total_w for n in names}
    used = [n for n in names if expected[n] > 0]
    # A unit seen in an arm of weight 0 is a mismatch by definition.
    if any(obs[n] > 0 and expected[n] == 0 for n in names):
        return SrmResult(obs, expected, math.inf, max(0, len(used) - 1), 0.0, True, threshold)
    if total == 0 or len(used) < 2:
        return SrmResult(obs, expected, None, max(0, len(used) - 1), None, False, threshold)
    chi2 = sum((obs[n] - expected[n]) ** 2 / expected[n] for n in used)
    df = len(used) - 1
    p = float(chdtrc(df, chi2))
    return SrmResult(obs, expected, float(chi2), df, p, p < threshold, threshold)


def click_ndcg(clicked_positions: Iterable[int], *, k: int = 10) -> float:
    """NDCG@k of one shown list, the clicked positions (1-based) being the relevant ones.

    DCG sums ``1 / log2(position + 1)`` over distinct clicked positions within the top k; the
    ideal DCG puts the same number of clicks on the first positions. A list without clicks
    within the top k scores 0.

    Example:
        >>> click_ndcg([1], k=10), click_ndcg([], k=10)
        (1.0, 0.0)
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    positions = sorted({int(p) for p in clicked_positions if 1 <= int(p) <= k})
    if not positions:
        return 0.0
    dcg = sum(1.0 / math.log2(p + 1) for p in positions)
    ideal = sum(1.0 / math.log2(r + 1) for r in range(1, len(positions) + 1))
    return dcg / ideal


def sign_test(wins_treatment: int, wins_control: int) -> float:
    """Two-sided exact binomial (sign) test p-value of ``wins_treatment`` vs ``wins_control``
    under no preference; ties are left out by the caller. 1.0 without any win.

    Exact at any count: with 5 or fewer wins in all it cannot go below 0.0625.

    Example:
        >>> sign_test(3, 0), round(sign_test(9, 1), 4)
        (0.25, 0.0215)
    """
    n = wins_treatment + wins_control
    if n == 0:
        return 1.0
    return float(min(1.0, 2 * bdtr(min(wins_treatment, wins_control), n, 0.5)))
