"""The rescorer plugin's Python side without a cluster: feature sources, request bodies, params,
explanations, and the local node's plugin homes."""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from clihelp import run_cli
from vecrank.localnode import distribution
from vecrank.localnode import plugin as lplugin
from vecrank.localnode.errors import LocalNodeError
from vecrank.rank import features as F
from vecrank.rank import rescore as R
from vecrank.rank.features import FeatureSpec, RequestContext

REPO = Path(__file__).resolve().parents[1]
DAY = 86_400_000
NOW = 1_700_000_000_000


# --- feature sources ---------------------------------------------------------------------------

def test_every_spec_feature_has_its_contract_source():
    spec = FeatureSpec(item_numeric=("year",), facets=("genres",))
    got = {f["name"]: {k: v for k, v in f.items() if k != "name"} for f in R.plugin_features(spec)}
    assert list(got) == spec.names
    assert got == {
        "knn_score": {"source": "score"},
        "cos_profile": {"source": "cosine", "field": "embedding", "param": "profile_vector"},
        "cos_query": {"source": "cosine", "field": "embedding", "param": "query_vector"},
        "cos_hist_max": {"source": "cosine_max", "field": "embedding", "param": "history_vectors"},
        "cos_hist_mean": {"source": "cosine_mean", "field": "embedding", "param": "history_vectors"},
        "ctr": {"source": "field", "field": "signals.ctr", "transform": "identity"},
        "pop_1d": {"source": "field", "field": "signals.popularity_1d", "transform": "log1p"},
        "pop_7d": {"source": "field", "field": "signals.popularity_7d", "transform": "log1p"},
        "pop_30d": {"source": "field", "field": "signals.popularity_30d", "transform": "log1p"},
        "days_since_interaction": {"source": "field", "field": "signals.last_interaction", "transform": "days_since"},
        "rating_mean": {"source": "field", "field": "signals.rating_mean", "transform": "identity"},
        "rating_count": {"source": "field", "field": "signals.rating_count", "transform": "log1p"},
        "item.year": {"source": "field", "field": "year", "transform": "identity"},
        "hist_len": {"source": "param"},
        "days_since_active": {"source": "param"},
        "affinity.genres": {"source": "overlap", "field": "genres", "param": "history_genres"},
        "query_present": {"source": "param"},
        "path_code": {"source": "param"},
    }


def test_a_name_without_a_source_is_refused():
    with pytest.raises(R.PluginFeatureError, match="feature 'mystery' has no source"):
        R.plugin_features(["knn_score", "mystery"])


# --- request bodies ------------------------------------------------------------------------------

def test_rescore_body_is_exactly_the_search_json():
    vec = np.array([1.0, -2.0], dtype=np.float32)
    body = R.rescore_body(model_id="default", params={"profile_vector": vec, "history_vectors": np.stack([vec, vec]),
                                                      "hist_len": np.float64(1.5), "days_since_active": float("nan")},
                          window_size=50, models_index="shop-models")
    assert body == {"window_size": 50, "vecrank": {"model": "default", "models_index": "shop-models", "params": {
        "profile_vector": "AACAPwAAAMA=", "history_vectors": ["AACAPwAAAMA=", "AACAPwAAAMA="], "hist_len": 1.5,
        "days_since_active": None}}}
    json.dumps(body)  # JSON-ready
    assert R.rescore_body(model_id="m", version=2, window_size=10, models_index="x") == {
        "window_size": 10, "vecrank": {"model": "m", "version": 2, "models_index": "x"}}
    for bad in ({"version": 0}, {"version": 1.5}, {"window_size": 0}, {"model_id": ""}):
        with pytest.raises(ValueError):
            R.rescore_body(**{"model_id": "m", **bad})


def test_additions_are_rescored_with_their_first_pass_score_missing():
    section = R.rescore_body(model_id="m", version=2, params={"hist_len": 1.0}, window_size=100,
                             models_index="vecrank-models")
    lookup = R.for_lookup(section, 7)
    assert lookup == {"window_size": 7, "vecrank": {"model": "m", "version": 2, "models_index": "vecrank-models",
                                                   "params": {"hist_len": 1.0, "first_pass_missing": True}}}
    assert section["vecrank"]["params"] == {"hist_len": 1.0} and section["window_size"] == 100  # unchanged


