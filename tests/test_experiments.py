"""Experiments: assignment properties, the statistics against hand-computed values, the report on
known events, the sample-ratio check, and the definitions' lifecycle in Elasticsearch."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from vecrank.rank import stats
from vecrank.rank.experiments import (
    HOLDOUT,
    Arm,
    Experiment,
    ExperimentError,
    ExperimentStore,
    analyse,
    assign,
    bucket,
    user_outcomes,
)

T0 = 1_700_000_000_000
USERS = [f"user-{i}" for i in range(100_000)]


# --- assignment ------------------------------------------------------------------------------------------


def test_assignment_is_sticky_and_survives_a_restart():
    exp = Experiment("sticky", arms=(Arm("a"), Arm("b")), salt="fixed-salt", holdout=0.1)
    first = {u: exp.assign(u) for u in USERS[:2000]}
    reloaded = Experiment.from_doc(json.loads(json.dumps(exp.to_doc())))  # what a restarted service reads
    assert {u: reloaded.assign(u) for u in USERS[:2000]} == first
    assert {u: exp.assign(u) for u in reversed(USERS[:2000])} == first  # no order or state dependence
    assert set(first.values()) == {"a", "b", HOLDOUT}
    # a literal value: the hash rule itself must not change between versions, or live users would move
    assert bucket("user-1", "fixed-salt") == pytest.approx(
        int.from_bytes(__import__("hashlib").sha256(b"fixed-salt:user-1").digest()[:8], "big") / 2**64
    )


def test_split_of_100000_users_is_uniform_within_tolerance():
    weights = {"control": 1.0, "t1": 1.0, "t2": 2.0}
    exp = Experiment("uniform", arms=tuple(Arm(n, weight=w) for n, w in weights.items()), salt="s-1", holdout=0.1)
    counts: dict[str, int] = {}
    for u in USERS:
        arm = exp.assign(u)
        counts[arm] = counts.get(arm, 0) + 1
    expected = exp.expected_shares()
    assert expected == pytest.approx({"control": 0.225, "t1": 0.225, "t2": 0.45, HOLDOUT: 0.1})
    for arm, share in expected.items():
        # 5 standard errors of a share at n = 100,000 is at most 0.008
        tol = 5 * math.sqrt(share * (1 - share) / len(USERS))
        assert abs(counts[arm] / len(USERS) - share) < tol, (arm, counts[arm])
    assert not stats.srm_test(counts, expected).mismatch
    # the buckets themselves are uniform on [0, 1): ten deciles, chi-square
    deciles = np.bincount((np.array([bucket(u, "s-1") for u in USERS]) * 10).astype(int), minlength=10)
    assert not stats.srm_test({str(i): int(c) for i, c in enumerate(deciles)}, {str(i): 1 for i in range(10)}).mismatch


def test_experiments_with_different_salts_are_independent():
    arms = [("a", 1.0), ("b", 1.0)]
    first = [assign(u, "salt-one", arms) for u in USERS]
    second = [assign(u, "salt-two", arms) for u in USERS]
    table = np.zeros((2, 2))
    for x, y in zip(first, second):
        table["ab".index(x), "ab".index(y)] += 1
    assert chi2_contingency(table)[1] > 0.001
    assert table[1, 1] / len(USERS) == pytest.approx(0.25, abs=0.007)  # P(b, b) = P(b) P(b)
    # the same salt gives the same split: the test above would fail for correlated hashes
    again = [assign(u, "salt-one", arms) for u in USERS[:1000]]
    assert again == first[:1000]


def test_weights_and_holdout_shift_only_the_users_they_must():
    before = Experiment("w", arms=(Arm("a"), Arm("b")), salt="s")
    after = Experiment("w", arms=(Arm("a"), Arm("b", weight=3)), salt="s")  # b grows from 50% to 75%
    moved = [u for u in USERS[:20_000] if before.assign(u) != after.assign(u)]
    assert all(before.assign(u) == "a" and after.assign(u) == "b" for u in moved)  # nobody leaves b
    assert len(moved) / 20_000 == pytest.approx(0.25, abs=0.02)


def test_definitions_are_validated():
    with pytest.raises(ExperimentError, match="at least two arms"):
        Experiment("x", arms=(Arm("a"),))
    with pytest.raises(ExperimentError, match="exactly two arms"):
        Experiment("x", arms=(Arm("a"), Arm("b"), Arm("c")), type="interleaving")
    with pytest.raises(ExperimentError, match="holdout must be a share"):
        Experiment("x", arms=(Arm("a"), Arm("b")), holdout=0.9)
    with pytest.raises(ExperimentError, match="arm name 'holdout'"):
        Arm("holdout")
    with pytest.raises(ExperimentError, match="unknown retrieval setting 'colour'"):
        Arm("a", retrieval={"colour": "red"})
    with pytest.raises(ExperimentError, match="mmr_lambda must be between 0 and 1"):
        Arm("a", retrieval={"mmr_lambda": 3})
    with pytest.raises(ExperimentError, match="model must be MODEL_ID@VERSION"):
        Arm("a", model="vecrank")
    with pytest.raises(ExperimentError, match="experiment id"):
        Experiment("Bad Id", arms=(Arm("a"), Arm("b")))
    arm = Arm("a", model="vecrank@2", retrieval={"pool": "200", "exclude_seen": "false"})
    assert arm.retrieval == {"pool": 200, "exclude_seen": False} and arm.model_ref == ("vecrank", 2)


# --- statistics against hand-computed values -------------------------------------------------------------


def test_two_proportion_test_matches_hand_computation():
    # p1 = 0.10, p2 = 0.13 with n = 1000 each.
    # Wald: se = sqrt(.1*.9/1000 + .13*.87/1000) = 0.0142513; 0.03 -/+ 1.959964 * se
    # pooled: p = 0.115, se0 = sqrt(.115*.885*2/1000) = 0.0142671, z = 2.102741, p = 0.035488
    # Katz: se(log RR) = sqrt(.9/100 + .87/130) = 0.125269; exp(log 1.3 -/+ 1.96 se) - 1
    r = stats.proportion_test(100, 1000, 130, 1000)
    assert (r.control, r.treatment) == (0.1, 0.13)
    assert r.diff == pytest.approx(0.03)
    assert r.ci == pytest.approx((0.0020679, 0.0579321), abs=1e-6)
    assert r.z == pytest.approx(2.102741, abs=1e-5) and r.p_value == pytest.approx(0.035488, abs=1e-5)
    assert r.relative_lift == pytest.approx(0.3)
    assert r.lift_ci == pytest.approx((0.016984, 0.661776), abs=1e-5)
    same = stats.proportion_test(0, 50, 0, 80)
    assert same.p_value == 1.0 and same.relative_lift is None
    assert stats.proportion_test(0, 0, 3, 10).p_value is None
    with pytest.raises(ValueError, match="between 0 and trials"):
        stats.proportion_test(5, 4, 1, 10)


def test_clustered_rate_test_matches_hand_computation():
    # control: clicks 1, 0, 2, 1 of 10 exposures each: r = 0.1; residuals y - r d = 0, -1, 1, 0; equal
    # exposures, so the CR2 leverage correction 1 / (1 - 1/4) is n / (n - 1): var = 4/3 * 2 / 1600 =
    # 0.00166667; treatment 3, 2, 4, 3: r = 0.3, same residuals and variance. diff 0.2, se = sqrt(2 *
    # 0.00166667) = 0.057735, t = 3.464102; Welch df = (2v)^2 / (2 v^2 / 3) = 6: p = 2 P(T6 > 3.464102) =
    # 0.013400, t(0.975, 6) = 2.446912
    r = stats.clustered_rate_test([1, 0, 2, 1], [10] * 4, [3, 2, 4, 3], [10] * 4, min_users=2)
    assert (r.control, r.treatment, r.n_control) == (0.1, 0.3, 4)
    assert r.diff == pytest.approx(0.2) and r.z == pytest.approx(3.464102, abs=1e-6) and r.df == pytest.approx(6.0)
    assert r.p_value == pytest.approx(0.013400, abs=1e-6) and r.significant
    assert r.ci == pytest.approx((0.2 - 2.446912 * 0.057735, 0.2 + 2.446912 * 0.057735), abs=1e-5)
    # users with many correlated exposures: the clustered test is less sure than the two-proportion one
    heavy = stats.clustered_rate_test([0, 0, 0, 30], [100] * 4, [0, 0, 0, 45], [100] * 4, min_users=2)
    naive = stats.proportion_test(30, 400, 45, 400)
    assert naive.p_value < 0.1 < heavy.p_value
    # the report's default: no call below 10 users per arm, only the point estimates
    few = stats.clustered_rate_test([1, 0, 2, 1], [10] * 4, [3, 2, 4, 3], [10] * 4)
    assert few.diff == pytest.approx(0.2) and (few.ci, few.p_value, few.significant) == (None, None, None)
    assert few.note == "too few users to call: 4 and 4 (at least 10 per group)"


def test_cr2_variance_corrects_for_heavy_users_by_hand():
    # y = 0, 2, 1, 5 clicks of d = 5, 10, 10, 25 exposures: r = 8/50 = 0.16; residuals -0.8, 0.4, -0.6, 1.0;
    # leverages d / 50 = 0.1, 0.2, 0.2, 0.5; sum e^2 / (1 - h) = 0.711111 + 0.2 + 0.45 + 2.0 = 3.361111;
    # var = 3.361111 / 2500 = 0.00134444; n_eff = 50^2 / (25 + 100 + 100 + 625) = 2.941176
    r, var, n_eff = stats.clustered_ratio_variance([0, 2, 1, 5], [5, 10, 10, 25])
    assert r == pytest.approx(0.16) and var == pytest.approx(0.00134444, abs=1e-8)
    assert n_eff == pytest.approx(2.941176, abs=1e-6)
    # the plain delta method gives less: 4/3 * (0.64 + 0.16 + 0.36 + 1.0) / 2500 = 0.001152
    plain = stats.ratio_variance([0, 2, 1, 5], [5, 10, 10, 25])[1]
    assert plain == pytest.approx(0.001152) and plain < var
    # equal exposures: the two agree
    assert stats.clustered_ratio_variance([1, 0, 2, 1], [10] * 4)[1] == pytest.approx(
        stats.ratio_variance([1, 0, 2, 1], [10] * 4)[1]
    )
    assert math.isnan(stats.clustered_ratio_variance([3, 0], [10, 0])[1])  # one user holds every exposure


def test_click_ndcg_matches_hand_computation():
    assert stats.click_ndcg([1], k=10) == 1.0
    assert stats.click_ndcg([2], k=10) == pytest.approx(1 / math.log2(3))  # 0.630930
    # clicks at 1 and 3: (1 + 1/log2 4) / (1 + 1/log2 3) = 1.5 / 1.630930 = 0.919721
    assert stats.click_ndcg([1, 3], k=10) == pytest.approx(0.919721, abs=1e-6)
    assert stats.click_ndcg([3, 3, 1], k=10) == pytest.approx(0.919721, abs=1e-6)  # a position counts once
    assert stats.click_ndcg([11], k=10) == 0.0 and stats.click_ndcg([], k=5) == 0.0


def test_srm_chi_square_matches_hand_computation_and_flags_a_skew():
    even = stats.srm_test({"a": 5000, "b": 5000}, {"a": 1, "b": 1})
    assert (even.chi2, even.p_value, even.mismatch) == (0.0, 1.0, False)
    # (5200 - 5000)^2 / 5000 * 2 = 16, df 1: p = P(|Z| > 4) = 6.334e-5 < 0.001
    skew = stats.srm_test({"a": 5200, "b": 4800}, {"a": 1, "b": 1})
    assert skew.chi2 == pytest.approx(16.0) and skew.p_value == pytest.approx(6.3342e-5, rel=1e-3)
    assert skew.mismatch and "SAMPLE RATIO MISMATCH" in skew.message()
    # 2:1 weights observed 2:1 are fine; an arm of weight 0 that got users is a mismatch
    assert not stats.srm_test({"a": 2000, "b": 1000}, {"a": 2, "b": 1}).mismatch
    assert stats.srm_test({"a": 10, "b": 1}, {"a": 1, "b": 0}).mismatch


def test_bootstrap_on_known_values():
    r = stats.bootstrap_test([1.0] * 60, [2.0] * 80, n_boot=500)
    assert (r.control, r.treatment, r.diff, r.ci) == (1.0, 2.0, 1.0, (1.0, 1.0))
    assert r.relative_lift == pytest.approx(1.0) and r.p_value == pytest.approx(1 / 500)
    assert r.method == "bootstrap over users" and r.significant
    assert stats.bootstrap_test([3.0] * 60, [3.0] * 60, n_boot=200).p_value == 1.0
    # large normal samples: the percentile interval is close to the analytic one
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 1.0, 4000), rng.normal(1.1, 1.0, 4000)
    r = stats.bootstrap_test(a, b, n_boot=2000, seed=3)
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert r.ci[0] == pytest.approx(r.diff - 1.96 * se, abs=0.15 * se)
    assert r.ci[1] == pytest.approx(r.diff + 1.96 * se, abs=0.15 * se)
    assert stats.bootstrap_test([], [1.0], n_boot=200).diff is None


def test_bootstrap_with_few_users_is_welch_then_no_call():
    # 15 and 20 users: below the bootstrap's 50, Welch's t-test (scipy's, the reference)
    from scipy.stats import ttest_ind

    rng = np.random.default_rng(4)
    a, b = rng.exponential(1.0, 15), rng.exponential(1.2, 20)
    r = stats.bootstrap_test(a, b)
    ref = ttest_ind(b, a, equal_var=False)
    assert r.method.startswith("Welch t") and r.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert r.ci == pytest.approx(tuple(ref.confidence_interval()), rel=1e-9) and r.df == pytest.approx(ref.df)
    # the case: three users who all clicked more. The percentile bootstrap said p = 1/n_boot
    # with an interval of zero width; now there is no call at all
    few = stats.bootstrap_test([0.0, 0.0, 0.0], [1.0, 2.0, 1.0])
    assert few.diff == pytest.approx(4 / 3) and (few.ci, few.p_value, few.significant) == (None, None, None)
    assert few.note == "too few users to call: 3 and 3 (at least 10 per group)"
    assert stats.bootstrap_test([0.0] * 10, [1.0] * 10).p_value == 0.0  # from 10 users, a real difference calls


def test_conversion_needs_ten_users_per_arm():
    assert stats.proportion_test(0, 3, 3, 3).p_value < 0.05  # the z-test alone would call 0/3 against 3/3
    few = stats.proportion_test(0, 3, 3, 3, min_n=stats.MIN_USERS)
    assert (few.diff, few.p_value, few.significant) == (1.0, None, None) and few.note.startswith("too few users")


# --- the report on known events --------------------------------------------------------------------------


def _impressions(exp, request_id, user, arm, items, ts, team=None):
    return [
        {
            "user_id": user,
            "item_id": item,
            "type": "impression",
            "timestamp": ts,
            "request_id": request_id,
            "position": pos,
            "arm": exp.label(team or arm),
            "model_version": "m@1",
        }
        for pos, item in enumerate(items, 1)
    ]


def _event(user, item, kind, ts, request_id=None, arm=None):
    return {"user_id": user, "item_id": item, "type": kind, "timestamp": ts, "request_id": request_id, "arm": arm}


def test_report_on_hand_built_events():
    exp = Experiment("hand", arms=(Arm("control"), Arm("treat")), salt="s", started_at=T0, stopped_at=T0 + 10_000)
    items = ["i1", "i2", "i3", "i4"]
    ev = []
    ev += _impressions(exp, "r1", "u1", "control", items, T0 + 1)
    ev += _impressions(exp, "r2", "u2", "control", items, T0 + 2)
    ev += _impressions(exp, "r3", "u3", "treat", items, T0 + 3)
    ev += _impressions(exp, "r4", "u4", "treat", items, T0 + 4)
    ev += _impressions(exp, "r5", "u4", "treat", items, T0 + 5)
    ev += [
        _event("u1", "i1", "click", T0 + 100, "r1", exp.label("control")),  # ndcg 1
        _event("u2", "i3", "click", T0 + 100, "r2"),  # stored without its arm: attributed by request id
        _event("u2", "i9", "purchase", T0 + 200),  # a conversion of an exposed user
        _event("u3", "i1", "click", T0 + 100, "r3"),
        _event("u3", "i2", "click", T0 + 100, "r3"),
        _event("u3", "i2", "click", T0 + 101, "r3"),  # the same item again counts once
        _event("u4", "i2", "click", T0 + 100, "r5"),
        _event("u4", "i7", "click", T0 + 100, "r5"),  # not shown in r5: not counted
        _event("u4", "i1", "click", T0 + 100, "zz"),  # unknown request
        _event("u3", "i1", "purchase", T0 - 5),  # before the user's first exposure
        _event("u4", "i1", "purchase", T0 + 300, "other-experiments-request"),  # not this experiment's
    ]
    ev += _impressions(exp, "r6", "u5", "control", items, T0 + 20_000)  # after the end: outside the window
    rep = analyse(exp, ev, n_boot=500)
    c, t = rep.arms["control"], rep.arms["treat"]
    assert (c.users, c.requests, c.exposures, c.clicks, c.converted_users) == (2, 2, 8, 2, 1)
    assert (t.users, t.requests, t.exposures, t.clicks, t.converted_users) == (2, 3, 12, 3, 0)
    assert (c.ctr, c.clicks_per_user, c.conversion) == (0.25, 1.0, 0.5)
    assert (t.ctr, t.clicks_per_user, t.conversion) == (0.25, 1.5, 0.0)
    # control: u1 1.0, u2 1/log2(4) = 0.5 -> 0.75; treat: u3 1.0, u4 mean(0, 1/log2 3) = 0.315465 -> 0.657732
    assert c.ndcg == pytest.approx(0.75) and t.ndcg == pytest.approx(0.6577324, abs=1e-6)
    cmp = rep.comparisons["treat"]
    # the report leads with CTR users as clusters; the two-proportion one comes last, never called
    assert list(cmp) == ["ctr", "conversion", "clicks_per_user", "ndcg", "ctr_independent"]
    assert cmp["ctr"]["label"] == "CTR, users as clusters" and "over users" in cmp["ctr"]["method"]
    assert cmp["ctr"]["diff"] == pytest.approx(0.0) and cmp["ctr"]["p_value"] is None  # 2 users per arm
    assert cmp["ctr"]["note"].startswith("too few users to call") and cmp["ctr"]["significant"] is None
    assert cmp["ctr_independent"]["label"] == "CTR assuming independent impressions"
    assert cmp["ctr_independent"]["p_value"] == pytest.approx(1.0) and cmp["ctr_independent"]["significant"] is None
    assert cmp["ctr_independent"]["note"].startswith("assumes independent impressions")
    assert cmp["clicks_per_user"]["diff"] == pytest.approx(0.5) and cmp["clicks_per_user"]["p_value"] is None
    assert rep.counts["clicks_on_items_not_shown"] == 1 and rep.counts["impressions_outside_window"] == 4
    assert rep.counts["conversions_citing_other_requests"] == 1
    assert rep.srm.observed == {"control": 2, "treat": 2} and not rep.srm.mismatch
    assert set(rep.series) == {"ctr", "clicks_per_user", "conversion", "ndcg"}
    assert rep.series["ctr"]["treat"][-1][1] == pytest.approx(0.25)


def test_a_click_citing_another_users_request_does_not_count():
    """Clicks join requests by request id AND user: citing a request served to someone else is
    no click of that request's arm (nor of the clicker, who was never shown it)."""
    exp = Experiment("join", arms=(Arm("control"), Arm("treat")), salt="s", started_at=T0, stopped_at=T0 + 10_000)
    items = ["i1", "i2", "i3", "i4"]
    ev = _impressions(exp, "r1", "u1", "control", items, T0 + 1) + _impressions(exp, "r2", "u2", "treat", items, T0 + 2)
    ev += [
        _event("u1", "i1", "click", T0 + 100, "r1"),  # u1's own request: counts
        _event("u9", "i2", "click", T0 + 100, "r1"),  # r1 was u1's: must not count
        _event("u1", "i3", "click", T0 + 100, "r2"),  # r2 was u2's: must not count
    ]
    rep = analyse(exp, ev, n_boot=200)
    assert (rep.arms["control"].clicks, rep.arms["treat"].clicks) == (1, 0)
    assert rep.counts["clicks_citing_another_users_request"] == 2
    assert any("another user" in w for w in rep.warnings)
    assert user_outcomes(exp, ev)[0]["clicks"] == 1


