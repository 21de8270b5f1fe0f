"""Ranking inside Elasticsearch with the vecrank rescorer plugin (``plugin/``).

The plugin evaluates a registered model on the top hits of a search. It needs to know, for each
feature of the model's spec, where to read it; that is the model document's ``plugin_features``,
which :func:`plugin_features` derives from a :class:`~vecrank.rank.features.FeatureSpec`. A search
asks for it with the ``rescore`` section that :func:`rescore_body` builds; the request-level
inputs (the user's text profile and collaborative vector, their liked items' vectors and facets,
scalars such as ``hist_len``, and per-item scores computed for the user such as ``cooc`` and
``seq``) go in ``params``, which :func:`rescore_params` computes from the
:class:`~vecrank.rank.state.UserState` the way :func:`vecrank.rank.features.compute` does.

Sources: ``score`` (the first-pass score: a search pool's BM25 score, ``transform: positive``
turning its 0 for no match into missing), ``field`` (a numeric doc value, with a transform),
``cosine`` / ``cosine_max`` / ``cosine_mean`` (the doc's vector against param vectors), ``dot``
(the doc's collaborative vector against the user's), ``overlap`` (the doc's keyword values against
weighted param sets), ``param`` (a request scalar), ``param_map`` (a request value per document,
looked up by the doc's ``key_field`` keyword), ``rank`` (the doc's rank within the rescore window
by another feature) and ``count`` (how many features are within their limits).

Rescored hits score ``g(model score)``, with ``g(x) = 1 + x`` for ``x >= 0`` and ``1 / (1 - x)``
for ``x < 0`` (Lucene scores cannot be negative); :func:`score_to_model` inverts it. With
``explain`` the hit's explanation carries the model score and every feature value by name, exactly
(float32 bits): :func:`explained_model_score` and :func:`explained_features` read them back.

Example:
    >>> from vecrank.rank.features import FeatureSpec
    >>> [f for f in plugin_features(FeatureSpec()) if f["name"] in ("ctr", "pop_7d")]
    [{'name': 'ctr', 'source': 'field', 'field': 'signals.ctr', 'transform': 'identity'}, \
{'name': 'pop_7d', 'source': 'field', 'field': 'signals.popularity_7d', 'transform': 'log1p'}]
    >>> feature_source("cooc")
    {'name': 'cooc', 'source': 'param_map', 'param': 'cooc', 'key_field': 'item_id'}
    >>> rescore_body(model_id="default", version=3, params={"hist_len": 1.5}, window_size=100,
    ...              models_index="vecrank-models")
    {'window_size': 100, 'vecrank': {'model': 'default', 'version': 3, 'models_index': 'vecrank-models', \
'params': {'hist_len': 1.5}}}
    >>> round(score_to_model(model_to_score(-0.25)), 6)
    -0.25
"""

from __future__ import annotations

import base64
import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vecrank.errors import VecrankError
from vecrank.interactions import DAY_MS
from vecrank.rank.features import PATH_CODES, POOL_RANKS, SEARCH_RANKS, FeatureSpec, RequestContext
from vecrank.rank.state import SCORE_MAPS

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

log = logging.getLogger(__name__)

__all__ = [
    "PLUGIN_NAME",
    "PluginFeatureError",
    "decode_vector",
    "encode_vector",
    "explained_feature_names",
    "explained_features",
    "explained_model_score",
    "feature_source",
    "model_to_score",
    "plugin_features",
    "plugin_installed",
    "rescore_body",
    "rescore_params",
    "score_to_model",
    "validate_model_doc",
    "validate_plugin_features",
]

PLUGIN_NAME = "vecrank-rescorer"
RESCORER = "vecrank"
VALIDATE_PATH = "/_vecrank/model/_validate"