def test_vectors_travel_as_little_endian_float32():
    v = np.array([0.1, -3.5, 1e-20, 7.0], dtype=np.float64)
    text = R.encode_vector(v)
    raw = __import__("base64").b64decode(text)
    assert raw == v.astype("<f4").tobytes() and len(raw) == 16
    np.testing.assert_array_equal(R.decode_vector(text), v.astype(np.float32))
    with pytest.raises(ValueError, match="NaN"):
        R.encode_vector([1.0, float("nan")])


def test_score_mapping_and_its_inverse():
    xs = np.array([-50.0, -2.0, -0.5, -1e-4, 0.0, 1e-4, 0.5, 2.0, 50.0])
    s = R.model_to_score(xs)
    assert (s > 0).all() and (np.diff(s) > 0).all()
    np.testing.assert_allclose(R.score_to_model(s), xs, atol=1e-12)
    assert R.model_to_score(0.0) == 1.0 and R.model_to_score(-1.0) == 0.5
    with pytest.raises(ValueError, match="not rescored"):
        R.score_to_model(0.0)


def _explanation(pairs, model_score):
    def bits(x):
        return f"(float32 0x{np.array([x], dtype=np.float32).view(np.uint32)[0]:08x})"

    feats = [{"value": 0.0 if math.isnan(v) else v,
              "description": f"feature [{n}] = {'NaN (missing)' if math.isnan(v) else v} {bits(v)}", "details": []}
             for n, v in pairs]
    return {"value": 1.0, "description": "vecrank model [m] version [1] (rank:ndcg): score = g(model score)", "details": [
        {"value": model_score, "description": f"model score {bits(model_score)}", "details": []},
        {"value": len(pairs), "description": "features (2, in the model's order)", "details": feats},
        {"value": 0.9, "description": "first pass score", "details": []}]}


def test_explanations_read_back_exact_float32_values():
    third = float(np.float32(1 / 3))
    e = _explanation([("knn_score", third), ("ctr", float("nan"))], -0.1)
    row = R.explained_features(e, ["knn_score", "ctr"])
    assert row.dtype == np.float32 and row[0] == np.float32(1 / 3) and math.isnan(row[1])
    assert R.explained_feature_names(e) == ["knn_score", "ctr"]
    assert R.explained_model_score(e) == float(np.float32(-0.1))
    with pytest.raises(ValueError, match="not"):
        R.explained_features(e, ["ctr", "knn_score"])
    with pytest.raises(ValueError, match="no vecrank rescore"):
        R.explained_features({"value": 1, "description": "weight(text:x)", "details": []})
    nested = {"value": 2.0, "description": "outer rescorer", "details": [e]}
    assert R.explained_model_score(nested) == float(np.float32(-0.1))


# --- params agree with the Python features -------------------------------------------------------

def _plugin_cosine(doc: np.ndarray, queries: list[np.ndarray], mode: str) -> float:
    cos = [float(np.dot(doc.astype(np.float64), q.astype(np.float64))
                 / (np.linalg.norm(doc.astype(np.float64)) * np.linalg.norm(q.astype(np.float64)))) for q in queries]
    return max(cos) if mode == "max" else sum(cos) / len(cos)


def _plugin_overlap(doc_values: set[str] | None, param: dict) -> float:
    if not doc_values:
        return math.nan
    total = sum(param["weights"])
    return sum(w for s, w in zip(param["sets"], param["weights"]) if set(s) & doc_values) / total


