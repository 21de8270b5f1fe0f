"""Reading item vectors and user documents, and keeping stored profiles fresh as events arrive."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vecrank.rank.profiles import Profile, ProfileConfig, build_profile

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from vecrank.settings import Settings

log = logging.getLogger(__name__)


def fetch_items(client: Elasticsearch, index: str, ids: Iterable[str],
                source: Sequence[str] = ()) -> dict[str, tuple[np.ndarray | None, dict[str, Any]]]:
    """Stored embeddings (and the ``source`` fields) of ``ids``; missing ids are absent.

    Vectors are left out of ``_source`` by Elasticsearch 9, so they are asked for as ``fields``.
    """
    wanted = sorted({str(i) for i in ids})
    if not wanted:
        return {}
    resp = client.search(index=index, query={"ids": {"values": wanted}}, size=len(wanted),
                         source=list(source) if source else False, fields=["embedding"])
    out = {}
    for h in resp["hits"]["hits"]:
        emb = h.get("fields", {}).get("embedding")
        out[h["_id"]] = (np.asarray(emb, dtype=np.float32) if emb else None, h.get("_source") or {})
    return out


def fetch_vectors(client: Elasticsearch, index: str, ids: Iterable[str]) -> dict[str, np.ndarray]:
    """Stored embeddings of ``ids`` (missing ids are absent from the result)."""
    return {i: v for i, (v, _) in fetch_items(client, index, ids).items() if v is not None}


def get_user(client: Elasticsearch, settings: Settings, user_id: str) -> dict[str, Any] | None:
    resp = client.options(ignore_status=404).get(index=settings.index("users"), id=str(user_id))
    return resp.body.get("_source") if resp.body.get("found") else None


def consumed_ids(history: Iterable[dict[str, Any]]) -> list[str]:
    """Items the user has interacted with (an impression alone does not count)."""
    return sorted({str(e["item_id"]) for e in history if e.get("type") != "impression"})


def refresh_profiles(client: Elasticsearch, settings: Settings, user_ids: Iterable[str], *,
                     config: ProfileConfig | None = None) -> int:
    """Recompute and store the profiles of ``user_ids`` from their histories. Returns how many.

    Called after new events are merged into users' histories, so the next recommendation for
    those users already reflects them. A user whose history has no embedded item gets an empty
    profile (cold start).
    """
    from elasticsearch import helpers

    from vecrank.ingest import indices

    config = config or ProfileConfig()
    live = indices.live_index(client, settings)
    if live is None:
        return 0
    try:
        model = indices.spec_of(client, live).model
    except indices.IndexError_:  # an items index vecrank did not build has no vectors to use
        return 0
    users_index = settings.index("users")
    ids = sorted({str(u) for u in user_ids})
    if not ids:
        return 0
    docs = client.mget(index=users_index, ids=ids, source_includes=["history"])["docs"]
    histories = {d["_id"]: d["_source"].get("history", []) for d in docs if d.get("found")}
    vectors = fetch_vectors(client, live, {e["item_id"] for h in histories.values() for e in h})
    actions = []
    for user_id, history in histories.items():
        profile = build_profile(history, vectors, config)
        actions.append({"_op_type": "update", "_index": users_index, "_id": user_id,
                        "doc": {"profile": profile.to_doc(config, model)}})
    ok, errors = helpers.bulk(client, actions, raise_on_error=False, max_retries=3)
    for error in errors[:5]:
        log.warning("profile update failed: %s", error)
    return ok


def stored_profile(user: dict[str, Any] | None, config: ProfileConfig, model: str) -> Profile | None:
    """The user's stored profile if it was made with this rule and model, else None."""
    doc = (user or {}).get("profile")
    if not doc or doc.get("model") != model or doc.get("config") != config.fingerprint():
        return None
    return Profile.from_doc(doc)
