"""Team-draft interleaving: the merge's invariants, credit, and the preference on known outcomes."""

from __future__ import annotations

import random

import pytest

from vecrank.rank.experiments import INTERLEAVED, Arm, Experiment, analyse
from vecrank.rank.interleaving import credit, outcome, preference, team_draft

T0 = 1_700_000_000_000


def test_team_draft_invariants():
    rng = random.Random(0)
    catalog = [f"i{n}" for n in range(40)]
    for trial in range(300):
        a, b = rng.sample(catalog, 15), rng.sample(catalog, 15)
        k = rng.randint(1, 20)
        merged = team_draft({"A": a, "B": b}, k, seed=f"req-{trial}")
        items = [i for i, _ in merged]
        assert len(items) == len(set(items)) == min(k, len(set(a) | set(b)))
        picks = {"A": 0, "B": 0}
        for n, (item, team) in enumerate(merged, 1):
            picks[team] += 1
            # while both lists have items left, the teams never differ by more than one pick
            assert abs(picks["A"] - picks["B"]) <= 1 or n > 2 * min(len(a), len(b))
            own = a if team == "A" else b
            # a team's pick is its best item not already shown
            assert item == next(x for x in own if x not in items[: n - 1])
    same = team_draft({"A": ["x", "y"], "B": ["x", "y"]}, 2, seed="s")
    assert [i for i, _ in same] == ["x", "y"] and {t for _, t in same} == {"A", "B"}
    assert team_draft({"A": list("abc"), "B": list("de")}, 5, seed="r") == team_draft(
        {"A": list("abc"), "B": list("de")}, 5, seed="r"
    )  # reproducible from the request id
    with pytest.raises(ValueError, match="exactly two"):
        team_draft({"A": ["x"]}, 1)


def test_the_first_pick_is_a_fair_coin():
    firsts = [team_draft({"A": ["a"], "B": ["b"]}, 1, seed=f"r{n}")[0][1] for n in range(4000)]
    assert firsts.count("A") / 4000 == pytest.approx(0.5, abs=0.03)


def test_credit_and_outcome():
    teams = {"a": "A", "b": "B", "c": "A"}
    assert credit(teams, ["a", "c", "c", "zz"]) == {"A": 2, "B": 0}
    assert outcome({"A": 2, "B": 0}, "A", "B") == "A"
    assert outcome({"A": 1, "B": 1}, "A", "B") == "tie"
    assert outcome({"A": 0, "B": 0}, "A", "B") is None


def test_preference_on_known_outcomes():
    # 60 users: 40 prefer B (2 wins each), 20 prefer A (1 win each), plus 10 ties in all
    per_user = {f"b{n}": (0, 2, 0) for n in range(40)} | {f"a{n}": (1, 0, 0) for n in range(20)}
    per_user |= {f"t{n}": (0, 0, 1) for n in range(10)}
    r = preference(per_user, "A", "B")
    assert (r.wins_a, r.wins_b, r.ties, r.requests_with_clicks, r.users) == (20, 80, 10, 110, 70)
    assert r.share_b == pytest.approx((80 + 5) / 110)
    assert (r.users_preferring_a, r.users_preferring_b) == (20, 40)
    # sign test over users: 2 * sum_{k=40..60} C(60, k) / 2^60, computed exactly with integers
    from math import comb

    assert r.sign_test_p == pytest.approx(2 * sum(comb(60, k) for k in range(40, 61)) / 2**60, rel=1e-9)
    assert r.sign_test_p == pytest.approx(0.013489, abs=1e-6)
    # t-test of the share, variance over users with the CR2 correction: residuals won - s * decided are
    # 0.454545 (40 users, leverage 2/110), -0.772727 (20, 1/110), -0.272727 (10, 1/110); sum of e^2 / (1 - h)
    # = 8.417508 + 12.051698 + 0.750626 = 21.219832; var = 21.219832 / 110^2 = 0.00175371;
    # t = (0.7727273 - 0.5) / sqrt(0.00175371) = 6.512536; df = n_eff - 1 = 110^2 / 190 - 1 = 62.684211
    from scipy.stats import t

    assert r.p_value == pytest.approx(2 * t.sf(6.512536, 62.684211), rel=1e-4)
    half = t.ppf(0.975, 62.684211) * 0.00175371**0.5
    assert r.ci == pytest.approx((85 / 110 - half, 85 / 110 + half), abs=1e-6)
    assert r.ci[0] > 0.5 and r.winner == "B" and r.note is None
    even = preference({f"u{n}": ((1, 0, 0) if n % 2 else (0, 1, 0)) for n in range(200)}, "A", "B")
    assert even.winner is None and even.ci[0] < 0.5 < even.ci[1]
    assert preference({}, "A", "B").share_b is None


