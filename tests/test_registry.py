"""The model registry leaves the model it is given as it was (no public function mutates its arguments)."""

from __future__ import annotations

import numpy as np

from vecrank.rank import features as feats
from vecrank.rank.model import RankerModel, Registry
from vecrank.rank.train import TrainConfig, TrainingTable, train_ranker


def random_booster(spec: feats.FeatureSpec, *, seed: int):
    """A three-tree booster over ``spec`` trained on random rows: a model to store, not to rank with."""
    rng = np.random.default_rng(seed)
    table = TrainingTable(feature_names=spec.names)
    for g in range(4):
        table.add(
            f"g{g}", "u", 0, [f"i{j}" for j in range(5)], [1.0] + [0.0] * 4, rng.normal(size=(5, len(spec.names)))
        )
    booster, _ = train_ranker(table, None, TrainConfig(num_boost_round=3))
    return booster


def test_register_returns_the_stored_copy_and_leaves_the_argument_unchanged(es, settings_for):
    spec = feats.FeatureSpec()
    booster = random_booster(spec, seed=0)
    model = RankerModel.from_booster("copy", spec, booster)
    before = (model.version, model.status, model.plugin_features)

    registry = Registry(es, settings_for)
    first = registry.register(model, status="active")
    second = registry.register(model)

    assert (model.version, model.status, model.plugin_features) == before == (0, "candidate", None)
    assert (first.version, first.status) == (1, "active")
    assert (second.version, second.status) == (2, "candidate")
    assert first is not model and second is not model
    stored = es.get(index=registry.index, id="copy@1")["_source"]
    assert (stored["version"], stored["status"]) == (1, "active")


def test_the_active_version_is_read_without_boosters_and_get_reads_only_what_it_returns(es, settings_for):
    spec = feats.FeatureSpec()
    booster = random_booster(spec, seed=1)
    model = RankerModel.from_booster("versions", spec, booster)
    registry = Registry(es, settings_for)
    assert registry.active_version("versions") is None
    registry.register(model, status="active")
    registry.register(model)
    assert registry.active_version("versions") == 1
    registry.set_status("versions", 2, "active")
    assert registry.active_version("versions") == 2
    assert [m.status for m in registry.list("versions")] == ["archived", "active"]

    calls = []
    inner = es.transport.perform_request

    def counted(method, path, *args, **kwargs):
        response = inner(method, path, *args, **kwargs)
        if path.endswith("/_search"):
            calls.append([h["_source"] for h in response.body["hits"]["hits"]])
        return response

    es.transport.perform_request = counted
    try:
        assert registry.active_version("versions") == 2
        assert calls[-1] == [{"version": 2}], "the version alone: no booster crosses the wire"
        assert (registry.get("versions").version, registry.get("versions", 1).status) == (2, "archived")
        assert [[s["version"] for s in c] for c in calls[-2:]] == [[2], [1]], "one document per get"
    finally:
        es.transport.perform_request = inner