def test_rescore_params_reproduce_what_features_compute():
    """What the plugin computes from rescore_params equals features.compute's columns."""
    rng = np.random.default_rng(3)
    spec = FeatureSpec(facets=("genres",))
    vectors = {f"h{i}": rng.normal(size=8).astype(np.float32) for i in range(5)}
    history = [{"item_id": "h0", "type": "click", "timestamp": NOW - 5 * DAY},
               {"item_id": "h1", "type": "purchase", "timestamp": NOW - 2 * DAY},
               {"item_id": "h2", "type": "rating", "value": 1, "timestamp": NOW - 1 * DAY},  # negative: not positive
               {"item_id": "h3", "type": "click", "timestamp": NOW - 3 * DAY},
               {"item_id": "h0", "type": "click", "timestamp": NOW - 4 * DAY}]
    facets = {"genres": {"h0": {"Drama"}, "h1": {"Comedy", "Drama"}, "h3": {"Horror"}}}
    query = rng.normal(size=8).astype(np.float32)
    ctx = RequestContext(now_ms=NOW, path="profile+query", history=history, history_vectors=vectors,
                         query_vector=query, history_facets=facets)
    candidates = [SimpleNamespace(score=0.8, cosine=0.5, vector=rng.normal(size=8).astype(np.float32),
                                  fields={"genres": g}) for g in (["Drama"], ["Horror", "Sci-Fi"], None, ["Sci-Fi"])]
    expected = F.compute(spec, candidates, ctx)
    col = {n: expected[:, i] for i, n in enumerate(spec.names)}

    params = R.rescore_params(spec, ctx, encode=False)
    json.dumps(params)
    assert params["now_ms"] == NOW
    assert np.float32(params["hist_len"]) == col["hist_len"][0]
    assert np.float32(params["days_since_active"]) == col["days_since_active"][0]
    assert params["query_present"] == col["query_present"][0] == 1.0
    assert params["path_code"] == col["path_code"][0] == 2.0
    hist = [np.asarray(v, dtype=np.float32) for v in params["history_vectors"]]
    query_param = np.asarray(params["query_vector"], dtype=np.float32)
    for i, c in enumerate(candidates):
        assert np.float32(_plugin_cosine(c.vector, [query_param], "max")) == pytest.approx(col["cos_query"][i], abs=1e-6)
        assert np.float32(_plugin_cosine(c.vector, hist, "max")) == pytest.approx(col["cos_hist_max"][i], abs=1e-6)
        assert np.float32(_plugin_cosine(c.vector, hist, "mean")) == pytest.approx(col["cos_hist_mean"][i], abs=1e-6)
        want = col["affinity.genres"][i]
        got = np.float32(_plugin_overlap(set(c.fields["genres"] or []), params["history_genres"]))
        assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want, abs=1e-7)

    # Base64 vectors hold the same values; no history means missing, as in Python.
    encoded = R.rescore_params(spec, ctx)
    np.testing.assert_array_equal(R.decode_vector(encoded["query_vector"]), query)
    empty = R.rescore_params(spec, RequestContext(now_ms=NOW, path="query"))
    assert "history_vectors" not in empty and "history_genres" not in empty and empty["days_since_active"] is None


