"""API keys for ``vecrank serve``: the key store, the service's key cache, the per-key rate limit.

A key reads ``vrk_<id>_<secret>``: ``<id>`` is 16 hex digits, public (``vecrank apikey list``
shows it), and names the key's document in ``<prefix>-apikeys``; ``<secret>`` is 32 random bytes
(43 URL-safe characters), shown once by ``vecrank apikey create`` and never stored: the document
keeps a random per-key salt and ``HMAC-SHA256(salt, "<id>:<secret>")``. A fast hash is enough
for a secret of 256 random bits (nobody guesses it, so nothing is gained by making each guess
slow); a check reads the document by id and compares the digests in constant time
(:func:`hmac.compare_digest`).

Scopes: ``recommend`` (``GET``/``POST /recommendations``), ``events`` (``POST /events``) and
``admin``, which grants every scope.

:class:`KeyCache` keeps what it read for ``ttl_s`` seconds (``ServeConfig.key_cache_s``), so a
revoked key is refused by a running service within that time. :class:`RateLimiter` is a token
bucket per key, in the memory of one process (each worker has its own).

Standard library only: ``vecrank apikey --help`` stays fast.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, Literal

from vecrank.errors import VecrankError
from vecrank.ingest.indices import create_index_if_missing

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from vecrank.settings import Settings

log = logging.getLogger(__name__)

SCOPES = ("recommend", "events", "admin")
ADMIN = "admin"
KEY_PREFIX = "vrk_"
HASH_ALG = "hmac-sha256"
_ID_HEX = 16
_SECRET_BYTES = 32
_KEY = re.compile(r"^vrk_([0-9a-f]{16})_([A-Za-z0-9_-]{32,128})$")
LOOPBACK_NAMES = ("localhost",)


class ApiKeyError(VecrankError):
    """An API key operation failed (unknown id, bad scope...)."""


@dataclass(frozen=True)
class ApiKey:
    """What is known of a key, never its secret.

    Args:
        key_id: the public id (16 hex digits).
        name: what it is for, e.g. ``search-page``.
        scopes: ``recommend``, ``events``, ``admin`` (every scope).
        created_at: epoch milliseconds.
        revoked: refused by services (within their key cache time) once true.
        revoked_at: epoch milliseconds, or None.
    """

    key_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: int
    revoked: bool = False
    revoked_at: int | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes

    def to_dict(self) -> dict[str, Any]:
        """The listing's JSON (``vecrank apikey list --json``): no secret, no hash."""
        return {
            "id": self.key_id,
            "name": self.name,
            "scopes": list(self.scopes),
            "created_at": _iso(self.created_at),
            "revoked": self.revoked,
            "revoked_at": _iso(self.revoked_at) if self.revoked_at is not None else None,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> ApiKey:
        return cls(
            key_id=doc["key_id"],
            name=doc["name"],
            scopes=tuple(doc.get("scopes") or ()),
            created_at=int(doc["created_at"]),
            revoked=bool(doc.get("revoked")),
            revoked_at=int(doc["revoked_at"]) if doc.get("revoked_at") is not None else None,
        )


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def apikeys_mapping() -> dict[str, Any]:
    """The ``<prefix>-apikeys`` mapping: the salt and the digest are stored, not searchable."""
    stored = {"type": "keyword", "index": False, "doc_values": False}
    return {
        "dynamic": "strict",
        "properties": {
            "key_id": {"type": "keyword"},
            "name": {"type": "keyword"},
            "scopes": {"type": "keyword"},
            "created_at": {"type": "date", "format": "epoch_millis"},
            "revoked": {"type": "boolean"},
            "revoked_at": {"type": "date", "format": "epoch_millis"},
            "hash_alg": {"type": "keyword"},
            "salt": stored,
            "hash": stored,
        },
    }


def parse_key(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed ``vrk_<id>_<secret>``, else None.

    Example:
        >>> parse_key("vrk_0123456789abcdef_" + "s" * 43)[0]
        '0123456789abcdef'
        >>> parse_key("not a key") is None
        True
    """
    m = _KEY.match(token.strip()) if isinstance(token, str) else None
    return (m.group(1), m.group(2)) if m else None


def digest(key_id: str, secret: str, salt: str) -> str:
    """``HMAC-SHA256(salt, "<id>:<secret>")`` in hex: what the key store keeps instead of the secret."""
    return hmac.new(bytes.fromhex(salt), f"{key_id}:{secret}".encode(), hashlib.sha256).hexdigest()


def validate_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes in canonical order, duplicates dropped; refuses an unknown or an empty list."""
    given = set(scopes)
    unknown = sorted(given - set(SCOPES))
    if unknown:
        raise ApiKeyError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not given:
        raise ApiKeyError(f"a key needs at least one scope ({', '.join(SCOPES)})")
    return tuple(s for s in SCOPES if s in given)


class ApiKeyStore:
    """API keys in ``<prefix>-apikeys`` (document id = key id)."""

    def __init__(self, client: Elasticsearch, settings: Settings):
        self.client, self.settings = client, settings
        self.index = settings.index("apikeys")

    def _ensure(self) -> None:
        create_index_if_missing(self.client, self.index, apikeys_mapping())

    def create(self, name: str, scopes: Iterable[str]) -> tuple[ApiKey, str]:
        """A new key. Returns it and its full text ``vrk_<id>_<secret>``, which exists only in this
        return value: show it to the user once, never log it."""
        # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
        from elasticsearch import ConflictError

        name = name.strip() if isinstance(name, str) else ""
        if not name or len(name) > 200:
            raise ApiKeyError("a key needs a name of 1 to 200 characters")
        scopes = validate_scopes(scopes)
        self._ensure()
        for _ in range(3):  # an id collision (one in 2**64 per pair of keys) gets a new id
            key_id, secret, salt = (
                secrets.token_hex(_ID_HEX // 2),
                secrets.token_urlsafe(_SECRET_BYTES),
                secrets.token_hex(16),
            )
            key = ApiKey(key_id=key_id, name=name, scopes=scopes, created_at=int(time.time() * 1000))
            doc = {
                "key_id": key_id,
                "name": name,
                "scopes": list(scopes),
                "created_at": key.created_at,
                "revoked": False,
                "hash_alg": HASH_ALG,
                "salt": salt,
                "hash": digest(key_id, secret, salt),
            }
            try:
                self.client.create(index=self.index, id=key_id, document=doc, refresh="wait_for")
            except ConflictError:
                continue
            log.info("Created API key %s (%s; scopes %s)", key_id, name, ", ".join(scopes))
            return key, f"{KEY_PREFIX}{key_id}_{secret}"
        raise ApiKeyError("could not find a free key id")  # pragma: no cover

    def _doc(self, key_id: str) -> dict[str, Any] | None:
        resp = self.client.options(ignore_status=404).get(index=self.index, id=key_id)
        return resp.body.get("_source") if resp.body.get("found") else None

    def stored(self, key_id: str) -> dict[str, Any] | None:
        """The stored document of ``key_id`` (with its salt and digest), or None."""
        if not re.fullmatch(r"[0-9a-f]{16}", key_id or ""):
            return None
        return self._doc(key_id)

    def get(self, key_id: str) -> ApiKey:
        doc = self.stored(key_id)
        if doc is None:
            raise ApiKeyError(f"no API key {key_id!r}; `vecrank apikey list` shows them")
        return ApiKey.from_doc(doc)

    def list(self) -> list[ApiKey]:
        """Every key, oldest first (revoked ones too), without salts or digests."""
        if not self.client.indices.exists(index=self.index):
            return []
        hits = self.client.search(
            index=self.index,
            query={"match_all": {}},
            size=10_000,
            sort=[{"created_at": "asc"}, {"key_id": "asc"}],
            source_excludes=["salt", "hash"],
        )["hits"]["hits"]
        return [ApiKey.from_doc(h["_source"]) for h in hits]

    def revoke(self, key_id: str) -> tuple[ApiKey, bool]:
        """Mark ``key_id`` revoked. Returns the key and whether it was revoked now (False: it
        already was)."""
        key = self.get(key_id)
        if key.revoked:
            return key, False
        now = int(time.time() * 1000)
        self.client.update(index=self.index, id=key_id, doc={"revoked": True, "revoked_at": now}, refresh="wait_for")
        log.info("Revoked API key %s (%s)", key_id, key.name)
        return ApiKey(key.key_id, key.name, key.scopes, key.created_at, True, now), True

    def verify(self, token: str) -> ApiKey | None:
        """The key ``token`` is, if it is a live (unrevoked) key with the right secret; else None."""
        return KeyCache(self, ttl_s=0).authenticate(token)


class _Miss(Enum):
    """The type of :attr:`KeyCache.MISS`: one member, so ``is`` narrows ``cached()``'s answer."""

    MISS = "miss"


_MISS: Final = _Miss.MISS


class KeyCache:
    """Checks presented keys against the store, keeping each stored document ``ttl_s`` seconds
    (unknown ids too, so a flood of made-up ids costs one read each per ``ttl_s``). Holds salts
    and digests, never a secret. Thread-safe.

    Args:
        store: where the keys are.
        ttl_s: how long a read document is trusted; a revoke takes effect within it. 0: no cache.
        max_entries: bound on the cached ids (least recently used dropped first).
    """

    MISS: Final = _Miss.MISS

    def __init__(self, store: ApiKeyStore, *, ttl_s: float = 30.0, max_entries: int = 10_000):
        self.store, self.ttl_s, self.max_entries = store, ttl_s, max_entries
        self._cache: OrderedDict[str, tuple[dict[str, Any] | None, float]] = OrderedDict()
        self._lock = threading.Lock()

    def cached(self, token: str) -> ApiKey | None | Literal[_Miss.MISS]:
        """Like :meth:`authenticate` from the cache alone; ``KeyCache.MISS`` when the store must be
        read (the caller may then read it off the event loop)."""
        parsed = parse_key(token)
        if parsed is None:
            return None
        with self._lock:
            entry = self._cache.get(parsed[0])
            if entry is None or entry[1] <= time.monotonic():
                return _MISS
            self._cache.move_to_end(parsed[0])
        return _check(entry[0], *parsed)

    def authenticate(self, token: str) -> ApiKey | None:
        """The live key ``token`` is, else None (malformed, unknown, wrong secret, revoked).

        Raises:
            elasticsearch errors when the store cannot be read (the caller maps them to 503).
        """
        found = self.cached(token)
        if found is not _MISS:
            return found
        parsed = parse_key(token)
        assert parsed is not None  # cached() answers None, not _MISS, for a malformed token
        key_id, secret = parsed
        doc = self.store.stored(key_id)
        if self.ttl_s > 0:
            with self._lock:
                self._cache[key_id] = (doc, time.monotonic() + self.ttl_s)
                self._cache.move_to_end(key_id)
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
        return _check(doc, key_id, secret)


def _check(doc: Mapping[str, Any] | None, key_id: str, secret: str) -> ApiKey | None:
    if doc is None or doc.get("hash_alg") != HASH_ALG:
        return None
    if not hmac.compare_digest(digest(key_id, secret, doc["salt"]), doc["hash"]):
        return None
    if doc.get("revoked"):
        return None
    return ApiKey.from_doc(doc)


class RateLimiter:
    """A token bucket per key: ``rate`` requests per second on average, bursts of ``burst``.

    In-process: each worker process of ``vecrank serve --workers N`` has its own buckets, so a key
    may reach N times the rate across them. ``rate`` 0 disables the limit.

    Example:
        >>> limiter = RateLimiter(rate=1.0, burst=2)
        >>> [limiter.take("k", now=0.0) for _ in range(3)]
        [0.0, 0.0, 1.0]
        >>> limiter.take("k", now=1.0)
        0.0
    """

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000):
        if rate < 0 or burst < 1:
            raise ValueError(f"rate must be >= 0 and burst >= 1, not {rate} and {burst}")
        self.rate, self.burst, self.max_keys = float(rate), int(burst), max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, *, now: float | None = None) -> float:
        """Spend one token of ``key``'s bucket. Returns 0.0 when granted, else the seconds until a
        token is back (nothing spent)."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after(wait_s: float) -> str:
        """The ``Retry-After`` header for a wait: whole seconds, at least 1."""
        return str(max(1, math.ceil(wait_s)))


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an interface ``vecrank serve`` binds) is reachable from this machine only.

    Example:
        >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "0.0.0.0", "", "10.0.0.5")]
        [True, True, True, True, False, False, False]
    """
    host = (host or "").strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
