"""Reading item vectors and user documents, and keeping stored profiles fresh as events arrive."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vecrank.errors import VecrankError
from vecrank.ingest import indices
from vecrank.ingest.cf import CFConfig, gram_of, live_block, neighbours_from_doc
from vecrank.ingest.indices import LIST_FIELDS
from vecrank.rank.features import facet_values
from vecrank.rank.model import Registry
from vecrank.rank.profiles import Profile, ProfileConfig
from vecrank.rank.state import CFMeta, StateConfig, UserState, compute_state, stored_state

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from vecrank.settings import Settings

log = logging.getLogger(__name__)


def fetch_items(
    client: Elasticsearch, index: str, ids: Iterable[str], source: Sequence[str] = ()
) -> dict[str, tuple[np.ndarray | None, dict[str, Any]]]:
    """Stored embeddings (and the ``source`` fields) of ``ids``; missing ids are absent.

    Vectors are left out of ``_source`` by Elasticsearch 9, so they are asked for as ``fields``.
    """
    wanted = sorted({str(i) for i in ids})
    if not wanted:
        return {}
    resp = client.search(
        index=index,
        query={"ids": {"values": wanted}},
        size=len(wanted),
        # the client annotates source as bool or a mapping and fields as mappings; both take field names
        source=list(source) if source else False,  # type: ignore[arg-type]
        fields=["embedding"],  # type: ignore[list-item]
    )
    out = {}
    for h in resp["hits"]["hits"]:
        emb = h.get("fields", {}).get("embedding")
        out[h["_id"]] = (np.asarray(emb, dtype=np.float32) if emb else None, h.get("_source") or {})
    return out


def fetch_vectors(client: Elasticsearch, index: str, ids: Iterable[str]) -> dict[str, np.ndarray]:
    """Stored embeddings of ``ids`` (missing ids are absent from the result)."""
    return {i: v for i, (v, _) in fetch_items(client, index, ids).items() if v is not None}


def get_user(client: Elasticsearch, settings: Settings, user_id: str) -> dict[str, Any] | None:
    """The user's document; None for an unknown user (or no users index yet)."""
    # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
    from elasticsearch import NotFoundError

    # A 404 is caught rather than allowed with client.options(ignore_status=404): every
    # options() builds a new client, a few percent of a ranked request's CPU in the service.
    try:
        resp = client.get(index=settings.index("users"), id=str(user_id))
    except NotFoundError:
        return None
    return resp.body.get("_source") if resp.body.get("found") else None


def consumed_ids(history: Iterable[Mapping[str, Any]]) -> list[str]:
    """Items the user has interacted with (an impression alone does not count)."""
    return sorted({str(e["item_id"]) for e in history if e.get("type") != "impression"})


class FetchedItems:
    """:class:`vecrank.rank.state.ItemData` over one fetch of the items a set of histories name."""

    def __init__(self, found: dict[str, dict[str, Any]]):
        self.found = found

    @classmethod
    def fetch(
        cls,
        client: Elasticsearch,
        index: str,
        ids: Iterable[str],
        facets: Sequence[str] = (),
        *,
        lists_index: str | None = None,
    ) -> FetchedItems:
        """The items' vectors and facets from ``index``, and their neighbour lists from
        ``lists_index`` (:attr:`CFMeta.lists_index`; None: from the items, where a fit of an
        earlier vecrank wrote them)."""
        wanted = sorted({str(i) for i in ids})
        found: dict[str, dict[str, Any]] = {}
        on_items = list(LIST_FIELDS) if lists_index is None else []
        for start in range(0, len(wanted), 1000):
            chunk = wanted[start : start + 1000]
            resp = client.search(
                index=index,
                query={"ids": {"values": chunk}},
                size=len(chunk),
                # the client annotates source as bool or a mapping and fields as mappings; both take field names
                source=[*on_items, *facets],  # type: ignore[arg-type]
                fields=["embedding", "cf_vector"],  # type: ignore[list-item]
            )
            for h in resp["hits"]["hits"]:
                f = h.get("fields") or {}
                source = h.get("_source") or {}
                found[h["_id"]] = {
                    "embedding": _array(f.get("embedding")),
                    "cf_vector": _array(f.get("cf_vector")),
                    "source": source,
                    "lists": source,
                }
            if lists_index is not None:
                docs = client.mget(index=lists_index, ids=chunk)["docs"]
                for d in docs:
                    if d.get("found") and d["_id"] in found:
                        found[d["_id"]]["lists"] = d["_source"]
        return cls(found)

    def text_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return {
            i: self.found[i]["embedding"] for i in ids if i in self.found and self.found[i]["embedding"] is not None
        }

    def cf_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return {
            i: self.found[i]["cf_vector"] for i in ids if i in self.found and self.found[i]["cf_vector"] is not None
        }

    def neighbours(self, ids: Sequence[str]) -> dict[str, tuple[tuple[str, float], ...]]:
        return self._lists("cf_neighbours", ids)

    def sequence(self, ids: Sequence[str]) -> dict[str, tuple[tuple[str, float], ...]]:
        return self._lists("cf_next", ids)

    def ease(self, ids: Sequence[str]) -> dict[str, tuple[tuple[str, float], ...]]:
        return self._lists("cf_ease", ids)

    def _lists(self, name: str, ids: Sequence[str]) -> dict[str, tuple[tuple[str, float], ...]]:
        return {i: neighbours_from_doc(self.found[i]["lists"].get(name)) for i in ids if i in self.found}

    def facets(self, ids: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, frozenset[str]]]:
        return {i: {f: facet_values(self.found[i]["source"].get(f)) for f in names} for i in ids if i in self.found}