def test_cooc_is_a_param_map_keyed_by_item_id():
    spec = FeatureSpec(cooc=True)
    features = R.plugin_features(spec)
    assert [f["name"] for f in features] == spec.names
    assert features[spec.names.index("cooc")] == R.feature_source("cooc") == {
        "name": "cooc", "source": "param_map", "param": "cooc", "key_field": "item_id"}

    # What the plugin looks up (values[item_id], else default) equals features.compute's column.
    ctx = RequestContext(now_ms=NOW, path="profile")
    counts, users = {"a": 3, "c": 1}, 4
    ids = ["a", "b", "c", "d"]
    candidates = [SimpleNamespace(item_id=i, score=0.5, cosine=None, vector=None, fields={},
                                  cooc=counts.get(i, 0) / users) for i in ids]
    expected = F.compute(spec, candidates, ctx)[:, spec.names.index("cooc")]
    params = R.rescore_params(spec, ctx, cooc={k: v / users for k, v in counts.items()}, cooc_default=0.0)
    json.dumps(params, allow_nan=False)
    assert params["cooc"] == {"values": {"a": 0.75, "c": 0.25}, "default": 0.0}
    looked_up = np.array([params["cooc"]["values"].get(i, params["cooc"]["default"]) for i in ids], dtype=np.float64)
    np.testing.assert_array_equal(looked_up.astype(np.float32), expected)

    # No co-likers: the param is left out and every hit's cooc is missing, as compute's NaN.
    assert "cooc" not in R.rescore_params(spec, ctx)
    assert "cooc" not in R.rescore_params(FeatureSpec(), ctx, cooc={"a": 1.0}), "only for a spec with cooc"
    numpy_values = R.rescore_params(spec, ctx, cooc={"a": np.float32(0.5), "b": float("nan"), 7: np.int64(1)},
                                    cooc_default=float("nan"))
    assert numpy_values["cooc"] == {"values": {"a": 0.5, "b": None, "7": 1.0}, "default": None}
    assert type(numpy_values["cooc"]["values"]["a"]) is float
    for bad in ("0.5", True, float("inf")):
        with pytest.raises(ValueError, match="cooc value"):
            R.rescore_params(spec, ctx, cooc={"a": bad})
    body = R.rescore_body(model_id="m", params=params, window_size=10)
    assert body["vecrank"]["params"]["cooc"] == params["cooc"]


def test_a_param_map_key_field_must_be_a_keyword_with_doc_values():
    mapping = {"properties": {"item_id": {"type": "keyword"}, "title": {"type": "text"},
                              "sku": {"type": "keyword", "doc_values": False}, "year": {"type": "integer"}}}
    client = SimpleNamespace(indices=SimpleNamespace(get_mapping=lambda index: {"items-1": {"mappings": mapping}}))
    cooc = R.feature_source("cooc")
    R.validate_plugin_features(client, "items", [R.feature_source("knn_score"), cooc])
    for field, problem in (("title", "which is a text field, not keyword"), ("year", "which is a integer field"),
                           ("sku", "which has doc_values: false"), ("missing", "which is not mapped")):
        with pytest.raises(R.PluginFeatureError, match=f"feature 'cooc' looks up its values by key field '{field}', "
                                                       f"{problem}.* in index 'items-1'"):
            R.validate_plugin_features(client, "items", [dict(cooc, key_field=field)])
    with pytest.raises(R.PluginFeatureError, match="has no key_field"):
        R.validate_plugin_features(client, "items", [{"name": "cooc", "source": "param_map", "param": "cooc"}])


# --- the local node's plugin homes ----------------------------------------------------------------

def test_pom_builds_for_the_pinned_version_by_default():
    pom = (REPO / "plugin" / "pom.xml").read_text()
    assert re.search(r"<es\.version>([^<]+)</es\.version>", pom).group(1) == distribution.ES_VERSION
    assert lplugin.source_version() is not None


def _fake_zip(path: Path, name="vecrank-rescorer", es="9.5.2") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("plugin-descriptor.properties", f"# c\nname={name}\nversion=0.1.0\nelasticsearch.version={es}\n")
    return path


def test_zips_are_checked_before_installing(tmp_path):
    z = lplugin.read_zip(_fake_zip(tmp_path / "a.zip"))
    assert (z.version, z.es_version, len(z.sha256)) == ("0.1.0", "9.5.2", 64)
    with pytest.raises(LocalNodeError, match="holds plugin 'other'"):
        lplugin.read_zip(_fake_zip(tmp_path / "b.zip", name="other"))
    (tmp_path / "c.zip").write_text("not a zip")
    with pytest.raises(LocalNodeError, match="not an Elasticsearch plugin zip"):
        lplugin.read_zip(tmp_path / "c.zip")
    old = lplugin.read_zip(_fake_zip(tmp_path / "d.zip", es="9.4.0"))
    dist = distribution.Distribution("9.5.2", tmp_path)
    with pytest.raises(LocalNodeError, match=r"built for Elasticsearch 9\.4\.0, but the local node runs 9\.5\.2.*"
                                             r"--es-version 9\.5\.2"):
        lplugin.check_versions(dist, old)


