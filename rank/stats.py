"""Statistics for online experiments: rates, per-user means, sample-ratio checks, click NDCG.

Every test compares a *treatment* with a *control* and reports the same things: both values,
the absolute difference with its 95% confidence interval, the relative lift with its interval,
and a two-sided p-value.

* Rates whose unit is independent trials (CTR = clicks / exposures, conversion = converted users /
  exposed users) use :func:`proportion_test`: the difference's interval is Wald's (unpooled
  variance), the p-value the pooled two-proportion z-test, the lift's interval Katz's log-ratio
  interval.
* The same rates with users as clusters (:func:`clustered_rate_test`): CTR's exposures are not
  independent trials — one user's impressions share that user's taste — so its two-proportion
  test is too confident. The ratio-of-sums estimator's delta-method variance over users fixes
  that; the report shows both.
* Per-user metrics (clicks per user, NDCG from click positions) use :func:`bootstrap_test`:
  users are resampled with replacement within each arm; the percentile interval of the resampled
  differences (and of the ratio of means, for the lift); the p-value is twice the smaller tail of
  the resampled differences around zero (the smallest level at which the interval excludes 0).
* :func:`srm_test`: the chi-square goodness-of-fit test of the users per arm against the
  configured weights. A p-value under 0.001 (the usual threshold: SRM checks run on every
  report, so a stricter level keeps false alarms rare) means the split is broken and the
  experiment's results should not be trusted.
* :func:`click_ndcg`: a request's NDCG@k where the clicked positions are the relevant ones.

Example:
    >>> r = proportion_test(100, 1000, 130, 1000)
    >>> round(r.diff, 3), round(r.relative_lift, 2), r.p_value < 0.05
    (0.03, 0.3, True)
    >>> round(click_ndcg([1, 3], k=10), 5)
    0.91972
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["BootstrapResult", "ProportionResult", "SrmResult", "bootstrap_test", "click_ndcg", "clustered_rate_test",
           "proportion_test", "ratio_variance", "sign_test", "srm_test"]

SRM_THRESHOLD = 0.001
_CELLS = 4_000_000  # resampled values held in memory at once


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _z(alpha: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1 - alpha / 2))


@dataclass(frozen=True)
class ProportionResult:
    """Two proportions compared (treatment minus control)."""

    control: float | None
    treatment: float | None
    n_control: int
    n_treatment: int
    diff: float | None
    ci: tuple[float, float] | None
    relative_lift: float | None
    lift_ci: tuple[float, float] | None
    z: float | None
    p_value: float | None
    method: str = "two-proportion z-test"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def proportion_test(x_control: int, n_control: int, x_treatment: int, n_treatment: int, *,
                    alpha: float = 0.05) -> ProportionResult:
    """Compare two rates ``x / n``.

    Args:
        x_control: successes in the control (clicks, converted users).
        n_control: trials in the control (exposures, exposed users).
        x_treatment: successes in the treatment.
        n_treatment: trials in the treatment.
        alpha: 1 - confidence level of the intervals.

    Returns:
        Rates, difference with Wald interval, relative lift with Katz log-ratio interval, the
        pooled z statistic and its two-sided p-value. Fields that cannot be computed (no trials,
        a zero control rate for the lift) are None.

    Example:
        >>> r = proportion_test(50, 500, 50, 500)
        >>> r.diff, r.p_value
        (0.0, 1.0)
    """
    for name, x, n in (("control", x_control, n_control), ("treatment", x_treatment, n_treatment)):
        if n < 0 or x < 0 or x > n:
            raise ValueError(f"{name}: successes {x} must be between 0 and trials {n}")
    if n_control == 0 or n_treatment == 0:
        return ProportionResult(x_control / n_control if n_control else None,
                                x_treatment / n_treatment if n_treatment else None,
                                n_control, n_treatment, None, None, None, None, None, None)
    z_crit = _z(alpha)
    p1, p2 = x_control / n_control, x_treatment / n_treatment
    diff = p2 - p1
    se = math.sqrt(p1 * (1 - p1) / n_control + p2 * (1 - p2) / n_treatment)
    ci = (diff - z_crit * se, diff + z_crit * se)
    pooled = (x_control + x_treatment) / (n_control + n_treatment)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_control + 1 / n_treatment))
    if se0 > 0:
        from scipy.stats import norm

        z = diff / se0
        p = float(2 * norm.sf(abs(z)))
    else:  # both rates 0 or both 1: no evidence of a difference
        z, p = 0.0, 1.0
    lift = lift_ci = None
    if p1 > 0:
        lift = p2 / p1 - 1
        if p2 > 0:
            se_log = math.sqrt((1 - p1) / x_control + (1 - p2) / x_treatment)
            log_ratio = math.log(p2 / p1)
            lift_ci = (math.exp(log_ratio - z_crit * se_log) - 1, math.exp(log_ratio + z_crit * se_log) - 1)
    return ProportionResult(p1, p2, n_control, n_treatment, diff, ci, lift, lift_ci, _finite(z), p)


def ratio_variance(numerators: Sequence[float] | np.ndarray, denominators: Sequence[float] | np.ndarray) -> tuple[float, float]:
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


def clustered_rate_test(x_control: Sequence[float], n_control: Sequence[float], x_treatment: Sequence[float],
                        n_treatment: Sequence[float], *, alpha: float = 0.05) -> ProportionResult:
    """Compare two rates ``sum(x) / sum(n)`` whose units (users) each hold several trials.

    Args:
        x_control: per control user, successes (their clicks).
        n_control: per control user, trials (their exposures).
        x_treatment: the same for treatment users.
        n_treatment: the same for treatment users.
        alpha: 1 - confidence level.

    Returns:
        Like :func:`proportion_test` (``n_*`` are user counts), with the delta-method variance
        over users for the difference (Wald interval, z, p) and for the log ratio (lift interval).
    """
    (p1, v1), (p2, v2) = ratio_variance(x_control, n_control), ratio_variance(x_treatment, n_treatment)
    n1, n2 = len(x_control), len(x_treatment)
    if not (math.isfinite(v1) and math.isfinite(v2)):
        return ProportionResult(_finite(p1), _finite(p2), n1, n2, None, None, None, None, None, None,
                                "delta method over users")
    z_crit = _z(alpha)
    diff, se = p2 - p1, math.sqrt(v1 + v2)
    if se > 0:
        from scipy.stats import norm

        z = diff / se
        p = float(2 * norm.sf(abs(z)))
    else:
        z, p = 0.0, 1.0
    lift = lift_ci = None
    if p1 > 0:
        lift = p2 / p1 - 1
        if p2 > 0:
            se_log = math.sqrt(v1 / p1**2 + v2 / p2**2)
            lift_ci = (math.exp(math.log(p2 / p1) - z_crit * se_log) - 1, math.exp(math.log(p2 / p1) + z_crit * se_log) - 1)
    return ProportionResult(p1, p2, n1, n2, diff, (diff - z_crit * se, diff + z_crit * se), lift, lift_ci, _finite(z), p,
                            "delta method over users")


@dataclass(frozen=True)
class BootstrapResult:
    """Two per-user means compared (treatment minus control) by resampling users."""

    control: float | None
    treatment: float | None
    n_control: int
    n_treatment: int
    diff: float | None
    ci: tuple[float, float] | None
    relative_lift: float | None
    lift_ci: tuple[float, float] | None
    p_value: float | None
    n_boot: int
    method: str = "bootstrap over users"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _resampled_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` means of ``values`` resampled with replacement, in memory-bounded chunks."""
    out = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, _CELLS // max(1, len(values)))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, len(values), size=(stop - start, len(values)))
        out[start:stop] = values[idx].mean(axis=1)
    return out