# Param names the plugin reads for the request-level inputs.
PROFILE_VECTOR = "profile_vector"
QUERY_VECTOR = "query_vector"
HISTORY_VECTORS = "history_vectors"
CF_VECTOR = "cf_vector"  # the user's collaborative vector (param) ...
CF_FIELD = "cf_vector"  # ... and the items' (dense_vector field)
NOW_MS = "now_ms"
# Each of the state's SCORE_MAPS (cooc, seq, ease) is a param of that name:
# {"values": {item_id: score}, "default": None}, read by the items' item_id.
KEY_FIELD = "item_id"
_SCALAR_PARAMS = ("hist_len", "days_since_active", "query_present", "path_code")
_SIGNAL_FIELDS = {
    "ctr": ("signals.ctr", "identity"),
    "trend": ("signals.trend", "identity"),
    "popular_rank": ("signals.popular_rank", "identity"),
    "trending_rank": ("signals.trending_rank", "identity"),
    "days_since_interaction": ("signals.last_interaction", "days_since"),
    "item_age": ("signals.first_interaction", "days_since"),
    "rating_mean": ("signals.rating_mean", "identity"),
    "rating_count": ("signals.rating_count", "log1p"),
}
_POP = re.compile(r"pop_(\d+)d")

_NUMERIC_TYPES = frozenset(
    {
        "long",
        "integer",
        "short",
        "byte",
        "double",
        "float",
        "half_float",
        "scaled_float",
        "unsigned_long",
        "date",
        "date_nanos",
        "boolean",
    }
)
_EPOCH_TYPES = frozenset({"date", "date_nanos", "long"})


class PluginFeatureError(VecrankError, ValueError):
    """A model's features cannot be served by the plugin: names the feature and the field or param."""


# --- the features' sources -----------------------------------------------------------------------


def feature_source(name: str) -> dict[str, Any]:
    """Where the plugin reads feature ``name`` of a :class:`FeatureSpec` (one ``plugin_features`` entry).

    Raises:
        PluginFeatureError: for a name the spec does not define.
    """

    if name == "cos_profile":
        return {"name": name, "source": "cosine", "field": "embedding", "param": PROFILE_VECTOR}
    if name == "cos_query":
        return {"name": name, "source": "cosine", "field": "embedding", "param": QUERY_VECTOR}
    if name in ("cos_hist_max", "cos_hist_mean"):
        return {
            "name": name,
            "source": "cosine_" + name.rsplit("_", 1)[1],
            "field": "embedding",
            "param": HISTORY_VECTORS,
        }
    if name == "cf_score":
        return {"name": name, "source": "dot", "field": CF_FIELD, "param": CF_VECTOR}
    if name in POOL_RANKS:
        return {"name": name, "source": "rank", "of": POOL_RANKS[name]}
    if name in SEARCH_RANKS:
        return {"name": name, "source": "rank", "of": SEARCH_RANKS[name]}
    if name == "bm25":
        # the first pass of a search pool's ranking rescore is its BM25 rescore: 0 where no match
        return {"name": name, "source": "score", "transform": "positive"}
    if name in _SIGNAL_FIELDS:
        field, transform = _SIGNAL_FIELDS[name]
        return {"name": name, "source": "field", "field": field, "transform": transform}
    if m := _POP.fullmatch(name):
        return {"name": name, "source": "field", "field": f"signals.popularity_{m.group(1)}d", "transform": "log1p"}
    if name.startswith("item.") and len(name) > 5:
        return {"name": name, "source": "field", "field": name[5:], "transform": "identity"}
    if name.startswith("age.") and len(name) > 4:
        return {"name": name, "source": "field", "field": name[4:], "transform": "days_since"}
    if name.startswith("affinity.") and len(name) > 9:
        facet = name[9:]
        return {"name": name, "source": "overlap", "field": facet, "param": f"history_{facet}"}
    if name in _SCALAR_PARAMS:
        return {"name": name, "source": "param"}
    if name in SCORE_MAPS:
        return {"name": name, "source": "param_map", "param": name, "key_field": KEY_FIELD}
    raise PluginFeatureError(
        f"feature {name!r} has no source in the plugin; known: cos_*, cf_score, cooc, seq, ease, bm25, "
        "rank_*, n_sources, signals (ctr, pop_Nd, trend, ...), item.<field>, age.<field>, "
        "affinity.<facet>, hist_len, days_since_active, query_present, path_code"
    )


