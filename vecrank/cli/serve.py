"""``vecrank serve``: the HTTP API (recommendations, events, health) under the running experiment."""

from __future__ import annotations

import click

from vecrank.cli._common import app


@click.command("serve", short_help="Run the HTTP API: recommendations, events, health (OpenAPI at /docs).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Processes (each loads the models and the query embedder).")
@click.option("--threads", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Request threads per process (each holds at most one Elasticsearch connection).")
@click.option("--model", "model_id", default="vecrank", show_default=True,
              help="Outside experiments, rank with this model's active version (retrieval order without one).")
@click.option("--max-k", type=click.IntRange(1, 1000), default=100, show_default=True,
              help="Largest k a request may ask for.")
@click.option("--fields", default=None, metavar="F1,F2",
              help="Item fields returned with each item [default: the whole document].")
@click.option("--no-exposures", is_flag=True, help="Do not record impressions (experiment reports need them).")
@click.option("--no-feature-log", is_flag=True, help="Do not record the ranked items' feature rows.")
@click.option("--experiment-refresh", type=click.FloatRange(0.1, 600), default=5.0, show_default=True,
              help="Seconds between re-reads of the running experiment.")
@click.option("--query-cache", type=click.IntRange(0, 10_000_000), default=10_000, show_default=True,
              help="Search texts whose embeddings are kept in memory (LRU, per worker); 0: none.")
@click.option("--access-log", is_flag=True, help="Log every request (costs throughput).")
def serve_command(host, port, workers, threads, model_id, max_k, fields, no_exposures, no_feature_log,
                  experiment_refresh, query_cache, access_log) -> None:
    """Serve GET/POST /recommendations, POST /events and GET /health over HTTP.

    A running experiment (`vecrank experiment start`) assigns each user to an arm; every response
    names its request id, arm and model version, and events citing a request id are attributed
    to that arm. While Elasticsearch is unreachable, requests get 503 with Retry-After and the
    service recovers by itself when it is back.
    """
    import json
    import logging
    import os

    import uvicorn

    from vecrank.serve.service import ServeConfig

    ctx = app()
    try:
        config = ServeConfig(model_id=model_id, max_k=max_k,
                             item_fields=tuple(f.strip() for f in fields.split(",") if f.strip()) if fields else None,
                             log_exposures=not no_exposures, log_features=not no_feature_log,
                             experiment_refresh_s=experiment_refresh, query_cache=query_cache)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    settings = ctx.settings
    level = logging.getLogger("vecrank").getEffectiveLevel()
    logging.getLogger("vecrank").info("vecrank serve on http://%s:%d (Elasticsearch %s, prefix %s, %d worker(s))",
                                      host, port, settings.display_url, settings.index_prefix, workers)
    options = {"host": host, "port": port, "log_config": None, "access_log": access_log,
               "log_level": logging.getLevelName(level).lower(), "timeout_keep_alive": 30}
    if workers == 1:
        from vecrank.serve.app import create_app

        uvicorn.run(create_app(settings=settings, config=config, threads=threads), **options)
        return
    # Worker processes rebuild the settings from the same overrides (secrets stay in memory and
    # in this variable of our own children; they are never logged).
    os.environ["VECRANK_SERVE_JSON"] = json.dumps({"overrides": ctx.overrides, "config": config.to_dict(),
                                                   "threads": threads})
    uvicorn.run("vecrank.serve.app:app_from_env", factory=True, workers=workers, **options)
