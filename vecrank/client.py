"""The Elasticsearch client, built from :class:`~vecrank.settings.Settings`, and the one place
where transport and HTTP errors become vecrank errors.
"""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING, Any

from vecrank.errors import ElasticsearchUnavailable
from vecrank.settings import Settings

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

log = logging.getLogger(__name__)


def make_client(settings: Settings) -> Elasticsearch:
    """A client for ``settings.es_url`` with API key or basic auth, and the CA file if any."""
    # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
    from elasticsearch import Elasticsearch

    kwargs: dict[str, Any] = {
        "request_timeout": settings.es_request_timeout,
        "verify_certs": settings.es_verify_certs,
        "max_retries": 2,
        "retry_on_timeout": True,
    }
    if settings.es_api_key:
        kwargs["api_key"] = settings.es_api_key
    elif settings.es_user:
        kwargs["basic_auth"] = (settings.es_user, settings.es_password or "")
    if settings.es_ca_certs:
        kwargs["ca_certs"] = settings.es_ca_certs
    if not settings.es_verify_certs:
        kwargs["ssl_show_warn"] = False
    try:  # responses carry hundreds of vectors: orjson parses them several times faster
        # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
        from elasticsearch.serializer import OrjsonSerializer

        kwargs["serializer"] = OrjsonSerializer()
    except ImportError:
        pass
    log.debug("Connecting to %s (auth: %s)", settings.display_url, settings.auth_method)
    return Elasticsearch(settings.es_url, **kwargs)


def explain_error(exc: BaseException, settings: Settings) -> ElasticsearchUnavailable | None:
    """Turn a client exception into a one-line error naming the URL and the cause, or None.

    The message never contains the password or API key: it is built from our own words and the
    exception's reason, and the URL is shown with any ``user:password@`` masked.
    """
    # lazy: elasticsearch's transport (0.7 s to import); only error handling needs it
    import elastic_transport
    from elasticsearch import ApiError, AuthenticationException, AuthorizationException

    url = settings.display_url
    if isinstance(exc, AuthenticationException):
        who = (
            "with the API key"
            if settings.es_api_key
            else f"as user {settings.es_user!r}"
            if settings.es_user
            else "without credentials"
        )
        return ElasticsearchUnavailable(
            f"authentication failed at {url} {who} (HTTP 401); check VECRANK_ES_PASSWORD / VECRANK_ES_API_KEY"
        )
    if isinstance(exc, AuthorizationException):
        return ElasticsearchUnavailable(f"{url} refused the request (HTTP 403): {_reason(exc)}")
    if isinstance(exc, elastic_transport.TlsError):
        return ElasticsearchUnavailable(
            f"TLS failure talking to {url}: {_reason(exc)}; set VECRANK_ES_CA_CERTS to the cluster's CA file"
        )
    if isinstance(exc, elastic_transport.ConnectionTimeout):
        return ElasticsearchUnavailable(f"timed out talking to {url} after {settings.es_request_timeout:g}s")
    if isinstance(exc, elastic_transport.ConnectionError):
        reason = _reason(exc)
        if settings.es_url.startswith("http:") and "closed connection" in reason:
            reason += " (does the server expect https?)"
        return ElasticsearchUnavailable(f"cannot reach {url}: {reason}")
    if isinstance(exc, ApiError):
        return ElasticsearchUnavailable(f"{url} answered HTTP {exc.meta.status}: {_reason(exc)}")
    return None


def _reason(exc: BaseException) -> str:
    """The innermost cause in a few words: urllib3 and ssl wrap it several layers deep."""

    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("reason") or body["error"].get("type"))[:300]
    chain: list[BaseException] = []
    todo: list[BaseException] = [exc, *getattr(exc, "errors", ())]
    while todo:
        current = todo.pop()
        if current in chain:
            continue
        chain.append(current)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    for err in chain:
        if isinstance(err, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {err.verify_message}"
    for err in chain:
        if isinstance(err, ssl.SSLError) and err.reason:
            return f"SSL {err.reason}"
    for err in chain:
        if isinstance(err, OSError) and err.strerror:
            return err.strerror
    text = str(chain[-1]) or type(chain[-1]).__name__
    return text.splitlines()[0][:300]


def cluster_summary(client: Elasticsearch) -> dict[str, Any]:
    """Name, version(s), health, node count and who we are authenticated as.

    Raises the client's own exceptions; callers map them with :func:`explain_error`.
    """
    health = client.cluster.health()
    nodes = client.nodes.info(filter_path="nodes.*.version,nodes.*.name")["nodes"]
    versions = sorted({n["version"] for n in nodes.values()})
    # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
    from elasticsearch import ApiError, AuthenticationException, AuthorizationException

    try:
        who, security = dict(client.security.authenticate()), "on"
    except (AuthenticationException, AuthorizationException):
        raise
    except ApiError:  # a cluster without security answers the authenticate API with an error
        who, security = {}, "off"
    return {
        "cluster_name": health["cluster_name"],
        "version": versions[0] if len(versions) == 1 else versions,
        "health": health["status"],
        "nodes": health["number_of_nodes"],
        "node_names": sorted(n["name"] for n in nodes.values()),
        "security": security,
        "authenticated_as": who.get("username"),
        "auth_realm": (who.get("authentication_realm") or {}).get("name"),
    }