def plugin_features(spec: FeatureSpec) -> list[dict[str, Any]]:
    """The ``plugin_features`` of a model: one source per feature, in the spec's order.

    Args:
        spec: the model's :class:`FeatureSpec` (its pool sources decide ``n_sources``).

    Returns:
        A list of JSON-ready dicts, for the model document.
    """
    names, sources = list(spec.names), spec.sources
    return [
        {"name": n, "source": "count", "of": [r for r, _ in sources], "limits": [int(k) for _, k in sources]}
        if n == "n_sources"
        else feature_source(n)
        for n in names
    ]


# --- the request ---------------------------------------------------------------------------------


def encode_vector(vector: np.ndarray | Sequence[float]) -> str:
    """A vector as base64 of little-endian float32, the compact form the plugin reads from params.

    Example:
        >>> encode_vector([1.0, -2.0])
        'AACAPwAAAMA='
    """
    arr = np.asarray(vector, dtype="<f4")
    if arr.ndim != 1:
        raise ValueError(f"a vector must be one-dimensional, not of shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("a vector must not hold NaN or infinity")
    return base64.b64encode(arr.tobytes()).decode("ascii")


def decode_vector(text: str) -> np.ndarray:
    """The inverse of :func:`encode_vector` (float32)."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)


def _json_param(value: Any) -> Any:
    """numpy values and arrays into what the plugin reads: vectors become base64, 2-D arrays lists of them."""
    if type(value) is _Checked or _plain(value):
        return value  # first: a request's params are mostly plain values already
    if isinstance(value, np.ndarray):
        if value.ndim == 1:
            return encode_vector(value)
        if value.ndim == 2:
            return [encode_vector(row) for row in value]
        raise ValueError(f"a param array must have 1 or 2 dimensions, not {value.ndim}")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _json_param(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_param(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; an absent scalar reads as missing in the plugin
    return value


class _Checked(dict):
    """A map :func:`rescore_params` already made what the plugin reads: :func:`_json_param` passes it."""


def _plain(value: Any) -> bool:
    """A value JSON takes as it is (a finite float, a string, an int, a bool or None)."""
    kind = type(value)
    return kind is str or kind is int or kind is bool or value is None or (kind is float and math.isfinite(value))


def rescore_body(
    *,
    model_id: str,
    version: int | None = None,
    params: Mapping[str, Any] | None = None,
    window_size: int = 500,
    models_index: str = "vecrank-models",
    keep: int | None = None,
) -> dict[str, Any]:
    """The ``rescore`` section of a search that ranks its top ``window_size`` hits with a model.

    Args:
        model_id: The registered model id.
        version: Its version; None for the active one.
        params: Request inputs (see :func:`rescore_params`); numpy vectors are sent as base64.
        window_size: How many top hits of each shard the model scores.
        models_index: The registry index (``Settings.index("models")``).
        keep: How many of the best hits each shard returns (the search's ``size``); None: the
            whole window. Elasticsearch fetches every hit a rescore returns, even past ``size``:
            a search that shows 10 of 450 rescored hits loads 10 documents with ``keep=10``, 450
            without.

    Returns:
        ``{"window_size": ..., "vecrank": {...}}`` exactly as the search body takes it.
    """
    if not model_id:
        raise ValueError("model_id must not be empty")
    if version is not None:
        _check_count("version", version)
    _check_count("window_size", window_size)
    if keep is not None:
        _check_count("keep", keep)
    inner: dict[str, Any] = {"model": model_id}
    if version is not None:
        inner["version"] = int(version)
    inner["models_index"] = models_index
    if keep is not None:
        inner["keep"] = int(keep)
    if params:
        inner["params"] = _json_param(dict(params))
    return {"window_size": int(window_size), RESCORER: inner}


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, not {value!r}")


def rescore_params(spec: FeatureSpec, ctx: RequestContext, *, encode: bool = True) -> dict[str, Any]:
    """The ``params`` for ``spec``'s features from a request, computed as :func:`features.compute` does.

    Args:
        spec: The model's feature spec (only what its features need is included).
        ctx: The request: time, path, the user's state (profile, collaborative vector,
            co-occurrence scores, liked items), the query vector.
        encode: Vectors as base64 strings (else lists of floats).

    Returns:
        A JSON-ready dict for :func:`rescore_body`. An input the request lacks is left out, and
        the features that need it are missing (NaN) in the plugin, as in Python.
    """

    names = set(spec.names)
    state = ctx.state
    vec = encode_vector if encode else (lambda v: np.asarray(v, dtype=np.float32).tolist())
    params: dict[str, Any] = {NOW_MS: int(ctx.now_ms)}
    if "cos_profile" in names and state.profile_vector is not None:
        params[PROFILE_VECTOR] = vec(state.profile_vector)
    if "cos_query" in names and ctx.query_vector is not None:
        params[QUERY_VECTOR] = vec(ctx.query_vector)
    if names & {"cos_hist_max", "cos_hist_mean"} and state.liked:
        params[HISTORY_VECTORS] = [vec(li.vector) for li in state.liked]
    if "cf_score" in names and state.cf_vector is not None:
        params[CF_VECTOR] = vec(state.cf_vector)
    for facet in spec.facets:
        if state.liked:
            params[f"history_{facet}"] = {
                "sets": [sorted(li.facets.get(facet, ())) for li in state.liked],
                "weights": [1.0] * len(state.liked),
            }
    if "hist_len" in names:
        params["hist_len"] = math.log1p(state.interactions)
    if "days_since_active" in names:
        latest = state.last_active_ms
        params["days_since_active"] = None if latest is None else (ctx.now_ms - latest) / DAY_MS
    if "query_present" in names:
        params["query_present"] = 1.0 if ctx.query_vector is not None else 0.0
    if "path_code" in names:
        params["path_code"] = float(PATH_CODES.get(ctx.path, -1))
    for name in SCORE_MAPS:
        scores = state.scores(name)
        if name in names and scores:
            params[name] = {"values": _score_values(scores, name), "default": None}
    return params


def _score_values(scores: Mapping[str, float], name: str) -> dict[str, float | None]:
    """A score map as the plugin reads it: string keys, numbers, None for NaN."""
    if all(type(k) is str for k in scores) and all(type(v) is float and math.isfinite(v) for v in scores.values()):
        return _Checked(scores)  # the usual case (a stored state's map): no call per value
    return {str(k): _finite_or_none(v, name) for k, v in scores.items()}


def _finite_or_none(value: float | None, name: str) -> float | None:
    """A JSON number, or None (missing in the plugin) for None and NaN; infinity is refused."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"a {name} value must be a number or None, not {value!r}")
    value = float(value)
    if math.isnan(value):
        return None
    if not math.isfinite(value):
        raise ValueError(f"a {name} value must be finite, not {value!r}")
    return value


# --- scores and explanations --------------------------------------------------------------------


def model_to_score(x: float | np.ndarray) -> float | np.ndarray:
    """g: the Lucene score the plugin gives a model score (1 + x for x >= 0, 1 / (1 - x) below)."""
    arr = np.asarray(x, dtype=np.float64)
    out = np.where(arr >= 0, 1.0 + arr, 1.0 / (1.0 - np.minimum(arr, 0.0)))
    return float(out) if out.ndim == 0 else out


def score_to_model(score: float | np.ndarray) -> float | np.ndarray:
    """g's inverse: the model score behind a rescored hit's ``_score`` (to float32 precision)."""
    arr = np.asarray(score, dtype=np.float64)
    if (arr <= 0).any():
        raise ValueError("a rescored hit's score is > 0; this one was not rescored by the plugin")
    out = np.where(arr >= 1, arr - 1.0, 1.0 - 1.0 / arr)
    return float(out) if out.ndim == 0 else out


_BITS = re.compile(r"\(float32 0x([0-9a-f]{8})\)")
_FEATURE = re.compile(r"^feature \[(.*)\] = ")


def _bits_to_float(hex_bits: str) -> float:
    return float(np.array([int(hex_bits, 16)], dtype=np.uint32).view(np.float32)[0])


def _model_node(explanation: Mapping[str, Any]) -> Mapping[str, Any]:
    stack = [explanation]
    while stack:
        node = stack.pop()
        if str(node.get("description", "")).startswith("vecrank model ["):
            return node
        stack.extend(node.get("details", []))
    raise ValueError(
        "the explanation holds no vecrank rescore (was the hit past the rescore window, "
        "or the search made without explain?)"
    )


def explained_model_score(explanation: Mapping[str, Any]) -> float:
    """The model's output for a hit, exact (float32), from its ``_explanation``."""
    node = _model_node(explanation)
    for child in node.get("details", []):
        if str(child.get("description", "")).startswith("model score"):
            m = _BITS.search(child["description"])
            return _bits_to_float(m.group(1)) if m else float(child["value"])
    raise ValueError("the vecrank explanation has no model score")


def _feature_nodes(explanation: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    node = _model_node(explanation)
    for child in node.get("details", []):
        if str(child.get("description", "")).startswith("features"):
            return list(child.get("details", []))
    raise ValueError("the vecrank explanation has no features")


def explained_feature_names(explanation: Mapping[str, Any]) -> list[str]:
    """The feature names, in the model's order, from a hit's ``_explanation``."""
    out = []
    for f in _feature_nodes(explanation):
        m = _FEATURE.match(str(f.get("description", "")))
        if m is None:
            raise ValueError(f"unexpected feature explanation {f.get('description')!r}")
        out.append(m.group(1))
    return out


def explained_features(explanation: Mapping[str, Any], names: Sequence[str] | None = None) -> np.ndarray:
    """The feature row the plugin scored a hit with (float32, NaN where missing).

    Args:
        explanation: The hit's ``_explanation`` (search with ``explain: true``).
        names: If given, the expected names in order; a difference raises ValueError.
    """
    nodes = _feature_nodes(explanation)
    got = explained_feature_names(explanation)
    if names is not None and list(names) != got:
        raise ValueError(f"the plugin used features {got}, not {list(names)}")
    row = np.empty(len(nodes), dtype=np.float32)
    for i, f in enumerate(nodes):
        m = _BITS.search(str(f.get("description", "")))
        row[i] = _bits_to_float(m.group(1)) if m else (np.nan if "NaN" in f["description"] else float(f["value"]))
    return row


# --- validation at registration -----------------------------------------------------------------


def _flatten(properties: Mapping[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Leaf fields with their mapping (multi-fields as ``name.sub``)."""
    out: dict[str, dict[str, Any]] = {}
    for name, mapping in properties.items():
        path = f"{prefix}{name}"
        if "properties" in mapping:
            out.update(_flatten(mapping["properties"], path + "."))
        if "type" in mapping and mapping["type"] not in ("object", "nested"):
            out[path] = mapping
        for sub, sub_mapping in (mapping.get("fields") or {}).items():
            out[f"{path}.{sub}"] = sub_mapping
    return out


def _field_problem(feature: Mapping[str, Any], mapping: Mapping[str, Any] | None) -> str | None:
    source, field = feature["source"], feature.get("field")
    if source == "param_map":
        field = feature.get("key_field")
        if mapping is None:
            return f"looks up its values by key field {field!r}, which is not mapped"
        kind = mapping.get("type")
        if kind != "keyword":
            return f"looks up its values by key field {field!r}, which is a {kind} field, not keyword"
        if mapping.get("doc_values") is False:
            return f"looks up its values by key field {field!r}, which has doc_values: false"
        return None
    if source == "dot" and mapping is None:
        return None  # no collaborative vectors yet (no `vecrank cf fit`): the feature is missing, as in Python
    if mapping is None:
        return f"reads field {field!r}, which is not mapped"
    kind = mapping.get("type")
    if source == "field":
        if kind not in _NUMERIC_TYPES:
            return f"reads field {field!r} as a number, but it is a {kind} field"
        if feature.get("transform") == "days_since" and kind not in _EPOCH_TYPES:
            return f"takes days since field {field!r}, which needs a date or long field, not {kind}"
        if mapping.get("doc_values") is False:
            return f"reads field {field!r}, which has doc_values: false"
    elif source in ("cosine", "cosine_max", "cosine_mean", "dot"):
        if kind != "dense_vector":
            return f"computes a {source} on field {field!r}, which is a {kind} field, not a dense_vector"
        if mapping.get("element_type", "float") != "float":
            return f"computes a {source} on {field!r}, whose element_type is {mapping.get('element_type')}, not float"
        if mapping.get("index") is False:
            return f"computes a {source} on {field!r}, which is not indexed (index: false)"
    elif source == "overlap":
        if kind not in ("keyword", "constant_keyword"):
            return f"matches facet values of field {field!r}, which is a {kind} field, not keyword"
        if mapping.get("doc_values") is False:
            return f"matches facet values of field {field!r}, which has doc_values: false"
    return None


def plugin_installed(client: Elasticsearch) -> bool:
    """True when every node of the cluster has the vecrank rescorer plugin."""
    nodes = client.nodes.info(metric="plugins")["nodes"]
    return bool(nodes) and all(any(p.get("name") == PLUGIN_NAME for p in n.get("plugins", [])) for n in nodes.values())


def validate_model_doc(client: Elasticsearch, doc: Mapping[str, Any]) -> dict[str, Any]:
    """Ask the plugin (``POST /_vecrank/model/_validate``) whether it can serve a model document.

    Returns:
        The plugin's answer (``{"valid": true, "trees": ..., ...}``).

    Raises:
        PluginFeatureError: with the plugin's reason when it refuses the document.
    """
    # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
    from elasticsearch import ApiError

    try:
        resp = client.perform_request(
            "POST",
            VALIDATE_PATH,
            body=dict(doc),
            headers={"accept": "application/json", "content-type": "application/json"},
        )
    except ApiError as exc:
        if exc.meta.status == 400:
            raise PluginRefusal(f"the vecrank plugin refuses model {doc.get('model_id')!r}: {_reason(exc)}") from exc
        raise
    return dict(resp.body)


def _reason(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        return str(body["error"].get("reason") or body["error"])
    return str(getattr(exc, "message", exc))


def validate_plugin_features(
    client: Elasticsearch,
    items_index: str,
    features: Sequence[Mapping[str, Any]],
    *,
    model_doc: Mapping[str, Any] | None = None,
) -> None:
    """Refuse features the plugin could not read from ``items_index``, before a model is registered.

    Every ``field`` must be mapped in every index behind ``items_index`` with a usable type:
    numeric/date/boolean with doc values for ``field`` (date or long for ``days_since``), a float
    ``dense_vector`` that is indexed for the cosines, a keyword with doc values for ``overlap``;
    a ``param_map``'s ``key_field`` must be a keyword with doc values.
    With ``model_doc`` and the plugin installed, the plugin itself checks the document too.

    Raises:
        PluginFeatureError: naming the feature and the field.
    """
    mappings = client.indices.get_mapping(index=items_index)
    if not mappings:
        raise PluginFeatureError(f"{items_index!r} matches no index")
    for index_name, body in mappings.items():
        fields = _flatten(body.get("mappings", {}).get("properties", {}))
        for feature in features:
            field = feature.get("key_field") if feature.get("source") == "param_map" else feature.get("field")
            if field is None:
                if feature.get("source") == "param_map":
                    raise PluginFeatureError(f"feature {feature.get('name')!r} (param_map) has no key_field")
                continue
            problem = _field_problem(feature, fields.get(field))
            if problem:
                raise PluginFeatureError(
                    f"feature {feature.get('name')!r} {problem} in index {index_name!r} " f"(behind {items_index!r})"
                )
    if model_doc is not None:
        if plugin_installed(client):
            validate_model_doc(client, model_doc)
        else:
            log.info("The vecrank plugin is not installed on the cluster; only the mapping was checked")


class PluginRefusal(PluginFeatureError):
    """The installed plugin cannot serve a model that the mapping allows (for example an older
    plugin build that lacks a feature source)."""