def _array(values: Any) -> np.ndarray | None:
    return np.asarray(values, dtype=np.float32) if values else None


def live_cf_meta(client: Elasticsearch, settings: Settings) -> CFMeta | None:
    """The live collaborative model's fold-in inputs, or None before any ``vecrank cf fit``."""

    block = live_block(client, settings)
    if not block:
        return None

    return CFMeta(
        version=str(block["version"]),
        gram=gram_of(block),
        config=CFConfig.from_dict(block["config"]),
        lists_index=block.get("lists_index"),
    )


def serving_state_config(client: Elasticsearch, settings: Settings) -> StateConfig:
    """The state rule of the active default model (what its requests will read), else the default."""

    try:
        model = Registry(client, settings).get("vecrank")
    except VecrankError:  # no active model yet: the default rule
        return StateConfig()
    config = (model.training or {}).get("config", {}).get("state")
    return StateConfig.from_dict(config) if config else StateConfig()


def refresh_profiles(
    client: Elasticsearch, settings: Settings, user_ids: Iterable[str], *, config: StateConfig | None = None
) -> int:
    """Recompute and store the states of ``user_ids`` from their histories. Returns how many.

    Called after new events are merged into users' histories (and for every user after a
    ``vecrank cf fit``), so the next recommendation for those users already reflects them with a
    single read of the user document. One fetch reads every history item of the batch.
    """
    # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
    from elasticsearch import helpers

    live = indices.live_index(client, settings)
    if live is None:
        return 0
    try:
        model = indices.spec_of(client, live).model
    except indices.IndexError_:  # an items index vecrank did not build has no vectors to use
        return 0
    config = config or serving_state_config(client, settings)
    cf_meta = live_cf_meta(client, settings)
    users_index = settings.index("users")
    ids = sorted({str(u) for u in user_ids})
    written = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        docs = client.mget(index=users_index, ids=chunk, source_includes=["history"])["docs"]
        histories = {d["_id"]: d["_source"].get("history", []) for d in docs if d.get("found")}
        items = FetchedItems.fetch(
            client,
            live,
            {e["item_id"] for h in histories.values() for e in h},
            config.facets,
            lists_index=cf_meta.lists_index if cf_meta else None,
        )
        actions = []
        for user_id, history in histories.items():
            state = compute_state(history, items, config=config, cf_meta=cf_meta)
            actions.append(
                {
                    "_op_type": "update",
                    "_index": users_index,
                    "_id": user_id,
                    "doc": {"state": state.to_doc(model=model, config=config)},
                }
            )
        ok, errors = helpers.bulk(client, actions, raise_on_error=False, max_retries=3)
        assert isinstance(errors, list)  # not stats_only: the failed items themselves
        written += ok
        for error in errors[:5]:
            log.warning("user state update failed: %s", error)
    return written


def refresh_all_users(client: Elasticsearch, settings: Settings, *, config: StateConfig | None = None) -> int:
    """:func:`refresh_profiles` for every user (after a ``vecrank cf fit``). Returns how many."""
    # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
    from elasticsearch import helpers

    index = settings.index("users")
    if not client.indices.exists(index=index):
        return 0
    client.indices.refresh(index=index)  # users written by an events batch a moment ago count too
    ids = [h["_id"] for h in helpers.scan(client, index=index, query={"query": {"match_all": {}}, "_source": False})]
    return refresh_profiles(client, settings, ids, config=config)


def user_state(
    client: Elasticsearch,
    settings: Settings,
    doc: dict[str, Any] | None,
    *,
    model: str,
    config: StateConfig,
    cf_meta: CFMeta | None,
) -> UserState:
    """The request's user state: the stored one when it is current, else computed now from the
    history (one more read: the history's items)."""
    stored = stored_state(doc, model=model, config=config, cf_version=cf_meta.version if cf_meta else None)
    if stored is not None:
        return stored
    history = (doc or {}).get("history") or []
    if not history:
        return UserState()
    items = FetchedItems.fetch(
        client,
        settings.index("items"),
        {e["item_id"] for e in history},
        config.facets,
        lists_index=cf_meta.lists_index if cf_meta else None,
    )
    return compute_state(history, items, config=config, cf_meta=cf_meta)


def stored_profile(user: dict[str, Any] | None, config: ProfileConfig, model: str) -> Profile | None:
    """The user's stored profile (in their state, :meth:`UserState.to_doc`) if it was made with
    this rule and model, else None. A top-level ``profile`` an earlier vecrank wrote is not read:
    nothing keeps it current any more."""
    doc = ((user or {}).get("state") or {}).get("profile")
    if not doc or doc.get("model") != model or doc.get("config") != config.fingerprint():
        return None
    return Profile.from_doc(doc)