def test_the_node_starts_from_the_recorded_home_only_when_it_fits(tmp_path, caplog):
    dist = distribution.Distribution("9.5.2", tmp_path / "plain")
    base = tmp_path / "state"
    assert lplugin.home_for_node(dist, base) == dist
    home = tmp_path / "home"
    home.mkdir()
    (base / "es").mkdir(parents=True)
    record = {"es_home": str(home), "es_version": "9.5.2"}
    (base / "es" / "plugin.json").write_text(json.dumps(record))
    assert lplugin.home_for_node(dist, base) == dist  # the home lacks its marker: not a finished install
    assert "is gone" in caplog.text
    (home / lplugin.HOME_MARKER).write_text("{}")
    assert lplugin.home_for_node(dist, base) == distribution.Distribution("9.5.2", home)
    other = distribution.Distribution("9.6.0", tmp_path / "plain")
    assert lplugin.home_for_node(other, base) == other
    assert "installed for Elasticsearch 9.5.2" in caplog.text


def test_link_tree_shares_files_but_copies_config(tmp_path):
    src = tmp_path / "es"
    (src / "lib").mkdir(parents=True)
    (src / "config").mkdir()
    (src / "lib" / "a.jar").write_bytes(b"jar")
    (src / "config" / "jvm.options").write_text("-Xms1g\n")
    (src / "bin").mkdir()
    (src / "bin" / "tool").write_text("#!/bin/sh\n")
    (src / "bin" / "tool").chmod(0o755)
    dst = tmp_path / "copy"
    lplugin._link_tree(src, dst)
    assert (dst / "lib" / "a.jar").stat().st_ino == (src / "lib" / "a.jar").stat().st_ino
    assert (dst / "config" / "jvm.options").stat().st_ino != (src / "config" / "jvm.options").stat().st_ino
    assert (dst / "bin" / "tool").stat().st_mode & 0o111


def test_cli_plugin_help_and_local_status(capsys, tmp_path):
    result = run_cli(capsys, "plugin", "--help")
    assert result.code == 0
    for command in ("build", "install", "status", "remove"):
        assert re.search(rf"^  {command} ", result.out, re.M)
    result = run_cli(capsys, "--state-dir", str(tmp_path), "plugin", "status", "--local-only", "--json")
    assert result.code == 0
    info = json.loads(result.out)
    assert info["plugin"] == "vecrank-rescorer" and info["installed"] is None and info["local_node"] is None
    assert info["source"] == str(REPO / "plugin")
    result = run_cli(capsys, "--state-dir", str(tmp_path), "plugin", "remove")
    assert result.code == 0 and "No plugin was installed" in result.out


def test_docker_builds_the_plugin_for_the_pinned_version():
    compose = (REPO / "docker" / "docker-compose.yml").read_text()
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    pinned = distribution.ES_VERSION
    assert f'ES_VERSION: "{pinned}"' in compose and f"elasticsearch-vecrank:{pinned}" in compose
    assert f"ARG ES_VERSION={pinned}" in dockerfile
    assert f"vecrank-rescorer-{lplugin.source_version()}-es${{ES_VERSION}}.zip" in dockerfile
    assert "elasticsearch-plugin install --batch" in dockerfile


def test_a_restart_keeps_the_settings_the_node_was_started_with(tmp_path):
    from vecrank.localnode import node

    nodes = [node.NodeState(name="vecrank-1", dir=str(tmp_path / "node-1"), http_port=9299, transport_port=9399)]
    (tmp_path / "node-1" / "config").mkdir(parents=True)
    extra = {"indices.query.bool.max_clause_count": "2048", "http.max_content_length": "200mb",
             "xpack.security.http.ssl.enabled": False}
    (tmp_path / "node-1" / "config" / "elasticsearch.yml").write_text(node._node_yaml(nodes[0], nodes, True, extra))
    cluster = SimpleNamespace(nodes=nodes, tls=True)
    assert lplugin._extra_settings(cluster) == extra
