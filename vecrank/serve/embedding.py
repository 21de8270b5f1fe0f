"""The query embedder every engine of the service shares, with a bounded LRU of query vectors."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Unpack

import numpy as np

from vecrank.ingest.embed import Embedder, EncodeOptions, normalizes
from vecrank.rank.recommender import Recommender

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from vecrank.ingest.embed import TextEmbedder
    from vecrank.settings import Settings


class SharedEmbedder:
    """One query embedder for every engine, loaded on first use with ``model`` (None: the live
    index's model). The service makes a new one when the items alias moves to an index of
    another model.

    A single text's vector (a search box's query) is kept in a bounded LRU of ``cache_size``
    entries, so a repeated query costs a dictionary lookup instead of a model call; the cached
    arrays are read-only.

    It is a :class:`~vecrank.ingest.embed.TextEmbedder` (what ``Recommender(embedder=...)`` takes):
    besides :meth:`encode`, the model's properties, which load the model too.
    """

    def __init__(
        self, client: Elasticsearch, settings: Settings, *, cache_size: int = 10_000, model: str | None = None
    ):
        self._client, self._settings = client, settings
        self.model = model
        self._embedder: TextEmbedder | None = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, bool], np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.cache_size = cache_size
        self.hits = self.misses = 0

    def encode(self, texts: Sequence[str], **options: Unpack[EncodeOptions]) -> np.ndarray:
        if len(texts) != 1 or not self.cache_size:
            return self._loaded().encode(texts, **options)
        # A vector is cached with the one option that changes it.
        key = (str(texts[0]), normalizes(options))
        with self._cache_lock:
            vector = self._cache.get(key)
            if vector is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return vector[None, :]
        vector = np.array(self._loaded().encode([key[0]], **options)[0], dtype=np.float32)
        vector.flags.writeable = False
        with self._cache_lock:
            self.misses += 1
            self._cache[key] = vector
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return vector[None, :]

    def _loaded(self) -> TextEmbedder:
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    if self.model is not None:
                        self._embedder = Embedder(self.model)
                    else:
                        self._embedder = Recommender(self._client, self._settings).embedder
        return self._embedder

    @property
    def model_name(self) -> str:
        return self._loaded().model_name

    @property
    def dimensions(self) -> int:
        return self._loaded().dimensions

    @property
    def max_seq_length(self) -> int:
        return self._loaded().max_seq_length

    @property
    def similarity(self) -> str:
        return self._loaded().similarity

    def count_truncated(self, texts: Sequence[str]) -> int:
        return self._loaded().count_truncated(texts)
