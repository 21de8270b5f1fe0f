"""User states, offline replays, features and the evaluation protocol (pure: no Elasticsearch)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from vecrank.ingest import cf
from vecrank.ingest.signals_table import signals_table
from vecrank.interactions import DAY_MS, Interactions, is_positive
from vecrank.rank import evaluate as ev
from vecrank.rank import features as feats
from vecrank.rank.offline import SOURCES, Catalog, Past, PoolConfig, top_scores
from vecrank.rank.profiles import ProfileConfig, build_profile
from vecrank.rank.recommender import Candidate
from vecrank.rank.state import CFMeta, StateConfig, UserState, compute_state, config_fingerprint, stored_state
from vecrank.rank.train import TrainConfig
from vecrank.rank.train import replay as replay_requests

T0 = 1_600_000_000_000


def _event(user, item, kind, value, day):
    return {"user_id": user, "item_id": item, "type": kind, "value": value, "timestamp": T0 + int(day * DAY_MS)}


def world(seed: int = 3, users: int = 60, items: int = 40):
    """Items in 4 topics with unit vectors near their topic's axis; users who rate within a topic,
    in a fixed per-topic order (so that sequences carry signal), over 300 days."""
    rng = np.random.default_rng(seed)
    r = random.Random(seed)
    axes = np.eye(8)[:4]
    catalog, topic_of = {}, {}
    for n in range(items):
        topic = n % 4
        v = axes[topic] + 0.3 * rng.normal(size=8)
        catalog[f"i{n:02d}"] = (
            v / np.linalg.norm(v),
            {"topic": f"t{topic}", "year": 1990 + n, "released": T0 - n * DAY_MS},
        )
        topic_of[f"i{n:02d}"] = topic
    events = []
    for u in range(users):
        topic = u % 4
        mine = sorted(i for i, t in topic_of.items() if t == topic)
        start = r.random() * 250
        for j, item in enumerate(mine[: r.randint(5, len(mine))]):
            events.append(_event(f"u{u:02d}", item, "rating", r.choice([2.0, 4.0, 4.5, 5.0]), start + j * 0.5))
        events.append(_event(f"u{u:02d}", f"i{r.randrange(items):02d}", "impression", None, start + 0.1))
    return Catalog.build(catalog), events


class MemoryItems:
    """ItemData over a dict of text vectors and one collaborative model."""

    def __init__(self, text, model, facets=None):
        self.text, self.model, self.facet_values = text, model, facets or {}

    def text_vectors(self, ids):
        return {i: self.text[i] for i in ids if i in self.text}

    def cf_vectors(self, ids):
        return self.model.vectors(ids)

    def neighbours(self, ids):
        return {i: self.model.neighbours[i] for i in ids if i in self.model.neighbours}

    def sequence(self, ids):
        return {i: self.model.sequence[i] for i in ids if i in self.model.sequence}

    def ease(self, ids):
        return {i: self.model.ease[i] for i in ids if i in self.model.ease}

    def facets(self, ids, names):
        return {i: {f: frozenset(self.facet_values.get(i, ())) for f in names} for i in ids}


def test_user_state_is_the_fold_in_cooccurrence_sequence_and_ease_of_the_history():
    catalog, events = world()
    log_ = Interactions.from_events(events)
    model = cf.fit(log_, cf.CFConfig(factors=4, neighbours=5, recent_likes=3, recent_interactions=2, ease_likes=4))
    text = {i: catalog.vectors[catalog.index(i)] for i in catalog.ids}
    history = [e for e in events if e["user_id"] == "u05"][:6]
    items = MemoryItems(text, model, {i: {"x"} for i in catalog.ids})
    config = StateConfig(history_k=2, facets=("topic",))
    state = compute_state(history, items, config=config, cf_meta=CFMeta.of(model))

    interactions = [e for e in history if e["type"] != "impression"]
    assert state.seen == {e["item_id"] for e in interactions}
    expected_profile = build_profile(interactions, text, ProfileConfig())
    np.testing.assert_allclose(state.profile_vector, expected_profile.vector)
    counts = cf.like_counts(interactions, is_positive)
    known = [i for i in sorted(counts) if model.vector(i) is not None]
    expected_cf = cf.fold_in(
        model.gram,
        np.stack([model.vector(i) for i in known]),
        np.array([counts[i] for i in known], dtype=float),
        regularization=0.05,
    )
    np.testing.assert_allclose(state.cf_vector, expected_cf)
    likes = cf.recent_likes(interactions, is_positive, 3)
    assert dict(state.cooc) == cf.neighbour_scores(items.neighbours(likes), likes, exclude=state.seen, limit=300)
    latest = cf.recent_items(interactions, 2)
    assert dict(state.seq) == cf.neighbour_scores(
        items.sequence(latest), latest, exclude=state.seen, decay=True, limit=300
    )
    newest = cf.recent_likes(interactions, is_positive, 4)
    assert state.ease and dict(state.ease) == cf.neighbour_scores(
        items.ease(newest), newest, exclude=state.seen, limit=300
    )
    assert [li.item_id for li in state.liked] == likes[:2] and state.liked[0].facets == {"topic": frozenset({"x"})}

    doc = state.to_doc(model="m", config=config)
    back = UserState.from_doc(doc, history)
    np.testing.assert_array_equal(back.cf_vector, state.cf_vector)
    assert back.cooc == state.cooc and back.seq == state.seq and back.ease == state.ease
    assert back.cf_version == model.version
    user_doc = {"history": history, "state": doc}
    assert stored_state(user_doc, model="m", config=config, cf_version=model.version) is not None
    assert stored_state(user_doc, model="other", config=config, cf_version=model.version) is None
    assert stored_state(user_doc, model="m", config=StateConfig(), cf_version=model.version) is None
    assert stored_state(user_doc, model="m", config=config, cf_version="refitted") is None
    assert doc["config"] == config_fingerprint(config)


def _past(catalog, events, refits=None, **kwargs):
    log_ = Interactions.from_events(events)
    spec = feats.FeatureSpec.for_fields(
        ["year", "released"], ["topic"], {"year": "integer", "released": "date"}, pool=PoolConfig().to_dict()
    )
    return Past(
        log_,
        catalog,
        refits=refits or ev.refit_instants(log_, 5),
        cf_config=cf.CFConfig(factors=4),
        state_config=StateConfig(facets=("topic",)),
        spec=spec,
        **kwargs,
    ), spec


def test_a_replayed_request_sees_only_what_existed_before_it():
    catalog, events = world()
    past, spec = _past(catalog, events)
    user = "u07"
    times = sorted(e["timestamp"] for e in events if e["user_id"] == user and e["type"] != "impression")
    cut = times[len(times) // 2]
    replayed = past.replay(user, cut, PoolConfig())
    assert replayed.state.history and max(e["timestamp"] for e in replayed.state.history) < cut
    model = past.model(cut)
    assert model.before_ms == past.refit_before(cut) <= cut
    later = past.log.count_before(model.before_ms)
    assert model.events == int(past.log.positive[:later].sum())  # fitted on exactly the events before its instant
    # The signals are the table as of the bucket's start, computed from the events up to it only.
    bucket = past.bucket(cut)
    assert bucket <= cut
    expected = signals_table(past.log, catalog.ids, as_of_ms=bucket)
    n = catalog.index(replayed.item_ids[0])
    assert replayed.candidates.signals["rating_count"][0] == expected["rating_count"][n]
    likes = past.future_likes(user, cut, cut + 10 * DAY_MS)
    assert all(cut <= t <= cut + 10 * DAY_MS for t in likes.values())


def test_the_pool_holds_each_source_s_exact_top_k():
    catalog, events = world()
    past, spec = _past(catalog, events)
    cut = max(e["timestamp"] for e in events) + 1
    pool = PoolConfig(text=3, cf=3, cooc=2, seq=2, popular=2, trending=1)
    model = past.model(cut)
    ranks = past.signals(cut)["popular_rank"]
    filled = set()
    for user in [f"u{n:02d}" for n in range(0, 60, 7)]:
        replayed = past.replay(user, cut, pool)
        state, order = replayed.state, replayed.source_order
        seen = state.seen
        eligible = [i for i in catalog.ids if i not in seen]
        p = state.profile_vector.astype(np.float64)
        by_cosine = sorted(eligible, key=lambda i: (-float(catalog.vectors[catalog.index(i)] @ p), i))
        assert order["text"] == by_cosine[:3]
        scored = [i for i in eligible if model.vector(i) is not None]
        u = state.cf_vector.astype(np.float64)
        by_cf = sorted(scored, key=lambda i: (-float(model.vector(i) @ u), i))
        assert order["cf"] == by_cf[:3]
        for name, scores in (("cooc", state.cooc), ("seq", state.seq)):
            assert order.get(name, []) == top_scores(scores, 2)  # the scores leave the seen items out already
            assert not set(scores) & seen
        assert set(order["popular"]) == {i for i in eligible if ranks[catalog.index(i)] <= 2}
        members = {i for items in order.values() for i in items}
        assert set(replayed.item_ids) == members and not members & seen
        filled |= {name for name, items in order.items() if items}
    assert filled == {"text", "cf", "cooc", "seq", "ease", "popular", "trending"}


def test_features_from_candidates_and_from_columns_agree():
    catalog, events = world()
    past, spec = _past(catalog, events)
    cut = max(e["timestamp"] for e in events) + 1
    replayed = past.replay("u03", cut, PoolConfig())
    batch = replayed.candidates
    candidates = []
    for n, item in enumerate(batch.item_ids):
        fields = dict(catalog.fields[catalog.index(item)])
        fields["signals"] = {k: (None if np.isnan(v[n]) else float(v[n])) for k, v in batch.signals.items()}
        candidates.append(
            Candidate(
                item_id=item,
                score=0.0,
                cosine=None,
                fields=fields,
                vector=batch.vectors[n] if batch.has_vector[n] else None,
                cf_vector=batch.cf_vectors[n] if batch.has_cf[n] else None,
            )
        )
    from_columns = feats.compute(spec, batch, replayed.context)
    from_candidates = feats.compute(spec, candidates, replayed.context)
    np.testing.assert_array_equal(from_columns, from_candidates)
    names = spec.names
    col = {name: from_columns[:, j] for j, name in enumerate(names)}
    # cf_score is the fold-in against the item factors; cooc is missing outside the user's scores.
    model = past.model(cut)
    for n, item in enumerate(batch.item_ids):
        v = model.vector(item)
        expected = np.nan if v is None else np.float32(v.astype(np.float64) @ replayed.state.cf_vector)
        np.testing.assert_allclose(col["cf_score"][n], expected, rtol=1e-6, equal_nan=True)
        assert np.isnan(col["cooc"][n]) == (item not in replayed.state.cooc)
    # Ranks: 1..m over the non-missing values, highest first, ties by id.
    ranked = col["rank_cf"][~np.isnan(col["rank_cf"])]
    assert sorted(ranked.tolist()) == list(range(1, len(ranked) + 1))
    top = batch.item_ids[int(np.nanargmin(col["rank_cf"]))]
    assert top == replayed.source_order["cf"][0]
    assert np.all((col["n_sources"] >= 1) & (col["n_sources"] <= len(SOURCES)))
    ages = (cut - np.array([catalog.fields[catalog.index(i)]["released"] for i in batch.item_ids])) / DAY_MS
    np.testing.assert_allclose(col["age.released"], ages.astype(np.float32), rtol=1e-6)


def test_source_count_and_pool_ranks():
    values = np.array([0.5, np.nan, 0.5, 0.9], dtype=np.float32)
    assert feats.pool_ranks(values, ["b", "x", "a", "c"]).tolist()[0] == 3.0  # "a" before "b" on the tie
    ranks = feats.pool_ranks(values, ["b", "x", "a", "c"])
    assert np.isnan(ranks[1]) and ranks[3] == 1.0 and ranks[2] == 2.0
    cols = {"r1": np.array([1.0, 5.0, np.nan]), "r2": np.array([2.0, 2.0, 1.0])}
    assert feats.source_count(cols, [("r1", 4), ("r2", 2)]).tolist() == [2.0, 1.0, 1.0]


def test_two_evaluations_agree_and_training_never_sees_later_labels():
    catalog, events = world(users=80)
    config = ev.EvalConfig(refits=5, first_test_quantile=0.3, horizon_days=60)
    past, spec = _past(catalog, events, refits=ev.refit_instants(Interactions.from_events(events), 5))
    replay = ev.ReplayConfig(
        pool=PoolConfig(), state=StateConfig(facets=("topic",)), cf=cf.CFConfig(factors=4), spec=spec
    )
    quick = TrainConfig(num_boost_round=30, num_parallel_tree=1)
    first = ev.run(past, replay_config=replay, config=config, train_config=quick)
    past_again, _ = _past(catalog, events, refits=past.refits)
    second = ev.run(past_again, replay_config=replay, config=config, train_config=quick)
    assert first.systems == second.systems and first.comparison == second.comparison
    assert first.split["evaluated_users"] > 10
    assert set(first.systems) == {"popular", "cooccurrence", "itemknn", "als", "ease", "text", "vecrank"}
    assert "recall@50" in first.slices["cold_items"]["systems"].get("vecrank", {"recall@50": 0})

    # Each ranker learns from requests cut before its instant, with labels known before it.
    per = ev.training_requests(past, before_ms=past.refits[-1], config=config)
    assert per and all(q.cut_ms < past.refits[-1] and q.label_end_ms < past.refits[-1] for q in per)
    table = replay_requests(past, per, spec=spec, pool=replay.pool)
    truncated = table.before(past.refits[-2])
    assert len(truncated) and len(truncated) < len(table)
    assert all(c < past.refits[-2] for c in truncated.cut_ms)
    assert all(t < past.refits[-2] for lab, t in zip(truncated.label, truncated.label_ms) if lab > 0)


def test_configs_round_trip():
    replay = ev.ReplayConfig(
        pool=PoolConfig(text=7, seq=3),
        state=StateConfig(history_k=5, facets=("g",)),
        cf=cf.CFConfig(factors=8),
        spec=feats.FeatureSpec(item_numeric=("year",), sources=(("rank_cf", 10),)),
    )
    assert ev.ReplayConfig.from_dict(replay.to_dict()) == replay
    with pytest.raises(ValueError):
        PoolConfig(text=-1)
