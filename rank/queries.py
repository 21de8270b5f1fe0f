"""Request bodies for candidate retrieval, as pure functions returning dicts.

User input reaches Elasticsearch only inside ``term``/``terms``/``range``/``ids``/``match``/``knn``
clauses built here, never as query strings. Every argument is checked before a body is built, so
a bad request fails with a message naming the argument and no request is sent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from vecrank.errors import VecrankError
from vecrank.ingest.indices import CF_FIELDS

MAX_K = 10_000
MAX_NUM_CANDIDATES = 10_000
RANGE_OPS = {">=": "gte", ">": "gt", "<=": "lte", "<": "lt"}
#: ``FIELD=VALUE``, ``FIELD>=VALUE``...: a filter written as text (:func:`parse_filter_expressions`)
FILTER_EXPRESSION = re.compile(r"^\s*([\w.]+)\s*(>=|<=|>|<|=)\s*(.*)$")
_FILTERABLE = {
    "keyword",
    "boolean",
    "long",
    "integer",
    "short",
    "byte",
    "float",
    "double",
    "half_float",
    "scaled_float",
    "date",
    "constant_keyword",
}
# Whole-number field types and the values Elasticsearch stores in them.
_INTEGER_RANGES = {
    "byte": (-(2**7), 2**7 - 1),
    "short": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "long": (-(2**63), 2**63 - 1),
}
_FLOATS = {"float", "double", "half_float", "scaled_float"}
_NUMERIC_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RequestError(VecrankError, ValueError):
    """A retrieval argument is out of bounds or malformed; nothing was sent."""


def parse_filter_expressions(values: list[str]) -> dict[str, Any]:
    """``genres=Comedy`` (repeat a field for any of several values), ``year>=1990``, ``year<2000``:
    the one parser of filter expressions, for ``GET /recommendations?filter=`` and ``vecrank
    recommend --filter``. Raises :class:`RequestError` naming the expression.

    Example:
        >>> parse_filter_expressions(["genres=Comedy", "genres=Drama", "year>=1990"])
        {'genres': ['Comedy', 'Drama'], 'year': {'gte': '1990'}}
    """
    out: dict[str, Any] = {}
    for item in values:
        m = FILTER_EXPRESSION.match(item)
        if not m or not m.group(3):
            raise RequestError(f"filter {item!r} is not FIELD=VALUE or FIELD>=VALUE")
        name, op, value = m.groups()
        current = out.get(name)
        if op == "=":
            if isinstance(current, dict):
                raise RequestError(f"filter {name!r} has both a range and a value")
            out[name] = value if current is None else [*(current if isinstance(current, list) else [current]), value]
        else:
            if current is not None and not isinstance(current, dict):
                raise RequestError(f"filter {name!r} has both a range and a value")
            out.setdefault(name, {})[RANGE_OPS[op]] = value
    return out


def check_knn_size(k: int, num_candidates: int) -> None:
    if not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise RequestError(f"k must be an integer between 1 and {MAX_K}, not {k!r}")
    if not isinstance(num_candidates, int) or not k <= num_candidates <= MAX_NUM_CANDIDATES:
        raise RequestError(f"num_candidates must be between k ({k}) and {MAX_NUM_CANDIDATES}, not {num_candidates!r}")


def check_vector(vector: Sequence[float] | np.ndarray, dims: int, *, name: str = "vector") -> list[float]:
    """A finite, non-zero vector of ``dims`` numbers, as a list of floats."""
    try:
        arr = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError):
        raise RequestError(f"{name} must be a list of numbers") from None
    if arr.ndim != 1 or arr.shape[0] != dims:
        raise RequestError(f"{name} must have {dims} dimensions, not {arr.shape[0] if arr.ndim == 1 else arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise RequestError(f"{name} contains NaN or infinity")
    if not np.any(arr):
        raise RequestError(f"{name} is all zeros (no direction for cosine similarity)")
    return [float(x) for x in arr]


def filter_clauses(filters: Mapping[str, Any] | None, field_types: Mapping[str, str]) -> list[dict[str, Any]]:
    """Structured filters from ``{field: value}``.

    A scalar is a ``term``, a list a ``terms`` (any of), a dict with ``gte``/``gt``/``lte``/``lt``
    a ``range``. Fields must exist in the items mapping and be filterable (keyword, numeric, date,
    boolean), and each value must fit its field's type, so that Elasticsearch is never asked
    something it can only answer with an error: whole numbers within the type's range for
    ``byte``/``short``/``integer``/``long``, finite numbers for the float types, ISO 8601 text or
    epoch milliseconds for ``date`` (sent as epoch milliseconds), ``true``/``false`` for
    ``boolean``. Numbers may come as text (``GET ...&filter=year>=1990``).

    Raises:
        RequestError: naming the field and the value that does not fit.

    Example:
        >>> filter_clauses({"genres": ["Comedy", "Drama"], "year": {"gte": 1990}},
        ...                {"genres": "keyword", "year": "integer"})
        [{'terms': {'genres': ['Comedy', 'Drama']}}, {'range': {'year': {'gte': 1990}}}]
        >>> filter_clauses({"year": {"lt": "2000"}, "added": {"gte": "2020-01-01"}},
        ...                {"year": "integer", "added": "date"})
        [{'range': {'year': {'lt': 2000}}}, {'range': {'added': {'gte': 1577836800000}}}]
        >>> try:
        ...     filter_clauses({"year": "abc"}, {"year": "integer"})
        ... except RequestError as exc:
        ...     print(exc)
        filter 'year': 'abc' is not a whole number (year is integer)
    """
    clauses: list[dict[str, Any]] = []
    for name, value in (filters or {}).items():
        kind = field_types.get(name)
        if kind is None:
            known = ", ".join(sorted(f for f, t in field_types.items() if t in _FILTERABLE)) or "none"
            raise RequestError(f"unknown filter field {name!r}; filterable fields: {known}")
        if kind not in _FILTERABLE:
            raise RequestError(f"field {name!r} is {kind}, which cannot be filtered exactly")
        if isinstance(value, Mapping):
            bad = set(value) - set(RANGE_OPS.values())
            if bad or not value:
                raise RequestError(f"range filter on {name!r} takes gte/gt/lte/lt, not {sorted(bad) or 'nothing'}")
            clauses.append({"range": {name: {op: _typed(name, kind, v) for op, v in value.items()}}})
        elif isinstance(value, (list, tuple, set, frozenset)):
            values = [_typed(name, kind, v) for v in value]
            if not values:
                raise RequestError(f"filter {name!r} has an empty list of values")
            clauses.append({"terms": {name: values}})
        else:
            clauses.append({"term": {name: _typed(name, kind, value)}})
    return clauses


def _typed(name: str, kind: str, value: Any) -> str | int | float | bool:
    """``value`` as the field's type takes it, or a :class:`RequestError` naming the field."""
    value = _scalar(name, value)
    if kind in _INTEGER_RANGES:
        number = _as_number(value)
        if number is None or (isinstance(number, float) and not number.is_integer()):
            raise RequestError(f"filter {name!r}: {value!r} is not a whole number ({name} is {kind})")
        low, high = _INTEGER_RANGES[kind]
        if not low <= int(number) <= high:
            raise RequestError(f"filter {name!r}: {value!r} is outside the range of {kind} ({low} to {high})")
        return int(number)
    if kind in _FLOATS:
        number = _as_number(value)
        if number is None or not math.isfinite(number) or abs(number) > 3.4e38:
            raise RequestError(f"filter {name!r}: {value!r} is not a finite number ({name} is {kind})")
        return number
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise RequestError(f"filter {name!r}: {value!r} is not true or false ({name} is boolean)")
    if kind == "date":
        millis = _as_epoch_millis(value)
        if millis is None:
            raise RequestError(
                f"filter {name!r}: {value!r} is not a date: give ISO 8601 (2020-01-01, "
                f"2020-01-01T12:00:00Z) or epoch milliseconds"
            )
        return millis
    if isinstance(value, bool):  # keyword: Elasticsearch would match the text "true"; say so instead
        raise RequestError(f"filter {name!r}: {value!r} is not text ({name} is {kind})")
    return value


