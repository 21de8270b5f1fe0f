"""``vecrank serve``: the HTTP API (recommendations, events, health) under the running experiment."""

from __future__ import annotations

import json
import logging
import os

import click

from vecrank.cli._common import app, event_bounds_options, event_types_options
from vecrank.serve.auth import is_loopback, parse_key


def exposure_warning(host: str, *, behind_tls: bool = False) -> str | None:
    """The warning for a service others can reach over plain HTTP, or None (loopback, or TLS in front).

    Example:
        >>> exposure_warning("127.0.0.1") is None and exposure_warning("0.0.0.0", behind_tls=True) is None
        True
    """
    if is_loopback(host) or behind_tls:
        return None
    return (
        f"{host} is beyond loopback and served over plain HTTP: API keys and events cross the network "
        "readable; put a TLS-terminating proxy in front (then pass --behind-tls)"
    )


@click.command("serve", short_help="Run the HTTP API: recommendations, events, health (OpenAPI at /docs).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes (each loads the models and the query embedder).",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 64),
    default=8,
    show_default=True,
    help="Request threads per process (each holds at most one Elasticsearch connection).",
)
@click.option(
    "--model",
    "model_id",
    default="vecrank",
    show_default=True,
    help="Outside experiments, rank with this model's active version (retrieval order without one).",
)
@click.option(
    "--max-k", type=click.IntRange(1, 1000), default=100, show_default=True, help="Largest k a request may ask for."
)
@click.option(
    "--fields", default=None, metavar="F1,F2", help="Item fields returned with each item [default: the whole document]."
)
@click.option("--no-exposures", is_flag=True, help="Do not record impressions (experiment reports need them).")
@click.option("--no-feature-log", is_flag=True, help="Do not record the ranked items' feature rows.")
@click.option(
    "--experiment-refresh",
    type=click.FloatRange(0.1, 600),
    default=5.0,
    show_default=True,
    help="Seconds between re-reads of the running experiment.",
)
@click.option(
    "--query-cache",
    type=click.IntRange(0, 10_000_000),
    default=10_000,
    show_default=True,
    help="Search texts whose embeddings are kept in memory (LRU, per worker); 0: none.",
)
@click.option("--access-log", is_flag=True, help="Log every request (costs throughput).")
@click.option(
    "--no-auth",
    is_flag=True,
    help="Serve without API keys: anyone who reaches the port may read and post events for any user. "
    "Refused unless --host is loopback (127.0.0.1, ::1, localhost).",
)
@click.option(
    "--page-key",
    default=None,
    metavar="KEY",
    help="An API key put in the search page at / (its vecrank-api-key meta tag): give the page a key of "
    "its own, --scope recommend (and --scope events for its clicks); anyone who loads the page can "
    "read it. Prefer the env variable VECRANK_SERVE_PAGE_KEY.",
)
@click.option(
    "--key-cache",
    type=click.FloatRange(0, 3600),
    default=30.0,
    show_default=True,
    help="Seconds an API key read from <prefix>-apikeys is trusted; a revoke takes effect within it.",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(0),
    default=50.0,
    show_default=True,
    help="Requests per second per API key on average (a token bucket per key and worker); 0: no limit.",
)
@click.option(
    "--rate-burst",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="Requests an API key may make at once before --rate-limit applies.",
)
@click.option(
    "--budget",
    type=click.FloatRange(0.05, 600),
    default=1.0,
    show_default=True,
    help="Seconds a recommendation request may take; its Elasticsearch calls get what is left, and past "
    "it the request gets 503 with Retry-After.",
)
@click.option(
    "--events-budget",
    type=click.FloatRange(0.05, 600),
    default=5.0,
    show_default=True,
    help="The same for a POST /events batch.",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(1, 10_000),
    default=None,
    help="Requests per worker at once on /recommendations and /events (running or waiting for a "
    "thread); past it an immediate 503. [default: twice --threads]",
)
@click.option(
    "--behind-tls", is_flag=True, help="A TLS-terminating proxy is in front: no warning when --host is beyond loopback."
)
@event_types_options
@event_bounds_options
def serve_command(
    host,
    port,
    workers,
    threads,
    model_id,
    max_k,
    fields,
    no_exposures,
    no_feature_log,
    experiment_refresh,
    query_cache,
    access_log,
    no_auth,
    page_key,
    key_cache,
    rate_limit,
    rate_burst,
    budget,
    events_budget,
    max_in_flight,
    behind_tls,
    event_types,
    event_bounds,
) -> None:
    """Serve GET/POST /recommendations, POST /events and GET /health over HTTP.

    A running experiment (`vecrank experiment start`) assigns each user to an arm; every response
    names its request id, arm and model version, and events citing a request id are attributed
    to that arm. While Elasticsearch is unreachable, requests get 503 with Retry-After and the
    service recovers by itself when it is back. Each request runs within --budget seconds
    (--events-budget for POST /events) and each worker admits --max-in-flight requests at once;
    beyond either, 503 with Retry-After. /health answers within a second whatever Elasticsearch does.

    API keys (`vecrank apikey create`) are required on /recommendations (scope recommend) and
    /events (scope events), as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'; /health,
    the page at / and the OpenAPI docs are open. --no-auth turns keys off on a loopback host only.

    POST /events accepts the --event-type types (and --negative) and refuses events outside
    --min-timestamp, --max-future and --rating-range, as `vecrank ingest events` does with the
    same options: give both the same.
    """

    # lazy: the server stack; only `vecrank serve` needs it
    import uvicorn

    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.serve.service import ServeConfig

    log = logging.getLogger("vecrank")
    if no_auth and not is_loopback(host):
        raise click.UsageError(
            f"--no-auth is refused on --host {host}: without API keys anyone who reaches the port "
            "can post events for any user; bind 127.0.0.1, ::1 or localhost, or create keys with "
            "`vecrank apikey create`"
        )
    if page_key is not None and parse_key(page_key) is None:
        raise click.BadParameter(
            "not an API key of the form vrk_<id>_<secret> (`vecrank apikey create` prints one)", param_hint="--page-key"
        )
    ctx = app()
    try:
        config = ServeConfig(
            model_id=model_id,
            max_k=max_k,
            item_fields=tuple(f.strip() for f in fields.split(",") if f.strip()) if fields else None,
            log_exposures=not no_exposures,
            log_features=not no_feature_log,
            experiment_refresh_s=experiment_refresh,
            query_cache=query_cache,
            key_cache_s=key_cache,
            rate_limit_rps=rate_limit,
            rate_limit_burst=rate_burst,
            request_budget_s=budget,
            events_budget_s=events_budget,
            max_in_flight=max_in_flight,
            event_types=event_types,
            event_bounds=event_bounds,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    settings = ctx.settings
    level = log.getEffectiveLevel()
    limit = f"{rate_limit:g} requests/s per key and worker, bursts of {rate_burst}" if rate_limit else "no rate limit"
    keys = "no API keys" if no_auth else f"API keys from {settings.index('apikeys')} (cached {key_cache:g} s), {limit}"
    log.info(
        "vecrank serve on http://%s:%d (Elasticsearch %s, prefix %s, %d worker(s); %s)",
        host,
        port,
        settings.display_url,
        settings.index_prefix,
        workers,
        keys,
    )
    warning = exposure_warning(host, behind_tls=behind_tls)
    if warning:
        log.warning("%s", warning)
    options = {
        "host": host,
        "port": port,
        "log_config": None,
        "access_log": access_log,
        "log_level": logging.getLevelName(level).lower(),
        "timeout_keep_alive": 30,
    }
    if workers == 1:
        # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
        from vecrank.serve.app import create_app

        uvicorn.run(
            create_app(settings=settings, config=config, threads=threads, auth=not no_auth, page_key=page_key),
            **options,
        )
        return
    # Worker processes rebuild the settings from the same overrides (secrets, the page key too,
    # stay in memory and in this variable of our own children; they are never logged).
    os.environ["VECRANK_SERVE_JSON"] = json.dumps(
        {
            "overrides": ctx.overrides,
            "config": config.to_dict(),
            "threads": threads,
            "auth": not no_auth,
            "page_key": page_key,
        }
    )
    uvicorn.run("vecrank.serve.app:app_from_env", factory=True, workers=workers, **options)
