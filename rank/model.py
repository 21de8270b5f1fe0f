"""A trained ranker: the XGBoost booster, its feature spec, metrics and training summary, and
the registry that versions them (the ``models`` index, mirrored on disk).

A model is identified by ``model_id`` and an increasing ``version``; one version per model id is
``active`` (served), others ``candidate`` (just trained) or ``archived``. (A ``shadow`` status,
scored and logged but not served, was documented once and never built: it is gone.) The
booster is the JSON that ``Booster.save_raw("json")`` writes, the format the Elasticsearch plugin
reads too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vecrank.errors import VecrankError
from vecrank.ingest.indices import create_index_if_missing
from vecrank.rank.features import FeatureSpec, FeatureSpecMismatch
from vecrank.rank.rescore import PluginFeatureError, PluginRefusal, plugin_features, validate_plugin_features

if TYPE_CHECKING:
    import xgboost
    from elasticsearch import Elasticsearch

    from vecrank.settings import Settings

log = logging.getLogger(__name__)

STATUSES = ("candidate", "active", "archived")


@dataclass
class RankerModel:
    model_id: str
    spec: FeatureSpec
    booster_json: str
    version: int = 0  # 0 until registered
    status: str = "candidate"
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    plugin_features: list[dict[str, Any]] | None = None  # where the Elasticsearch plugin reads each feature
    _booster: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_booster(cls, model_id: str, spec: FeatureSpec, booster: xgboost.Booster, **kwargs: Any) -> RankerModel:
        names = booster.feature_names
        if names is not None:
            spec.check(names)
        return cls(model_id=model_id, spec=spec, booster_json=bytes(booster.save_raw("json")).decode(), **kwargs)

    @property
    def booster(self) -> xgboost.Booster:
        if self._booster is None:
            # lazy: xgboost takes 2 s to import; only training and scoring need it
            import xgboost

            booster = xgboost.Booster()
            booster.load_model(bytearray(self.booster_json.encode()))
            if booster.feature_names is not None:
                self.spec.check(booster.feature_names)
            # A request scores a hundred rows: waking a thread pool for them costs more than it saves.
            booster.set_param({"nthread": 1})
            self._booster = booster
        return self._booster

    @property
    def objective(self) -> str:
        return json.loads(self.booster_json)["learner"]["objective"]["name"]

    def _matrix(self, features: np.ndarray) -> xgboost.DMatrix:
        # lazy: xgboost takes 2 s to import; only training and scoring need it
        import xgboost

        if features.ndim != 2 or features.shape[1] != len(self.spec.names):
            raise VecrankError(
                f"feature matrix has {features.shape[-1]} columns; model {self.model_id} "
                f"v{self.version} expects {len(self.spec.names)}"
            )
        return xgboost.DMatrix(features, missing=np.nan, feature_names=self.spec.names)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Scores (the objective's output: a ranking score, higher is better).

        ``inplace_predict`` skips building a DMatrix, most of the cost for a hundred rows.
        """
        if len(features) == 0:
            return np.zeros(0, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != len(self.spec.names):
            raise VecrankError(
                f"feature matrix has {features.shape[-1]} columns; model {self.model_id} "
                f"v{self.version} expects {len(self.spec.names)}"
            )
        return np.asarray(
            self.booster.inplace_predict(
                np.ascontiguousarray(features, dtype=np.float32), missing=np.nan, validate_features=False
            ),
            dtype=np.float32,
        )

    def contributions(self, features: np.ndarray) -> np.ndarray:
        """Per-feature contributions (SHAP values, last column the bias) for ``--explain``."""
        return self.booster.predict(self._matrix(features), pred_contribs=True, validate_features=False)

    def to_doc(self) -> dict[str, Any]:
        doc = {
            "model_id": self.model_id,
            "version": self.version,
            "status": self.status,
            "created_at": self.created_at,
            "objective": self.objective,
            "spec": self.spec.to_dict(),
            "params": self.params,
            "metrics": self.metrics,
            "training": self.training,
            "booster": self.booster_json,
        }
        if self.plugin_features is not None:
            doc["plugin_features"] = self.plugin_features
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> RankerModel:
        return cls(
            model_id=doc["model_id"],
            spec=FeatureSpec.from_dict(doc["spec"]),
            booster_json=doc["booster"],
            version=int(doc["version"]),
            status=doc["status"],
            params=doc.get("params", {}),
            metrics=doc.get("metrics", {}),
            training=doc.get("training", {}),
            created_at=doc["created_at"],
            plugin_features=doc.get("plugin_features"),
        )


def models_mapping() -> dict[str, Any]:
    return {
        "dynamic": "strict",
        "properties": {
            "model_id": {"type": "keyword"},
            "version": {"type": "integer"},
            "status": {"type": "keyword"},
            "created_at": {"type": "date"},
            "objective": {"type": "keyword"},
            "spec": {"type": "object", "enabled": False},
            "params": {"type": "object", "enabled": False},
            "metrics": {"type": "object", "enabled": False},
            "training": {"type": "object", "enabled": False},
            "booster": {"type": "text", "index": False},
            "plugin_features": {"type": "object", "enabled": False},  # where the ES plugin reads each feature
        },
    }


def search_model_id(model_id: str) -> str:
    """The registry id of the search model that goes with ``model_id`` (``evaluate --task search``)."""
    return f"{model_id}-search"


class Registry:
    """Models in ``<prefix>-models`` (id ``<model_id>@<version>``), copied to ``<state>/models/``."""

    def __init__(self, client: Elasticsearch, settings: Settings):
        self.client, self.settings = client, settings
        self.index = settings.index("models")
        self.folder = Path(settings.state_dir) / "models" / settings.index_prefix

    def _ensure(self) -> None:
        create_index_if_missing(self.client, self.index, models_mapping())

    def register(self, model: RankerModel, *, status: str = "candidate") -> RankerModel:
        """Store ``model`` as the next version of its id. Returns the stored model: a copy of
        ``model`` with ``version``, ``status`` and ``plugin_features`` set (``model`` itself is
        left as it was)."""
        if status not in STATUSES:
            raise VecrankError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        _ = model.booster  # refuses a malformed booster or a feature list that is not the spec's
        self._ensure()
        # Every stored version counts, also those of an older feature spec that list() skips.
        stored = self._hits(model.model_id, source=["version"])
        version = max((int(h["_source"]["version"]) for h in stored), default=0) + 1
        model = replace(model, version=version, status=status, plugin_features=self._plugin_features(model))
        self.client.create(
            index=self.index, id=f"{model.model_id}@{model.version}", document=model.to_doc(), refresh="wait_for"
        )
        path = self.folder / model.model_id / f"v{model.version}"
        path.mkdir(parents=True, exist_ok=True)
        (path / "model.json").write_text(model.booster_json)
        meta = {k: v for k, v in model.to_doc().items() if k != "booster"}
        (path / "meta.json").write_text(json.dumps(meta, indent=2))
        log.info("Registered %s v%d (%s) in %s and %s", model.model_id, model.version, status, self.index, path)
        return model

    def _plugin_features(self, model: RankerModel) -> list[dict[str, Any]] | None:
        """Where the plugin reads each feature, checked against the items mapping (and by the
        plugin itself when it is installed) so that a model the plugin could not serve is refused
        now, not at query time. None when the spec has a feature the plugin has no source for."""
        try:
            features = plugin_features(model.spec)
        except PluginFeatureError as exc:
            log.warning("Model %s will be served in Python only: %s", model.model_id, exc)
            return None
        items = self.settings.index("items")
        if self.client.indices.exists(index=items):
            try:
                validate_plugin_features(
                    self.client, items, features, model_doc={**model.to_doc(), "plugin_features": features}
                )
            except PluginRefusal as exc:
                log.warning(
                    "Model %s will be served in Python only until the plugin accepts it (`vecrank plugin "
                    "install`, then `vecrank plugin attach %s`): %s",
                    model.model_id,
                    model.model_id,
                    exc,
                )
                return None
        return features

    def _hits(
        self,
        model_id: str | None = None,
        *,
        status: str | None = None,
        version: int | None = None,
        source: bool | list[str] = True,
    ) -> list[dict[str, Any]]:
        """The registry's documents, by model id, status and version; ``source`` names the fields to
        read (a document holds its booster: about 1 MB for 400 trees)."""
        if not self.client.indices.exists(index=self.index):
            return []
        clauses: list[dict[str, Any]] = []
        if model_id:
            clauses.append({"term": {"model_id": model_id}})
        if status is not None:
            clauses.append({"term": {"status": status}})
        if version is not None:
            clauses.append({"term": {"version": int(version)}})
        query = {"bool": {"filter": clauses}} if clauses else {"match_all": {}}
        return self.client.search(
            index=self.index,
            query=query,
            size=1000,
            sort=[{"model_id": "asc"}, {"version": "asc"}],
            source=source if isinstance(source, bool) else {"includes": source},
        )["hits"]["hits"]

    def active_version(self, model_id: str) -> int | None:
        """The active version's number, read without its booster; None when none is active."""
        hits = self._hits(model_id, status="active", source=["version"])
        return int(hits[-1]["_source"]["version"]) if hits else None

    def list(
        self, model_id: str | None = None, *, status: str | None = None, version: int | None = None
    ) -> list[RankerModel]:
        """The versions this vecrank can serve (one of an older feature spec is logged and skipped),
        of one status or version if given."""
        out = []
        for h in self._hits(model_id, status=status, version=version):
            try:
                out.append(RankerModel.from_doc(h["_source"]))
            except FeatureSpecMismatch as exc:
                log.info("model %s is skipped: %s", h["_id"], exc)
        return out

    def get(self, model_id: str, version: int | None = None) -> RankerModel:
        """A given version, or the active one (only that document is read)."""
        found = self.list(model_id, version=version) if version is not None else self.list(model_id, status="active")
        if not found:
            what = f"version {version}" if version is not None else "active version"
            versions = self._hits(model_id, source=["version", "status"])
            known = ", ".join(f"v{h['_source']['version']} ({h['_source']['status']})" for h in versions) or "none"
            raise VecrankError(f"model {model_id!r} has no {what}; versions: {known}")
        return found[-1]

    def set_status(self, model_id: str, version: int, status: str) -> RankerModel:
        """Change one version's status; activating archives the previously active version."""
        if status not in STATUSES:
            raise VecrankError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        model = self.get(model_id, version)
        if status == "active":  # archive the active one, whatever its spec
            for h in self._hits(model_id, status="active", source=["version"]):
                other = int(h["_source"]["version"])
                if other != version:
                    self._update_doc(model_id, other, "archived")
        self._update(model, status)
        model.status = status
        return model

    def _update(self, model: RankerModel, status: str) -> None:
        self._update_doc(model.model_id, model.version, status)

    def _update_doc(self, model_id: str, version: int, status: str) -> None:
        self.client.update(index=self.index, id=f"{model_id}@{version}", doc={"status": status}, refresh="wait_for")
        meta = self.folder / model_id / f"v{version}" / "meta.json"
        if meta.is_file():
            data = json.loads(meta.read_text())
            data["status"] = status
            meta.write_text(json.dumps(data, indent=2))


# Here, not in rescore: it reads and updates the registry, and the registry already uses rescore
# to check a model's plugin features when it registers one.
def attach_plugin_features(
    client: Elasticsearch, settings: Any, model_id: str, version: int | None = None, *, items_index: str | None = None
) -> dict[str, Any]:
    """Make a registered model servable by the plugin: validate its features and store ``plugin_features``.

    Args:
        client: Elasticsearch client.
        settings: Names the models and items indices.
        model_id: The registered model.
        version: Its version; None for the active one.
        items_index: The index the model ranks (default ``settings.index("items")``).

    Returns:
        ``{"model_id", "version", "plugin_features"}``.

    Raises:
        PluginFeatureError: when a feature maps to no usable field, or the plugin refuses the model.
    """
    registry = Registry(client, settings)
    model = registry.get(model_id, version)
    features = plugin_features(model.spec)
    validate_plugin_features(
        client,
        items_index or settings.index("items"),
        features,
        model_doc={**model.to_doc(), "plugin_features": features},
    )
    # Registries created before the field existed get it now (the mapping is strict).
    client.indices.put_mapping(
        index=registry.index, properties={"plugin_features": models_mapping()["properties"]["plugin_features"]}
    )
    client.update(
        index=registry.index,
        id=f"{model.model_id}@{model.version}",
        doc={"plugin_features": features},
        refresh="wait_for",
    )
    log.info("Model %s v%d can be served by the plugin (%d features)", model.model_id, model.version, len(features))
    return {"model_id": model.model_id, "version": model.version, "plugin_features": features}