def _as_number(value: str | int | float | bool) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    text = value.strip()
    if not _NUMERIC_TEXT.fullmatch(text):
        return None
    if any(c in text for c in ".eE"):
        number = float(text)
        return int(number) if number.is_integer() and abs(number) < 2**63 else number
    return int(text)


def _as_epoch_millis(value: str | int | float | bool) -> int | None:
    """Epoch milliseconds from a number (already milliseconds) or ISO 8601 text; None otherwise."""
    number = _as_number(value)
    if number is not None:
        if isinstance(number, float) and not math.isfinite(number):
            return None
        millis = round(number)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        millis = (moment - _EPOCH) // timedelta(milliseconds=1)
    else:
        return None
    # The years 1 to 9999, which every Elasticsearch date format can hold.
    return millis if -62_135_596_800_000 <= millis <= 253_402_300_799_999 else None


def _scalar(name: str, value: Any) -> str | int | float | bool:
    if isinstance(value, bool) or isinstance(value, (int, str)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise RequestError(f"filter {name!r}: {value!r} is not a string, number or boolean")


def candidate_filter(
    clauses: Sequence[dict[str, Any]], *, exclude_ids: Sequence[str] = (), only_available: bool = True
) -> dict[str, Any] | None:
    """The filter every candidate query shares: caller filters, availability, exclusions."""
    must_not: list[dict[str, Any]] = []
    if exclude_ids:
        must_not.append({"ids": {"values": list(exclude_ids)}})
    if only_available:
        must_not.append({"term": {"available": False}})
    if not clauses and not must_not:
        return None
    body: dict[str, Any] = {}
    if clauses:
        body["filter"] = list(clauses)
    if must_not:
        body["must_not"] = must_not
    return {"bool": body}


def knn_clause(
    vector: Sequence[float],
    *,
    k: int,
    num_candidates: int,
    filter: dict[str, Any] | None = None,
    similarity: float | None = None,
    field: str = "embedding",
    boost: float | None = None,
) -> dict[str, Any]:
    """One ``knn`` clause. ``similarity`` is the floor on the raw similarity (cosine), not the score."""
    clause: dict[str, Any] = {"field": field, "query_vector": list(vector), "k": k, "num_candidates": num_candidates}
    if filter is not None:
        clause["filter"] = filter
    if similarity is not None:
        if not -1.0 <= similarity <= 1.0:
            raise RequestError(f"similarity floor must be between -1 and 1, not {similarity}")
        clause["similarity"] = similarity
    if boost is not None:
        clause["boost"] = boost
    return clause


def pool_body(
    *,
    pool: Any,
    size: int,
    filter: dict[str, Any] | None,
    text_vector: Sequence[float] | None,
    cf_vector: Sequence[float] | None,
    listed: Mapping[str, Sequence[str]],
    source: Sequence[str] | bool | Mapping[str, Any],
    with_vectors: bool = False,
    candidates_factor: int = 4,
) -> dict[str, Any]:
    """The one search that gathers a request's pool (:class:`vecrank.rank.offline.PoolConfig`):
    a ``knn`` clause on the text vectors and one on the collaborative vectors, plus, as ``should``
    clauses, the user's best items by each score map (co-occurrence, sequence, EASE), the popular
    and the trending items by the signals' ranks — all under the same filter and exclusions. Each
    clause is named after its source, so every hit's ``matched_queries`` says which sources found it.

    Args:
        pool: the sources' sizes.
        size: hits to return (the whole pool for ranking here; ``k`` when the plugin rescores
            the pool and returns the best).
        filter: the caller's filters, availability and seen items (:func:`candidate_filter`).
        text_vector: the text profile (or the profile blended with the search text); None: no
            text clause.
        cf_vector: the user's collaborative vector; None: no collaborative clause.
        listed: source (``cooc``, ``seq``, ``ease``) -> the user's best items by that score, best
            first (the first ``pool.<source>`` are asked for).
        source: the ``_source`` fields to return.
        with_vectors: return the hits' text and collaborative vectors (ranking in Python).
        candidates_factor: HNSW candidates per shard as a multiple of each clause's ``k``.

    Example:
        >>> from vecrank.rank.offline import PoolConfig
        >>> body = pool_body(pool=PoolConfig(text=2, cf=0, cooc=1, seq=0, ease=0, popular=3, trending=0), size=6,
        ...                  filter=None, text_vector=[1.0, 0.0], cf_vector=None, listed={"cooc": ["a", "b"]},
        ...                  source=False)
        >>> body["knn"][0]["_name"], body["knn"][0]["k"]
        ('text', 2)
        >>> body["query"]["bool"]["should"][0], body["query"]["bool"]["should"][1]["range"]
        ({'ids': {'values': ['a'], '_name': 'cooc'}}, {'signals.popular_rank': {'lte': 3, '_name': 'popular'}})
    """
    knn = []
    for name, vector, field, k in (
        ("text", text_vector, "embedding", pool.text),
        ("cf", cf_vector, "cf_vector", pool.cf),
    ):
        if vector is not None and k:
            clause = knn_clause(
                list(vector),
                k=k,
                num_candidates=min(MAX_NUM_CANDIDATES, max(100, candidates_factor * k)),
                filter=filter,
                field=field,
            )
            clause["_name"] = name
            knn.append(clause)
    should: list[dict[str, Any]] = []
    for name, ids in listed.items():
        limit = getattr(pool, name)
        if limit and ids:
            should.append({"ids": {"values": [str(i) for i in list(ids)[:limit]], "_name": name}})
    for name, limit in (("popular", pool.popular), ("trending", pool.trending)):
        if limit:
            should.append({"range": {f"signals.{name}_rank": {"lte": int(limit), "_name": name}}})
    query = (
        {"bool": {"should": should, "minimum_should_match": 1, "filter": [filter] if filter else []}}
        if should
        else None
    )
    body = search_body(size=size, knn=knn or None, query=query, source=source)
    if with_vectors:
        body["fields"] = ["embedding", "cf_vector"]
    if not knn and query is None:
        raise RequestError("the pool has no source: no profile, no collaborative vector and every pool size 0")
    return body


#: A search request's pool (:func:`search_pool_body`): the query kNN's top ``SEARCH_POOL`` and the
#: best BM25 hits outside them, :func:`search_window` in all: a documented default, the same offline
#: (``evaluate --task search``) and in serving.
SEARCH_POOL = 100
#: The first-pass score of a search pool's kNN hits: a constant above any BM25 score, so that they
#: all come before the BM25-only hits (the pool's query rescore then scores every hit by BM25).
KNN_FIRST = 1e6


def search_window(size: int = SEARCH_POOL) -> int:
    """How many hits a search pool holds (its search's ``size`` and both rescores' window) for a
    kNN of ``size``: the kNN's and as many BM25 hits again at most."""
    return 2 * size


def text_fields(field_types: Mapping[str, str]) -> list[str]:
    """The fields BM25 reads: the embedded text first, then the catalog's other text fields."""
    return ["text", *sorted(f for f, t in field_types.items() if t == "text" and f != "text")]


def bm25_body(
    text: str,
    *,
    fields: Sequence[str],
    size: int,
    filter: dict[str, Any] | None,
    source: Sequence[str] | bool | Mapping[str, Any] = False,
    with_vectors: bool = False,
) -> dict[str, Any]:
    """The search text's BM25 search: a ``multi_match`` on ``fields`` under the request's filter."""
    query = {
        "bool": {
            "must": [{"multi_match": {"query": text, "fields": list(fields)}}],
            "filter": [filter] if filter else [],
        }
    }
    body = search_body(size=size, query=query, source=source)
    if with_vectors:
        body["fields"] = ["embedding", "cf_vector"]
    return body


def search_pool_body(
    text: str,
    vector: Sequence[float] | np.ndarray,
    *,
    fields: Sequence[str],
    size: int = SEARCH_POOL,
    filter: dict[str, Any] | None,
    source: Sequence[str] | bool | Mapping[str, Any] = False,
    with_vectors: bool = False,
    candidates_factor: int = 4,
) -> dict[str, Any]:
    """A search request's pool in one search: the query embedding's kNN top ``size`` (each scored
    :data:`KNN_FIRST`), or-ed with the text's BM25 ``multi_match`` on ``fields``, under the
    request's filter; the first ``2 × size`` hits (the kNN's, then the best BM25 hits outside them)
    are the pool, and a ``query`` rescore gives each its BM25 score (0 where the text does not
    match). A ranking rescore appended to ``body["rescore"]`` then sees those scores as the first pass.

    Example:
        >>> body = search_pool_body("dark comedy", [1.0, 0.0], fields=["text"], size=2, filter=None)
        >>> body["size"], body["rescore"][0]["query"]["query_weight"]
        (4, 0.0)
        >>> body["query"]["bool"]["should"][0]["constant_score"]["boost"]
        1000000.0
    """
    match = {"multi_match": {"query": text, "fields": list(fields)}}
    knn = knn_clause(
        list(vector), k=size, num_candidates=min(MAX_NUM_CANDIDATES, max(100, candidates_factor * size)), filter=filter
    )
    query = {
        "bool": {
            "should": [{"constant_score": {"filter": {"knn": knn}, "boost": KNN_FIRST}}, match],
            "minimum_should_match": 1,
            "filter": [filter] if filter else [],
        }
    }
    window = search_window(size)
    body = search_body(size=window, query=query, source=source)
    body["rescore"] = [
        {
            "window_size": window,
            "query": {"rescore_query": match, "query_weight": 0.0, "rescore_query_weight": 1.0, "score_mode": "total"},
        }
    ]
    if with_vectors:
        body["fields"] = ["embedding", "cf_vector"]
    return body


def search_pool_ids(knn_ids: Sequence[str], bm25_ids: Sequence[str], size: int = SEARCH_POOL) -> list[str]:
    """The pool :func:`search_pool_body` gathers, from the kNN's ``size`` best (``knn_ids``) and
    BM25's hits best first (``bm25_ids``, at least ``2 × size`` of them where there are so many):
    the kNN's, then BM25's best outside them up to ``2 × size`` in all. The offline replay, whose
    kNN is exact, builds its pools with it.

    Example:
        >>> search_pool_ids(["a", "b"], ["b", "c", "d", "e"], size=2)
        ['a', 'b', 'c', 'd']
    """
    pool = list(dict.fromkeys(knn_ids))
    taken = set(pool)
    for item in bm25_ids:
        if len(pool) >= search_window(size):
            break
        if item not in taken:
            pool.append(item)
            taken.add(item)
    return pool


def query_knn_body(
    vector: Sequence[float] | np.ndarray,
    *,
    size: int,
    filter: dict[str, Any] | None,
    source: Sequence[str] | bool | Mapping[str, Any] = False,
    with_vectors: bool = False,
    candidates_factor: int = 4,
) -> dict[str, Any]:
    """The search text's embedding kNN under the request's filter."""
    knn = knn_clause(
        list(vector), k=size, num_candidates=min(MAX_NUM_CANDIDATES, max(100, candidates_factor * size)), filter=filter
    )
    body = search_body(size=size, knn=knn, source=source)
    if with_vectors:
        body["fields"] = ["embedding", "cf_vector"]
    return body


def text_match(text: str, *, boost: float, field: str = "text") -> dict[str, Any]:
    """A ``match`` on the embedded text: the search-box words scored with BM25 next to the kNN."""
    return {"match": {field: {"query": text, "boost": boost}}}


def shown_source(fields: Sequence[str] | None) -> list[str] | dict[str, list[str]]:
    """The ``_source`` a shown item comes back with: ``fields``, or (None) every field but the
    collaborative lists and vectors that only the ranking reads (hundreds of entries per item)."""
    if fields is not None:
        return list(fields)
    return {"excludes": ["embedding", *CF_FIELDS]}


def source_with(
    source: Sequence[str] | bool | Mapping[str, Any], field: str
) -> Sequence[str] | bool | Mapping[str, Any]:
    """``source`` (a ``_source`` spec) widened to return ``field`` too; unchanged when it already
    does (``True``, a list naming it or an object above it, excludes that spare it).

    Example:
        >>> source_with(["title"], "signals.interactions")
        ['title', 'signals.interactions']
        >>> source_with(["title", "signals"], "signals.interactions")
        ['title', 'signals']
        >>> source_with({"excludes": ["embedding"]}, "signals.interactions")
        {'excludes': ['embedding']}
    """
    parts = field.split(".")
    covering = {".".join(parts[: n + 1]) for n in range(len(parts))}
    if source is True:
        return source
    if isinstance(source, Mapping):
        includes = source.get("includes")
        excluded = covering & set(source.get("excludes") or ())
        if not excluded and (not includes or covering & set(includes)):
            return source
        return {
            **source,
            **({"includes": [*includes, field]} if includes else {}),
            "excludes": [e for e in source.get("excludes") or () if e not in covering],
        }
    if source is False:
        return [field]
    listed = list(source)
    return listed if covering & set(listed) else [*listed, field]


def search_body(
    *,
    size: int,
    knn: dict[str, Any] | list[dict[str, Any]] | None = None,
    query: dict[str, Any] | None = None,
    source: Sequence[str] | bool | Mapping[str, Any] = True,
    with_vectors: bool = False,
    sort: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``_search`` body. With ``with_vectors`` the stored embedding comes back in ``fields``."""
    body: dict[str, Any] = {"size": size, "_source": source if isinstance(source, (bool, Mapping)) else list(source)}
    if knn is not None:
        body["knn"] = knn
    if query is not None:
        body["query"] = query
    if sort is not None:
        body["sort"] = sort
    if with_vectors:
        body["fields"] = ["embedding"]
    return body


def popular_body(
    *,
    size: int,
    filter: dict[str, Any] | None,
    source: Sequence[str] | bool | Mapping[str, Any] = True,
    signal: str = "signals.popularity_30d",
    with_vectors: bool = False,
) -> dict[str, Any]:
    """Cold start without any text or context: the most popular items by a windowed signal."""
    sort: list[dict[str, Any]] = [
        {signal: {"order": "desc", "missing": "_last", "unmapped_type": "float"}},
        {"signals.rating_count": {"order": "desc", "missing": "_last", "unmapped_type": "long"}},
        {"item_id": "asc"},
    ]
    query = {"bool": {"filter": [filter]}} if filter else {"match_all": {}}
    return search_body(size=size, query=query, source=source, sort=sort, with_vectors=with_vectors)


def flatten_mapping(properties: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"signals": {"properties": {"ctr": {"type": "float"}}}}`` -> ``{"signals.ctr": "float"}``."""
    out: dict[str, str] = {}
    for name, spec in properties.items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            out.update(flatten_mapping(spec["properties"], path + "."))
        elif "type" in spec:
            out[path] = spec["type"]
    return out