def test_report_calls_a_real_ctr_difference_with_users_as_clusters():
    """60 users per arm, the treatment's users click twice as often: ``ctr`` (users as clusters) is
    significant and leads the JSON; the thresholds the report applied are in it too."""
    exp = Experiment("real", arms=(Arm("control"), Arm("treat")), salt="s", started_at=T0, stopped_at=T0 + 10**7)
    rng = np.random.default_rng(3)
    events = []
    for n in range(120):
        arm = "control" if n % 2 else "treat"
        for r in range(1 + n % 3):
            rid = f"r{n}-{r}"
            events += _impressions(exp, rid, f"u{n}", arm, ["a", "b", "c", "d"], T0 + 10 * n + r)
            for item in ["a", "b", "c", "d"]:
                if rng.random() < (0.15 if arm == "control" else 0.45):
                    events.append(_event(f"u{n}", item, "click", T0 + 10 * n + r + 1, rid))
    data = analyse(exp, events, n_boot=500).to_dict()
    ctr = data["comparisons"]["treat"]["ctr"]
    assert next(iter(data["comparisons"]["treat"])) == "ctr" and ctr["significant"] is True and ctr["p_value"] < 0.001
    assert ctr["ci"][0] > 0 and ctr["df"] > 50 and ctr["note"] is None
    assert data["comparisons"]["treat"]["clicks_per_user"]["significant"] is True
    assert data["thresholds"] == {"alpha": 0.05, "min_users": 10, "bootstrap_min_users": 50, "srm": 0.001}
    json.dumps(data)  # JSON-ready as the CLI prints it