def bootstrap_test(control: Sequence[float] | np.ndarray, treatment: Sequence[float] | np.ndarray, *,
                   n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> BootstrapResult:
    """Compare the means of two groups of per-user values by resampling users within each group.

    Args:
        control: one value per control user (clicks of that user, their mean click NDCG...).
        treatment: one value per treatment user.
        n_boot: bootstrap resamples.
        seed: seeds the resampling, so a report is reproducible.
        alpha: 1 - confidence level.

    Returns:
        Means, difference with percentile interval, relative lift (ratio of means - 1) with
        percentile interval, and the bootstrap p-value ``2 * min(P(d* <= 0), P(d* >= 0))``
        (at least ``1 / n_boot``). None where a group is empty.

    Example:
        >>> r = bootstrap_test([0, 1, 0, 1] * 50, [1, 1, 0, 1] * 50, n_boot=500)
        >>> round(r.diff, 2), r.ci[0] > 0
        (0.25, True)
    """
    a = np.asarray(control, dtype=np.float64)
    b = np.asarray(treatment, dtype=np.float64)
    if n_boot < 100:
        raise ValueError(f"n_boot must be at least 100, not {n_boot}")
    if len(a) == 0 or len(b) == 0:
        return BootstrapResult(float(a.mean()) if len(a) else None, float(b.mean()) if len(b) else None,
                               len(a), len(b), None, None, None, None, None, n_boot)
    rng = np.random.default_rng(seed)
    ma, mb = _resampled_means(a, n_boot, rng), _resampled_means(b, n_boot, rng)
    d = mb - ma
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    mean_a, mean_b = float(a.mean()), float(b.mean())
    tails = min(float(np.mean(d <= 0)), float(np.mean(d >= 0)))
    p = min(1.0, max(2 * tails, 1 / n_boot))
    if float(np.ptp(np.concatenate([a, b]))) == 0.0:
        p = 1.0  # every value equal: the resamples carry no evidence at all
    lift = lift_ci = None
    if mean_a > 0:
        lift = mean_b / mean_a - 1
        ok = ma > 0
        if ok.mean() > 1 - alpha / 2:  # the ratio is defined in (nearly) every resample
            ratio = mb[ok] / ma[ok] - 1
            lift_ci = (float(np.percentile(ratio, lo)), float(np.percentile(ratio, hi)))
    return BootstrapResult(mean_a, mean_b, len(a), len(b), mean_b - mean_a,
                           (float(np.percentile(d, lo)), float(np.percentile(d, hi))), lift, lift_ci, p, n_boot)


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


def srm_test(observed: Mapping[str, int], weights: Mapping[str, float], *,
             threshold: float = SRM_THRESHOLD) -> SrmResult:
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
    from scipy.stats import chi2 as chi2_dist

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
    p = float(chi2_dist.sf(chi2, df))
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
    under no preference; ties are left out by the caller. 1.0 without any win."""
    n = wins_treatment + wins_control
    if n == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(wins_treatment, n, 0.5).pvalue)
