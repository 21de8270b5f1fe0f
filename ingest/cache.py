"""A persistent embedding cache: (model name, content hash) -> float32 vector.

Re-running an ingest over a catalog where little changed re-embeds only what changed. The cache
is one SQLite file in WAL mode, committed once per :meth:`EmbeddingCache.put_many`, so a process
killed mid-run loses at most the batch it was writing and never corrupts what was stored.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "emb.sqlite"
    >>> with EmbeddingCache(path) as cache:
    ...     cache.put_many("m", {"h1": np.ones(3, dtype=np.float32)})
    ...     sorted(cache.get_many("m", ["h1", "h2"]))
    ['h1']
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from vecrank.ingest.closeable import Closeable

__all__ = ["EmbeddingCache"]

logger = logging.getLogger(__name__)

# Little-endian on disk whatever the machine, so a cache file can be copied between hosts.
_DTYPE = np.dtype("<f4")
# SQLite builds before 3.32 allow 999 bound parameters per statement.
_MAX_PARAMS = 900

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    model TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    dims INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (model, content_hash)
) WITHOUT ROWID
"""


class EmbeddingCache(Closeable):
    """Embeddings stored by model and content hash in a SQLite file.

    Args:
        path: The SQLite file; created with its parent folders if missing.

    Example:
        >>> cache = EmbeddingCache(Path("/tmp/vecrank-doc-cache.sqlite"))  # doctest: +SKIP
        >>> hits = cache.get_many("sentence-transformers/all-MiniLM-L6-v2", hashes, dims=384)  # doctest: +SKIP
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are opened explicitly, one per put_many.
        self._conn: sqlite3.Connection | None = sqlite3.connect(self.path, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL with WAL survives a killed process; only an OS crash may drop the last commit.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(_SCHEMA)

    def get_many(self, model: str, hashes: Iterable[str], *, dims: int | None = None) -> dict[str, np.ndarray]:
        """Looks vectors up.

        Args:
            model: The embedder's ``model_name``.
            hashes: Content hashes to look up.
            dims: The length the caller expects; stored vectors of another length are
                treated as missing. Vectors whose bytes do not match their recorded length
                are always treated as missing.

        Returns:
            The hits, ``{content_hash: float32 vector}``; misses are absent.
        """
        conn = self._connection()
        wanted = list(dict.fromkeys(hashes))
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(wanted), _MAX_PARAMS):
            chunk = wanted[start : start + _MAX_PARAMS]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT content_hash, dims, vector FROM embeddings "  # noqa: S608 - only '?'s
                f"WHERE model = ? AND content_hash IN ({marks})",
                [model, *chunk],
            )
            for key, stored_dims, blob in rows:
                vector = _decode(blob, stored_dims, dims)
                if vector is not None:
                    found[key] = vector
        return found

    def put_many(self, model: str, items: Mapping[str, np.ndarray]) -> None:
        """Stores vectors, replacing any stored for the same model and hash, in one commit.

        Args:
            model: The embedder's ``model_name``.
            items: ``{content_hash: vector}``; each vector one-dimensional and non-empty.

        Raises:
            ValueError: A vector is not one-dimensional or is empty (nothing is stored then).
        """
        rows = []
        for key, vector in items.items():
            array = np.asarray(vector, dtype=_DTYPE)
            if array.ndim != 1 or array.size == 0:
                raise ValueError(f"vector for {key!r} must be 1-D and non-empty, " f"got shape {array.shape}")
            rows.append((model, key, int(array.size), array.tobytes()))
        if not rows:
            return
        conn = self._connection()
        conn.execute("BEGIN")
        try:
            conn.executemany(
                "INSERT OR REPLACE INTO embeddings (model, content_hash, dims, vector) " "VALUES (?, ?, ?, ?)",
                rows,
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def __len__(self) -> int:
        return int(self._connection().execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])

    def close(self) -> None:
        """Closes the file; calling it again does nothing."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r})"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError(f"embedding cache {self.path} is closed")
        return self._conn


def _decode(blob: bytes, stored_dims: int, wanted_dims: int | None) -> np.ndarray | None:
    if wanted_dims is not None and stored_dims != wanted_dims:
        return None
    if len(blob) != stored_dims * _DTYPE.itemsize:
        logger.warning("ignoring a corrupt cached vector (%d bytes for %d dims)", len(blob), stored_dims)
        return None
    return np.frombuffer(blob, dtype=_DTYPE).astype(np.float32)