def test_report_detects_sample_ratio_mismatch_on_a_skewed_split():
    exp = Experiment("skew", arms=(Arm("control"), Arm("treat")), salt="s", started_at=T0, stopped_at=T0 + 10**7)
    rng = np.random.default_rng(0)
    events = []
    # a broken split: 55% of 4,000 users reach the treatment although the weights say 50/50
    for n in range(4000):
        arm = "treat" if rng.random() < 0.55 else "control"
        events += _impressions(exp, f"r{n}", f"u{n}", arm, ["a", "b"], T0 + n)
    rep = analyse(exp, events, n_boot=200)
    assert rep.srm.mismatch and rep.srm.p_value < 1e-6
    assert rep.warnings[0].startswith("SAMPLE RATIO MISMATCH")
    # the same users split by the real assignment pass the check
    fair = []
    for n in range(4000):
        fair += _impressions(exp, f"r{n}", f"u{n}", exp.assign(f"u{n}"), ["a", "b"], T0 + n)
    assert not analyse(exp, fair, n_boot=200).srm.mismatch


def test_report_plots_one_png_per_metric(tmp_path):
    exp = Experiment("plot", arms=(Arm("control"), Arm("treat")), salt="s", started_at=T0, stopped_at=T0 + 10**6)
    events = []
    for n in range(200):
        arm = exp.assign(f"u{n}")
        events += _impressions(exp, f"r{n}", f"u{n}", arm, ["a", "b", "c"], T0 + n * 1000)
        if n % 3 == 0:
            events.append(_event(f"u{n}", "b", "click", T0 + n * 1000 + 5, f"r{n}"))
    files = analyse(exp, events, n_boot=200).plot(tmp_path)
    assert sorted(p.rsplit("-", 1)[1] for p in files) == [
        "clicks_per_user.png",
        "conversion.png",
        "ctr.png",
        "ndcg.png",
    ]
    for f in files:
        assert open(f, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


# --- definitions in Elasticsearch and the CLI -----------------------------------------------------------


def test_store_lifecycle(es, settings_for):
    store = ExperimentStore(es, settings_for)
    assert store.list() == [] and store.running() is None
    exp = store.create(Experiment("first", arms=(Arm("a"), Arm("b", weight=2)), holdout=0.05))
    with pytest.raises(ExperimentError, match="already exists"):
        store.create(Experiment("first", arms=(Arm("a"), Arm("b"))))
    store.create(Experiment("second", arms=(Arm("x"), Arm("y")), type="interleaving"))
    got = store.get("first")
    assert got.salt == exp.salt and got.arms == exp.arms and got.status == "draft"
    started = store.start("first", now_ms=T0)
    assert started.status == "running" and store.running().experiment_id == "first"
    with pytest.raises(ExperimentError, match="'first' is running; stop it first"):
        store.start("second")
    with pytest.raises(ExperimentError, match="is running; stop it first"):
        store.delete("first")
    stopped = store.stop("first", now_ms=T0 + 5)
    assert (stopped.status, stopped.started_at, stopped.stopped_at) == ("stopped", T0, T0 + 5)
    with pytest.raises(ExperimentError, match="only a draft can start"):
        store.start("first")
    with pytest.raises(ExperimentError, match="is stopped, not running"):
        store.stop("first")
    with pytest.raises(ExperimentError, match="no experiment 'nope'; known: first, second"):
        store.get("nope")
    store.delete("second")
    assert [e.experiment_id for e in store.list()] == ["first"]


def test_cli_create_start_report_stop(es, settings_for, capsys, tmp_path):
    from clihelp import connection_args, run_cli

    base = [*connection_args(settings_for), "--index-prefix", settings_for.index_prefix]
    bad = run_cli(capsys, *base, "experiment", "create", "e1", "--arm", "a=none", "--arm", "b=vecrank@7")
    assert bad.code == 1 and "model 'vecrank' has no version 7" in bad.err
    usage = run_cli(capsys, *base, "experiment", "create", "e1", "--arm", "a=none")
    assert usage.code == 2 and "at least two arms" in usage.err
    created = run_cli(
        capsys,
        *base,
        "experiment",
        "create",
        "e1",
        "--arm",
        "a=none",
        "--arm",
        "b=none,pool=50,weight=3",
        "--holdout",
        "0.1",
        "--salt",
        "salty",
        "--json",
    )
    assert created.code == 0, created.err
    summary = json.loads(created.out)
    assert summary["arms"][1] == {"name": "b", "weight": 3.0, "model": "none", "retrieval": {"pool": 50}}
    listed = run_cli(capsys, *base, "experiment", "list")
    assert "e1" in listed.out and "draft" in listed.out
    not_started = run_cli(capsys, *base, "experiment", "report", "e1")
    assert not_started.code == 1 and "has not started" in not_started.err
    assert run_cli(capsys, *base, "experiment", "start", "e1").code == 0
    shown = json.loads(run_cli(capsys, *base, "experiment", "show", "e1", "--json").out)
    assert shown["status"] == "running"
    report = run_cli(
        capsys, *base, "experiment", "report", "e1", "--json", "--out", str(tmp_path), "--bootstrap", "200"
    )
    assert report.code == 0, report.err
    data = json.loads(report.out)
    assert data["arms"]["a"]["users"] == 0 and data["srm"]["p_value"] is None
    assert list(data["comparisons"]["b"])[:1] == ["ctr"] and "ctr_independent" in data["comparisons"]["b"]
    text = run_cli(capsys, *base, "experiment", "report", "e1", "--no-plots")
    assert text.code == 0, text.err
    lines = text.out.splitlines()
    ctr_row = next(i for i, line in enumerate(lines) if "CTR, users as clusters" in line)
    naive_row = next(i for i, line in enumerate(lines) if "CTR assuming independent impressions" in line)
    assert ctr_row < naive_row and "too few users" in lines[ctr_row]
    assert "no test is called below 10 users per arm" in text.out
    refused = run_cli(capsys, *base, "experiment", "stop", "e1")  # no --yes and no terminal to confirm
    assert refused.code == 1
    assert run_cli(capsys, *base, "experiment", "stop", "e1", "--yes").code == 0
    assert json.loads(run_cli(capsys, *base, "experiment", "show", "e1", "--json").out)["status"] == "stopped"
    assert run_cli(capsys, *base, "experiment", "delete", "e1", "--yes").code == 0
