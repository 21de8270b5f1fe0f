"""Retrieval: profile math, request bodies as dicts, and candidates from the real node."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vecrank.ingest.embed import Embedder
from vecrank.ingest.items import ItemSource, ingest_items
from vecrank.rank import queries
from vecrank.rank.profiles import DAY_MS, ProfileConfig, build_profile
from vecrank.rank.recommender import Recommender, cap_per_group, merge_with_quotas

T0 = 1_700_000_000_000


def ev(item, kind="click", days_ago=0.0, value=None, now=T0):
    return {"item_id": item, "type": kind, "value": value, "timestamp": int(now - days_ago * DAY_MS)}


# --- profile math on hand-made vectors ----------------------------------------------------------

E = {"a": np.array([1.0, 0, 0]), "b": np.array([0, 1.0, 0]), "c": np.array([0, 0, 1.0])}


def test_weighted_mean_with_type_weights():
    p = build_profile([ev("a", "click"), ev("b", "purchase")], E, ProfileConfig())
    expected = np.array([1.0, 3.0, 0]) / np.sqrt(10)
    assert np.allclose(p.vector, expected, atol=1e-6)


def test_half_life_decay():
    cfg = ProfileConfig(half_life_days=10)
    p = build_profile([ev("a", days_ago=10), ev("b", days_ago=0)], E, cfg)
    assert np.allclose(p.vector, np.array([0.5, 1.0, 0]) / np.sqrt(1.25), atol=1e-6)
    # only relative ages matter: the same history four hundred days later gives the same profile
    later = build_profile([ev("a", days_ago=10, now=T0 + 400 * DAY_MS), ev("b", now=T0 + 400 * DAY_MS)], E, cfg)
    assert np.allclose(later.vector, p.vector, atol=1e-6)


def test_low_ratings_push_away_and_dislikes_alone_make_no_profile():
    p = build_profile(
        [ev("a", "rating", value=5.0), ev("b", "rating", value=1.0), ev("c", "rating", value=3.0)], E, ProfileConfig()
    )
    assert np.allclose(p.vector, np.array([1.0, -1.0, 0]) / np.sqrt(2), atol=1e-6)
    assert (p.positive_weight, p.negative_weight) == (1.0, 1.0)
    cold = build_profile([ev("a", "rating", value=1.0), ev("b", "impression")], E, ProfileConfig())
    assert cold.vector is None and cold.n_events == 2
    neg = build_profile(
        [ev("a", "click"), ev("b", "dislike")],
        E,
        ProfileConfig(type_weights={"click": 1.0, "dislike": 2.0}, negative_types=frozenset({"dislike"})),
    )
    assert np.allclose(neg.vector, np.array([1.0, -2.0, 0]) / np.sqrt(5), atol=1e-6)


def test_items_without_vectors_are_ignored():
    p = build_profile([ev("a"), ev("missing")], E, ProfileConfig())
    assert p.n_events == 1 and np.allclose(p.vector, E["a"])


def test_multi_interest_finds_both_groups():
    vecs = {
        "h1": np.array([1.0, 0.1, 0]),
        "h2": np.array([0.9, 0, 0.1]),
        "h3": np.array([1.0, 0, 0]),
        "k1": np.array([0, 1.0, 0.1]),
        "k2": np.array([0.1, 1.0, 0]),
    }
    history = [ev(i) for i in vecs]
    p = build_profile(history, vecs, ProfileConfig(max_interests=2))
    assert len(p.interests) == 2
    assert set(p.interests[0].items) == {"h1", "h2", "h3"} and p.interests[0].weight == pytest.approx(0.6)
    assert set(p.interests[1].items) == {"k1", "k2"}
    assert p.interests[0].vector[0] > 0.9 and p.interests[1].vector[1] > 0.9


def test_profile_config_round_trip():
    cfg = ProfileConfig(
        half_life_days=7,
        negative_types=frozenset({"dislike"}),
        max_interests=3,
        type_weights={"click": 1, "dislike": 1},
    )
    assert ProfileConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="half_life_days"):
        ProfileConfig(half_life_days=0)


# --- request bodies -----------------------------------------------------------------------------


def test_candidate_filter_and_knn_bodies():
    flt = queries.candidate_filter([{"term": {"genres": "Horror"}}], exclude_ids=["1", "2"])
    assert flt == {
        "bool": {
            "filter": [{"term": {"genres": "Horror"}}],
            "must_not": [{"ids": {"values": ["1", "2"]}}, {"term": {"available": False}}],
        }
    }
    assert queries.knn_clause([0.5, 0.5], k=10, num_candidates=100, filter=flt, similarity=0.3) == {
        "field": "embedding",
        "query_vector": [0.5, 0.5],
        "k": 10,
        "num_candidates": 100,
        "filter": flt,
        "similarity": 0.3,
    }
    body = queries.popular_body(size=5, filter=None, source=["title"])
    assert body["query"] == {"match_all": {}} and body["_source"] == ["title"] and body["size"] == 5
    assert body["sort"][0] == {
        "signals.popularity_30d": {"order": "desc", "missing": "_last", "unmapped_type": "float"}
    }


def test_filter_values_are_structured_never_query_strings():
    types = {"genres": "keyword", "year": "integer", "text": "text"}
    assert queries.filter_clauses({"genres": 'Horror" OR *:*'}, types) == [{"term": {"genres": 'Horror" OR *:*'}}]
    with pytest.raises(queries.RequestError, match="unknown filter field 'brand'; filterable fields: genres, year"):
        queries.filter_clauses({"brand": "x"}, types)
    with pytest.raises(queries.RequestError, match="'text' is text"):
        queries.filter_clauses({"text": "x"}, types)
    with pytest.raises(queries.RequestError, match="range filter on 'year' takes gte/gt/lte/lt"):
        queries.filter_clauses({"year": {"from": 1}}, types)
    with pytest.raises(queries.RequestError, match="not a string, number or boolean"):
        queries.filter_clauses({"genres": {"$ne": 1}.keys()}, types)


@pytest.mark.parametrize(
    "k,num,message",
    [
        (0, 10, "k must be"),
        (10, 5, "num_candidates must be between k"),
        (10, 20000, "num_candidates must be between"),
        (20000, 20000, "k must be"),
    ],
)
def test_knn_size_limits(k, num, message):
    with pytest.raises(queries.RequestError, match=message):
        queries.check_knn_size(k, num)


@pytest.mark.parametrize(
    "vec,message",
    [([1.0, float("nan")], "NaN"), ([1.0], "2 dimensions"), ([0.0, 0.0], "all zeros"), (["a", "b"], "list of numbers")],
)
def test_malformed_vectors(vec, message):
    with pytest.raises(queries.RequestError, match=message):
        queries.check_vector(vec, 2)


def test_merge_with_quotas_and_group_caps():
    a = [{"_id": f"a{i}"} for i in range(5)]
    b = [{"_id": f"b{i}"} for i in range(5)] + [{"_id": "a0"}]
    merged = merge_with_quotas([a, b], [0.75, 0.25], 4)
    assert [(h["_id"], i) for h, i in merged] == [("a0", 0), ("b0", 1), ("a1", 0), ("a2", 0)]
    from vecrank.rank.recommender import Candidate

    cands = [Candidate(str(i), 1.0, None, {"series": s}) for i, s in enumerate(["x", "x", "y", "x", None])]
    assert [c.item_id for c in cap_per_group(cands, "series", 2)] == ["0", "1", "2", "4"]


# --- against the real node --------------------------------------------------------------------

HORROR = [
    "A haunted house terrifies a family at night",
    "A masked killer stalks teenagers at a summer camp",
    "Zombies overrun a small town and survivors hide",
    "A demon possesses a young girl and priests fight it",
    "A cursed videotape kills whoever watches it",
    "Vampires hunt travellers in a remote village",
    "A ghost ship drifts with a murderous spirit aboard",
    "A creepy doll brings death to its owners",
]
COOKING = [
    "A chef teaches how to bake sourdough bread at home",
    "Quick pasta recipes with fresh tomatoes and basil",
    "A pastry competition for the best chocolate cake",
    "Grilling steaks and vegetables on a barbecue",
    "Traditional Japanese ramen broth made from scratch",
    "Easy vegan curry recipes for weeknights",
    "A baker shares secrets of French croissants",
    "Street food tour tasting tacos and dumplings",
]
SPACE = [
    "Astronauts repair a space station in orbit",
    "A documentary about the planets of the solar system",
    "A rover explores the surface of Mars",
    "The life and death of stars and black holes",
    "Rockets launch a telescope into deep space",
    "Scientists search for life on distant exoplanets",
    "Landing on the Moon: the Apollo missions",
    "Comets and asteroids that pass near the Earth",
]


def catalog() -> list[dict]:
    rows = []
    for genre, texts in (("Horror", HORROR), ("Cooking", COOKING), ("Space", SPACE)):
        for i, text in enumerate(texts):
            rows.append(
                {
                    "id": f"{genre[0].lower()}{i}",
                    "title": text,
                    "genre": genre,
                    "series": f"{genre}-{i % 2}",
                    "year": 2000 + i,
                    "available": not (genre == "Space" and i == 7),
                }
            )
    return rows


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.fixture
def items(es, settings_for, embedder, tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in catalog()))
    summary = ingest_items(
        es, settings_for, path, ItemSource(template="{title}", field_types={"year": "integer"}), embedder=embedder
    )
    assert summary.written == 24
    return catalog()


def genres(cs) -> list[str]:
    return [c.fields["genre"] for c in cs.candidates]


def test_profile_path_excludes_what_was_seen(es, settings_for, items, embedder):
    rec = Recommender(es, settings_for, embedder=embedder)
    history = [ev("h0"), ev("h1"), ev("h2", "purchase")]
    cs = rec.candidates(history=history, k=5)
    assert cs.path == "profile" and not cs.cold_start
    assert genres(cs) == ["Horror"] * 5
    assert not {"h0", "h1", "h2"} & {c.item_id for c in cs.candidates}
    assert all(c.cosine is not None and -1 <= c.cosine <= 1 for c in cs.candidates)
    assert cs.candidates[0].cosine >= cs.candidates[-1].cosine
    seen_too = rec.candidates(history=history, k=5, exclude_seen=False)
    assert {"h0", "h1", "h2"} & {c.item_id for c in seen_too.candidates}


def test_filters_and_unavailable_items(es, settings_for, items, embedder):
    rec = Recommender(es, settings_for, embedder=embedder)
    cs = rec.candidates(history=[ev("h0")], k=8, filters={"genre": "Space", "year": {"gte": 2002}})
    ids = {c.item_id for c in cs.candidates}
    assert ids == {"s2", "s3", "s4", "s5", "s6"}  # s7 is unavailable, s0/s1 too old


def test_bad_arguments_fail_before_any_search(es, settings_for, items, embedder):
    rec = Recommender(es, settings_for, embedder=embedder)
    _ = rec.field_types  # the mapping is read once; after that a bad request sends nothing

    class NoSearch:
        def __getattr__(self, name):
            if name in {"search", "msearch", "get", "mget"}:
                raise AssertionError(f"{name} was called")
            return getattr(es, name)

    rec.client = NoSearch()
    with pytest.raises(queries.RequestError, match="unknown filter field 'brand'"):
        rec.candidates(user="u1", filters={"brand": "x"})
    with pytest.raises(queries.RequestError, match="num_candidates must be between k"):
        rec.candidates(user="u1", k=50, num_candidates=20)
    with pytest.raises(queries.RequestError, match="k must be"):
        rec.candidates(user="u1", k=20000)


def test_cold_start_paths(es, settings_for, items, embedder):
    rec = Recommender(es, settings_for, embedder=embedder)
    by_query = rec.candidates(user="nobody", query="baking bread and cakes", k=3)
    assert (by_query.path, by_query.cold_start) == ("query", True)
    assert genres(by_query) == ["Cooking"] * 3
    by_context = rec.candidates(user="nobody", context_items=["s0", "s1"], k=4)
    assert by_context.path == "context" and genres(by_context) == ["Space"] * 4
    assert not {"s0", "s1"} & {c.item_id for c in by_context.candidates}
    popular = rec.candidates(user="nobody", k=5)
    assert popular.path == "popular" and len(popular.candidates) == 5


def test_profile_blended_with_query_text(es, settings_for, items, embedder):
    rec = Recommender(es, settings_for, embedder=embedder)
    history = [ev(f"h{i}") for i in range(4)]
    plain = rec.candidates(history=history, k=6)
    blended = rec.candidates(history=history, query="cooking recipes", k=6, query_weight=0.8)
    assert blended.path == "profile+query"
    assert genres(blended).count("Cooking") > genres(plain).count("Cooking")
    hybrid = rec.candidates(history=history, query="chocolate cake", k=3, query_weight=0.5, text_boost=2.0)
    assert "c2" in {c.item_id for c in hybrid.candidates}


def test_real_time_shift_after_new_events(es, settings_for, items, embedder, tmp_path):
    from vecrank.ingest.events import ingest_events
    from vecrank.rank.store import refresh_profiles

    rec = Recommender(es, settings_for, embedder=embedder)
    first = [{"user": "u1", "item": f"h{i}", "type": "click", "timestamp": T0 - 10 * DAY_MS + i} for i in range(3)]
    path = tmp_path / "e1.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in first))
    ingest_events(es, settings_for, path, progress=False, refresh_states=refresh_profiles)
    before = rec.candidates(user="u1", k=6)
    assert before.path == "profile" and genres(before).count("Horror") >= 5

    later = [{"user": "u1", "item": f"c{i}", "type": "purchase", "timestamp": T0 + i} for i in range(4)]
    path2 = tmp_path / "e2.jsonl"
    path2.write_text("".join(json.dumps(e) + "\n" for e in later))
    ingest_events(es, settings_for, path2, progress=False, refresh_states=refresh_profiles)
    after = rec.candidates(user="u1", k=6)
    assert genres(after).count("Cooking") > genres(before).count("Cooking")
    assert genres(after).count("Cooking") >= 3
    assert not {f"c{i}" for i in range(4)} & {c.item_id for c in after.candidates}  # now seen


def test_multi_interest_returns_items_near_each_interest(es, settings_for, items, embedder):
    rec = Recommender(es, settings_for, embedder=embedder)
    history = [ev("h0"), ev("h1"), ev("h2"), ev("c0"), ev("c1")]
    single = rec.candidates(history=history, k=6)
    multi = rec.candidates(history=history, k=6, max_interests=2)
    assert multi.path == "multi_interest" and len(multi.interests) == 2
    assert set(genres(multi)) == {"Horror", "Cooking"}
    assert genres(multi).count("Horror") >= 2 and genres(multi).count("Cooking") >= 2
    assert {c.interest for c in multi.candidates} == {0, 1}
    assert len(single.candidates) == 6


def test_diversity_limits_hold(es, settings_for, items, embedder):
    rec = Recommender(es, settings_for, embedder=embedder)
    capped = rec.candidates(query="scary horror film", k=6, group_field="genre", max_per_group=2)
    counts = {g: genres(capped).count(g) for g in set(genres(capped))}
    assert max(counts.values()) <= 2 and len(capped.candidates) == 6
    plain = rec.candidates(query="scary horror film", k=6)
    diverse = rec.candidates(query="scary horror film", k=6, mmr_lambda=0.3)
    assert len(set(genres(diverse))) > len(set(genres(plain)))


def test_unknown_user_is_a_flagged_cold_start(es, settings_for, items, embedder):
    cs = Recommender(es, settings_for, embedder=embedder).candidates(user="never-seen", k=3)
    assert cs.cold_start and cs.path == "popular" and cs.excluded == 0


def test_cli_recommend(es, settings_for, items, capsys):
    from clihelp import connection_args, run_cli

    base = [*connection_args(settings_for), "--index-prefix", settings_for.index_prefix, "recommend"]
    result = run_cli(
        capsys,
        *base,
        "--query",
        "bread and pastry",
        "--filter",
        "genre=Cooking",
        "--filter",
        "year>=2001",
        "-k",
        "3",
        "--json",
    )
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert out["path"] == "query" and out["cold_start"] is True
    assert [c["fields"]["genre"] for c in out["candidates"]] == ["Cooking"] * 3
    assert all(c["fields"]["year"] >= 2001 for c in out["candidates"])
    table = run_cli(capsys, *base, "--query", "bread and pastry", "-k", "2")
    assert table.code == 0 and table.out.startswith("path: query (cold start); no ranker (kNN order); 2 items")
    assert "TITLE" in table.out and "COSINE" in table.out
    bad = run_cli(capsys, *base, "--user", "u1", "--filter", "brand=Acme")
    assert bad.code == 2 and "unknown filter field 'brand'" in bad.err
    bad = run_cli(capsys, *base, "--user", "u1", "--filter", "brand")
    assert bad.code == 2 and "is not FIELD=VALUE" in bad.err


def test_pool_body_names_every_source_under_one_filter():
    from vecrank.rank.offline import PoolConfig

    flt = queries.candidate_filter([{"term": {"genre": "Horror"}}], exclude_ids=["h0"])
    body = queries.pool_body(
        pool=PoolConfig(text=3, cf=4, cooc=2, seq=1, ease=1, popular=5, trending=6),
        size=7,
        filter=flt,
        text_vector=[1.0, 0.0],
        cf_vector=[0.5, 0.5],
        listed={"cooc": ["a", "b", "c"], "seq": ["d"], "ease": ["e", "f"]},
        source=["genre"],
        with_vectors=True,
    )
    assert [(c["_name"], c["field"], c["k"], c["filter"]) for c in body["knn"]] == [
        ("text", "embedding", 3, flt),
        ("cf", "cf_vector", 4, flt),
    ]
    should = body["query"]["bool"]["should"]
    assert should == [
        {"ids": {"values": ["a", "b"], "_name": "cooc"}},
        {"ids": {"values": ["d"], "_name": "seq"}},
        {"ids": {"values": ["e"], "_name": "ease"}},
        {"range": {"signals.popular_rank": {"lte": 5, "_name": "popular"}}},
        {"range": {"signals.trending_rank": {"lte": 6, "_name": "trending"}}},
    ]
    assert body["query"]["bool"]["filter"] == [flt] and body["query"]["bool"]["minimum_should_match"] == 1
    assert (body["size"], body["_source"], body["fields"]) == (7, ["genre"], ["embedding", "cf_vector"])
    # No vector and no list: only the sizes that have something to ask for make clauses.
    bare = queries.pool_body(
        pool=PoolConfig(text=3, cf=4, cooc=2, seq=0, popular=0, trending=0),
        size=2,
        filter=None,
        text_vector=None,
        cf_vector=None,
        listed={"cooc": ["a"]},
        source=False,
    )
    assert "knn" not in bare and bare["query"]["bool"]["should"] == [{"ids": {"values": ["a"], "_name": "cooc"}}]
    with pytest.raises(queries.RequestError, match="the pool has no source"):
        queries.pool_body(
            pool=PoolConfig(text=3, cf=0, cooc=0, seq=0, popular=0, trending=0),
            size=2,
            filter=None,
            text_vector=None,
            cf_vector=None,
            listed={"cooc": []},
            source=False,
        )


def test_pool_search_gathers_each_source_under_the_filters(es, settings_for, items, embedder):
    from vecrank.rank.offline import PoolConfig
    from vecrank.rank.state import UserState
    from vecrank.rank.store import fetch_vectors

    history = (ev("h0", days_ago=2), ev("h1", days_ago=1))
    profile = build_profile(
        list(history), fetch_vectors(es, settings_for.index("items"), ["h0", "h1"]), ProfileConfig()
    )
    state = UserState(history=history, profile=profile, cooc={"c5": 1.0, "s2": 0.5, "c1": 0.1}, seq={"s3": 0.2})
    rec = Recommender(es, settings_for, embedder=embedder)
    pool = PoolConfig(text=3, cf=5, cooc=2, seq=1, popular=4, trending=0)
    hits = rec.pool_hits(state, pool=pool, size=20, source=["genre"])
    by_source: dict[str, set[str]] = {}
    for h in hits:
        for name in h.get("matched_queries", []):
            by_source.setdefault(name, set()).add(h["_id"])
    # No cf_vector and no signals in this index: those sources ask for nothing.
    assert set(by_source) == {"text", "cooc", "seq"}
    assert by_source["cooc"] == {"c5", "s2"} and by_source["seq"] == {"s3"}  # the best two, the best one
    assert len(by_source["text"]) == 3 and all(i.startswith("h") for i in by_source["text"])
    assert not {"h0", "h1"} & {h["_id"] for h in hits}  # seen items are excluded from every source
    horror = rec.pool_hits(state, pool=pool, size=20, filters={"genre": "Horror"}, source=["genre"])
    assert {h["_source"]["genre"] for h in horror} == {"Horror"} and len(horror) == 3


def test_the_stored_profile_is_read_from_the_user_state():
    from vecrank.rank.profiles import Interest, Profile
    from vecrank.rank.state import StateConfig, UserState
    from vecrank.rank.store import stored_profile

    config = StateConfig()
    profile = Profile(
        interests=(Interest(np.array([0.6, 0.8], dtype=np.float32), 1.0, ("a",)),),
        n_events=1,
        positive_weight=1.0,
        negative_weight=0.0,
    )
    doc = {"state": UserState(history=(ev("a"),), profile=profile).to_doc(model="m", config=config)}
    got = stored_profile(doc, config.profile, "m")
    assert got is not None and np.allclose(got.vector, [0.6, 0.8])
    assert stored_profile(doc, config.profile, "other-model") is None
    # An earlier vecrank's top-level profile is stale (nothing updates it): not read.
    assert stored_profile({"profile": doc["state"]["profile"]}, config.profile, "m") is None