def test_no_winner_from_a_handful_of_users():
    """The issue's case: one to three users who all prefer B. The bootstrap interval had zero width and
    the z-test p = 0, so B "won"; now below 10 users nothing is called, and the exact sign test (given
    beside) could not reach 5% anyway: 3 users out of 3 is p = 0.25."""
    for users in (1, 2, 3, 9):
        r = preference({f"u{n}": (0, 1 + n, 0) for n in range(users)}, "A", "B")
        assert r.share_b == 1.0 and (r.winner, r.ci, r.p_value) == (None, None, None)
        assert r.note == f"too few users to call: {users} with a decided request (at least 10)"
        assert r.sign_test_p == pytest.approx(min(1.0, 2 * 0.5**users))
        assert r.to_dict()["significant"] is False
    # ten users all preferring B is real evidence (sign test 2 / 2^10): now B wins
    ten = preference({f"u{n}": (0, 1 + n % 3, 0) for n in range(10)}, "A", "B")
    assert ten.winner == "B" and ten.sign_test_p == pytest.approx(2 / 1024) and ten.p_value < 0.05


def test_interleaving_report_finds_the_better_ranker():
    """Simulated users click items by relevance; ranker B puts relevant items higher than A."""
    exp = Experiment(
        "tdi",
        arms=(Arm("A"), Arm("B")),
        type="interleaving",
        salt="s",
        holdout=0.2,
        started_at=T0,
        stopped_at=T0 + 10**8,
    )
    rng = random.Random(7)
    events = []
    for n in range(400):
        user = f"u{n}"
        relevant = {f"i{j}" for j in rng.sample(range(30), 5)}
        ranked_b = sorted((f"i{j}" for j in range(30)), key=lambda i: (i not in relevant, rng.random()))
        ranked_a = rng.sample(ranked_b, 30)
        unit = exp.assign(user)
        rid = f"r{n}"
        if unit == INTERLEAVED:
            merged = team_draft({"A": ranked_a, "B": ranked_b}, 10, seed=rid)
        else:
            merged = [(i, "holdout") for i in ranked_a[:10]]
        for pos, (item, team) in enumerate(merged, 1):
            events.append(
                {
                    "user_id": user,
                    "item_id": item,
                    "type": "impression",
                    "timestamp": T0 + n,
                    "request_id": rid,
                    "position": pos,
                    "arm": exp.label(team),
                }
            )
            if item in relevant and rng.random() < 0.7 / pos**0.5:
                events.append(
                    {"user_id": user, "item_id": item, "type": "click", "timestamp": T0 + n + 1, "request_id": rid}
                )
    rep = analyse(exp, events, n_boot=500)
    assert rep.interleaving.winner == "B" and rep.interleaving.p_value < 0.001
    assert rep.interleaving.sign_test_p < 0.001
    assert list(rep.comparisons[INTERLEAVED]) == ["ctr", "clicks_per_user", "ctr_independent"]
    assert rep.arms[INTERLEAVED].users + rep.arms["holdout"].users == 400
    assert not rep.srm.mismatch
    assert "preference" in rep.series
