"""What serves a request: one :class:`Engine` per ranker (a model version over retrieval
settings), its :class:`EngineResult`, and :class:`LiveItems`, the index behind the items alias."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from vecrank.rank.ranker import Ranker
from vecrank.rank.reasons import ReasonConfig, explain
from vecrank.rank.recommender import Recommender, RetrieveConfig
from vecrank.serve.embedding import SharedEmbedder

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from vecrank.rank.model import RankerModel
    from vecrank.rank.ranker import Recommendation
    from vecrank.rank.reasons import Reason
    from vecrank.settings import Settings


@dataclass
class Served:
    item_id: str
    score: float | None
    fields: dict[str, Any]
    features: np.ndarray | None = field(default=None, repr=False)
    reasons: list[dict[str, str]] | None = None  # where asked for and the model ranked the item


@dataclass
class EngineResult:
    model_version: str  # the engine's model (what an arm serves), "none" without one
    ranked_by: str | None  # the model that ordered the items; None: retrieval order, no scores
    path: str
    cold_start: bool
    items: list[Served]
    spec: str | None  # feature spec fingerprint of the model, for the feature log
    timings_ms: dict[str, float]


class Engine:
    """One ranker: a model version (or none: retrieval order) over retrieval settings."""

    def __init__(
        self,
        client: Elasticsearch,
        settings: Settings,
        embedder: SharedEmbedder,
        model: RankerModel | None,
        *,
        retrieval: Mapping[str, Any] | None = None,
        rerank: str = "auto",
        search_model: RankerModel | None = None,
    ):
        self.model = model
        self.rerank = rerank
        recommender = Recommender(client, settings, config=RetrieveConfig(**dict(retrieval or {})), embedder=embedder)
        self.recommender = recommender
        self.ranker: Ranker | None = None
        if model is not None:
            self.ranker = Ranker(recommender, model, search_model=search_model)

    @property
    def version(self) -> str:
        return f"{self.model.model_id}@{self.model.version}" if self.model is not None else "none"

    def run(self, *, k: int, reasons: bool = False, **retrieve: Any) -> EngineResult:
        """The top ``k``; with ``reasons``, each ranked item's reasons (the Python path, which has
        the contributions)."""
        ranker = self.ranker
        if ranker is not None:
            rec = ranker.recommend(k=k, rerank=self.rerank, explain=reasons, **retrieve)
            served = [Served(r.item_id, r.score, r.candidate.fields, r.features) for r in rec.items]
            if reasons and rec.ranked_by is not None and rec.items:
                started = time.perf_counter()
                for s, why in zip(served, self._reasons(ranker, rec, retrieve.get("user")), strict=True):
                    s.reasons = [r.to_dict() for r in why]
                rec.timings_ms["reasons"] = round((time.perf_counter() - started) * 1000, 2)
            return EngineResult(
                self.version,
                rec.ranked_by,
                rec.path,
                rec.cold_start,
                served,
                ranker.model.spec.fingerprint(),
                dict(rec.timings_ms),
            )
        cset = self.recommender.candidates(k=k, **retrieve)
        return EngineResult(
            self.version,
            None,
            cset.path,
            cset.cold_start,
            [Served(c.item_id, None, c.fields) for c in cset.candidates],
            None,
            dict(cset.timings_ms),
        )

    def _reasons(self, ranker: Ranker, rec: Recommendation, user: str | None) -> list[list[Reason]]:
        """Reasons from the contributions; the liked items come from the user's state (one more
        read of the user document) and the cited ones' titles from one ``mget``."""

        config = ReasonConfig()
        state = self.recommender.user_state(str(user), ranker.config.state) if user is not None else None
        liked = [(li.item_id, li.vector) for li in state.liked] if state is not None else []
        # explain() reads values[i][j]: a feature row (a 1-D array) allows that, though numpy does not
        # declare ndarray a typing Sequence, which explain()'s annotation names.
        values = cast("list[Sequence[float] | None]", [r.features for r in rec.items])
        return explain(
            ranker.model.spec.names,
            [r.contributions or {} for r in rec.items],
            values=values,
            vectors=[r.candidate.vector for r in rec.items],
            liked=liked,
            documents=lambda ids: self.recommender.documents(ids, list(config.title_fields)),
            config=config,
        )


@dataclass(frozen=True)
class LiveItems:
    """What the items alias points at: the index and the text model its vectors come from."""

    index: str | None
    model: str | None = None
    dims: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "model": self.model, "dims": self.dims}


def wrong_index(exc: BaseException) -> bool:
    """Whether Elasticsearch refused a search the way it does when the items alias moved under
    the service: a 400 (a query vector of the old model's dimensions, a field the new index
    lacks...)."""
    # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
    from elasticsearch import ApiError

    return isinstance(exc, ApiError) and exc.meta.status == 400
