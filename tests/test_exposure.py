"""The cold-item exposure policy (``vecrank.rank.exposure``): the placement on handcrafted orders,
the config's round trips (alone and inside ``ReplayConfig``), the ``_source`` it needs, and the
offline evaluation's use of it (pure: no Elasticsearch; the serving parity at k = 50 is in
``tests/test_plugin_ranker.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from test_offline import _past, world  # noqa: E402  (tests/ is on the path, as for clihelp)

from vecrank.ingest import cf
from vecrank.rank import evaluate as ev
from vecrank.rank.exposure import SIGNAL_FIELD, ColdSlots, interactions_of, place_cold
from vecrank.rank.offline import PoolConfig, ReplayConfig
from vecrank.rank.queries import source_with
from vecrank.rank.ranker import _shown_hit, rank_order
from vecrank.rank.state import StateConfig
from vecrank.rank.train import TrainConfig

POLICY = ColdSlots()


def _cold(n: int, *indices: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[list(indices)] = True
    return mask


def test_slots_are_every_tenth_position_from_the_twentieth():
    assert POLICY.slots(50) == [20, 30, 40, 50]
    assert POLICY.slots(49) == [20, 30, 40]
    assert POLICY.slots(20) == [20]
    assert POLICY.slots(19) == POLICY.slots(10) == POLICY.slots(0) == []
    assert ColdSlots(every=3).slots(13) == [6, 9, 12]


def test_each_slot_takes_the_best_ranked_cold_candidate_not_placed():
    # 80 candidates, best first in this shuffled order; five of them cold, ranked low.
    order = np.random.default_rng(0).permutation(80)
    cold_ids = [int(order[i]) for i in (55, 60, 62, 70, 79)]
    cold = _cold(80, *cold_ids)
    before = (order.copy(), cold.copy())
    top = place_cold(order, cold, k=50, policy=POLICY)
    assert len(top) == 50 and len(set(top.tolist())) == 50
    # The slots hold the four best-ranked cold candidates, in their order.
    assert [int(top[p - 1]) for p in (20, 30, 40, 50)] == cold_ids[:4]
    # Everything else keeps the model's order: the first 46 non-cold candidates.
    others = [int(i) for i in top if i not in cold_ids]
    assert others == [int(i) for i in order if int(i) not in cold_ids][:46]
    # The head is the model's own.
    assert top[:19].tolist() == order[:19].tolist()
    # Nothing was modified in place.
    assert np.array_equal(order, before[0]) and np.array_equal(cold, before[1])


def test_without_cold_candidates_or_with_only_cold_ones_the_order_stands():
    order = np.arange(60)[::-1]
    assert place_cold(order, _cold(60), k=50, policy=POLICY).tolist() == order[:50].tolist()
    assert place_cold(order, np.ones(60, dtype=bool), k=50, policy=POLICY).tolist() == order[:50].tolist()
    # threshold 0: nothing is cold, whatever the counts.
    off = ColdSlots(threshold=0)
    assert not off.cold_mask([0, None, 3]).any()
    assert place_cold(order, off.cold_mask([0] * 60), k=50, policy=off).tolist() == order[:50].tolist()


def test_cold_candidates_in_the_head_stay_and_use_no_slot():
    order = list(range(60))
    # 2 and 7 are ranked into the head; 33 and 45 are below; 58 is the last.
    top = place_cold(order, _cold(60, 2, 7, 33, 45, 58), k=50, policy=POLICY).tolist()
    assert top[2] == 2 and top[7] == 7
    assert (top[19], top[29], top[39], top[49]) == (33, 45, 58, 48)  # no cold one left for 50: ordinary
    assert top == [*range(19), 33, *range(19, 28), 45, *range(28, 33), *range(34, 38), 58, *range(38, 45), 46, 47, 48]
    # A cold candidate the order reaches on its own before a slot is not placed twice.
    top = place_cold(order, _cold(60, 19, 20), k=30, policy=POLICY).tolist()
    assert top[:21] == list(range(21)) and top[29] == 29  # 19 is at 20 by rank, 20 at 21; none left for 30


def test_below_the_first_slot_nothing_moves():
    order = list(range(40))
    cold = _cold(40, 30, 31)
    for k in (1, 10, 19):
        assert place_cold(order, cold, k=k, policy=POLICY).tolist() == order[:k]
    assert place_cold(order, cold, k=20, policy=POLICY).tolist() == [*range(19), 30]


def test_short_pools_and_k_zero():
    assert place_cold([3, 1, 2], _cold(4, 2), k=50, policy=POLICY).tolist() == [3, 1, 2]
    order = list(range(25))
    top = place_cold(order, _cold(25, 24), k=50, policy=POLICY).tolist()
    assert len(top) == 25 and top[19] == 24 and sorted(top) == order
    assert place_cold(order, _cold(25, 24), k=0, policy=POLICY).tolist() == []


def test_cold_mask_counts_a_missing_signal_as_zero():
    counts = interactions_of(
        [
            {"signals": {"interactions": 4}},
            {"signals": {"interactions": 5}},
            {"signals": {"clicks": 3}},
            {"title": "no signals"},
            {"signals": None},
            {"signals": {"interactions": 120}},
        ]
    )
    assert counts == [4.0, 5.0, None, None, None, 120.0]
    assert POLICY.cold_mask(counts).tolist() == [True, False, True, True, True, False]
    assert POLICY.cold_mask(np.array([0.0, np.nan, 7.0])).tolist() == [True, True, False]


def test_policy_config_round_trips_and_refuses_bad_values():
    for policy in (ColdSlots(), ColdSlots(threshold=0), ColdSlots(threshold=12, every=7)):
        assert ColdSlots.from_dict(policy.to_dict()) == policy
    assert ColdSlots().to_dict() == {"threshold": 5, "every": 10}
    for bad in ({"threshold": -1}, {"every": 0}, {"threshold": 2.5}, {"every": True}):
        with pytest.raises(ValueError, match="cold_slots"):
            ColdSlots(**bad)
    with pytest.raises(ValueError, match="unknown"):
        ColdSlots.from_dict({"threshold": 5, "slots": 4})


def test_replay_config_carries_the_policy_and_reads_configs_without_it():
    replay = ReplayConfig(pool=PoolConfig(text=7), state=StateConfig(history_k=5), cold_slots=ColdSlots(3, 8))
    data = replay.to_dict()
    assert data["cold_slots"] == {"threshold": 3, "every": 8}
    assert ReplayConfig.from_dict(data) == replay
    # A model registered before the policy existed: the policy's default.
    older = {k: v for k, v in ReplayConfig().to_dict().items() if k != "cold_slots"}
    assert ReplayConfig.from_dict(older) == ReplayConfig() and ReplayConfig.from_dict(older).cold_slots == ColdSlots()


def test_the_pool_search_source_returns_the_signal():
    assert source_with(["title", "year"], SIGNAL_FIELD) == ["title", "year", SIGNAL_FIELD]
    assert source_with(["item_id", "signals"], SIGNAL_FIELD) == ["item_id", "signals"]
    assert source_with(["signals.interactions"], SIGNAL_FIELD) == ["signals.interactions"]
    assert source_with({"excludes": ["embedding", "cf_vector"]}, SIGNAL_FIELD) == {
        "excludes": ["embedding", "cf_vector"]
    }
    assert source_with({"excludes": ["signals"]}, SIGNAL_FIELD) == {"excludes": []}
    assert source_with({"includes": ["title"]}, SIGNAL_FIELD) == {"includes": ["title", SIGNAL_FIELD], "excludes": []}
    assert source_with(True, SIGNAL_FIELD) is True and source_with(False, SIGNAL_FIELD) == [SIGNAL_FIELD]
    # What the search added is taken off the shown document again; the hit itself is not modified.
    hit = {"_id": "a", "_score": 1.0, "_source": {"title": "A", "signals": {"interactions": 2}}}
    assert _shown_hit(hit, strip=True) == {"_id": "a", "_score": 1.0, "_source": {"title": "A"}}
    assert hit["_source"]["signals"] == {"interactions": 2}
    both = {"_id": "b", "_source": {"signals": {"interactions": 2, "ctr": 0.1}}}
    assert _shown_hit(both, strip=True)["_source"] == {"signals": {"ctr": 0.1}}
    assert _shown_hit(hit, strip=False) is hit


def test_the_evaluation_orders_vecrank_as_serving_does():
    """The top 50 the evaluation scores is the model's order through the cold slots, with the cold
    mask from the replay's signals as of the request (``Past.signals(t)["interactions"]``)."""
    catalog, events = world(users=80)
    past, spec = _past(catalog, events)
    user = "u05"
    times = sorted(e["timestamp"] for e in events if e["user_id"] == user and e["type"] != "impression")
    cut = times[len(times) // 2]
    replayed = past.replay(user, cut, PoolConfig())
    ids = replayed.item_ids
    assert len(ids) > 20
    rows = [past.catalog.index(i) for i in ids]
    counts = past.signals(cut)["interactions"][rows]
    assert np.array_equal(replayed.candidates.signals["interactions"], counts)
    scores = np.random.default_rng(1).normal(size=len(ids))
    # A threshold that makes about half of the pool cold, and slots within the small pool.
    policy = ColdSlots(threshold=int(np.median(counts)) + 1, every=3)
    replay_config = ReplayConfig(spec=spec, cold_slots=policy)
    got = ev._served_order(scores, replayed, replay_config, 50)
    want = place_cold(rank_order(scores, ids), counts < policy.threshold, k=50, policy=policy)
    assert got.tolist() == want.tolist()
    assert got.tolist() != rank_order(scores, ids)[:50].tolist()  # the policy moved something
    off = ReplayConfig(spec=spec, cold_slots=ColdSlots(threshold=0))
    assert ev._served_order(scores, replayed, off, 50).tolist() == rank_order(scores, ids)[:50].tolist()


def test_the_evaluation_report_says_the_policy_is_on():
    catalog, events = world(users=80)
    config = ev.EvalConfig(refits=5, first_test_quantile=0.3, horizon_days=60)
    past, spec = _past(catalog, events)
    replay = ev.ReplayConfig(
        pool=PoolConfig(), state=StateConfig(facets=("topic",)), cf=cf.CFConfig(factors=4), spec=spec
    )
    report = ev.run(past, replay_config=replay, config=config, train_config=TrainConfig(num_boost_round=10))
    out = report.to_dict()
    policy = {"threshold": 5, "every": 10, "on": True, "slots@50": [20, 30, 40, 50]}
    assert out["training"]["policy"] == {"cold_slots": policy}
    assert out["training"]["config"]["cold_slots"] == {"threshold": 5, "every": 10}
    assert out["slices"]["cold_items"]["vecrank_policy"] == {"cold_slots": policy}
