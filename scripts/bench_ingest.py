#!/usr/bin/env python3
"""Item-ingest benchmark on the MovieLens + TMDB catalog: the figures the README table quotes.

What it measures, on one Elasticsearch (the local node by default) and the full catalog that
``scripts/prepare_movielens.py`` builds (9,742 movies), embedded with the recommended template:

(a) **baseline**: items/s of the bare ``Embedder.encode`` over the same rendered texts, in the
    same chunks of ``--batch-size`` rows that ingest hands to the model;
(b) **ingest**: items/s of the full ``ingest_items`` into a fresh index with no embedding
    cache (validate, hash, mget, encode, bulk-write, refresh); the ratio (b)/(a) says how much
    of the model's speed survives the pipeline (goal >= 0.9: writing hides behind embedding);
(c) **re-ingest**: the same unchanged catalog again, everything skipped as unchanged; its
    time and speed-up over (b) (goal >= 20x);
(d) **peak memory**: the RSS high-water mark (``ru_maxrss``) of a child process that runs only
    the full ingest, next to that of a child that only encodes.

Every measurement runs in its own child process, so each peak is that process's own and no run
inherits a warm cache from another; the model is loaded and warmed up before the clock starts.
The CPU time the child, Elasticsearch and the rest of the machine spent during each run is
reported too: on a small machine they share the same cores. ``--profile`` (automatic when the
ratio misses its goal) runs the ingest once more with timers around encode, mget, bulk and the
JSON serialisation of the documents.

The data is read from ``--data-dir`` (default: ``shared/data`` next to the repository; elsewhere
download MovieLens ml-latest-small from https://grouplens.org/datasets/movielens/ and the TMDB 5000
movies from Kaggle, laid out as ``shared/data/SOURCES.md`` describes). Indices are created under
a fresh prefix (``<--index-prefix>-<run id>-...``) and deleted at the end unless ``--keep``.

Example::

    .venv/bin/vecrank es up
    .venv/bin/python scripts/bench_ingest.py            # the full catalog, a table
    .venv/bin/python scripts/bench_ingest.py --limit 1000 --json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"
RATIO_GOAL = 0.9
SPEEDUP_GOAL = 20.0
WARMUP_TEXTS = 16

log = logging.getLogger("bench_ingest")


def _adapter():
    # scripts/ is not a package; load the sibling script by path, as the tests do.
    spec = importlib.util.spec_from_file_location("prepare_movielens", HERE / "prepare_movielens.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# Measuring a process
# --------------------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """This process's RSS high-water mark in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat; None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = [int(v) for v in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def es_cpu_seconds(client: Any) -> float | None:
    """CPU seconds the cluster's processes have used so far (all nodes), or None if not reported."""
    try:
        nodes = client.nodes.stats(metric="process")["nodes"].values()
        return sum(n["process"]["cpu"]["total_in_millis"] for n in nodes) / 1000
    except Exception:  # noqa: BLE001 - an optional figure; the benchmark goes on without it
        log.debug("no process CPU from the cluster", exc_info=True)
        return None


class CpuMeter:
    """CPU used between :meth:`start` and :meth:`stop` by this process, the cluster and the machine."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def start(self) -> None:
        self._t = time.perf_counter()
        self._me, self._es, self._box = cpu_seconds(), es_cpu_seconds(self.client), machine_busy_seconds()

    def stop(self) -> dict[str, float | None]:
        wall = time.perf_counter() - self._t
        me, es, box = cpu_seconds(), es_cpu_seconds(self.client), machine_busy_seconds()
        out: dict[str, float | None] = {
            "seconds": wall,
            "cpu_self_s": me - self._me,
            "cpu_es_s": None,
            "cpu_machine_s": None,
            "cpu_other_s": None,
        }
        if es is not None and self._es is not None:
            out["cpu_es_s"] = es - self._es
        if box is not None and self._box is not None:
            out["cpu_machine_s"] = box - self._box
            if out["cpu_es_s"] is not None:
                # What neither we nor Elasticsearch used: other tenants of a shared machine.
                out["cpu_other_s"] = max(0.0, out["cpu_machine_s"] - out["cpu_self_s"] - out["cpu_es_s"])
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# Profiling wrappers (the --profile child only)
# --------------------------------------------------------------------------------------------


class Timers:
    """Seconds and calls per label, safe to add to from the reader and the writer thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def add(self, label: str, seconds: float) -> None:
        with self._lock:
            self.seconds[label] += seconds
            self.calls[label] += 1

    def timed(self, label: str, func):
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.add(label, time.perf_counter() - started)

        return wrapper

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {k: {"seconds": round(v, 3), "calls": self.calls[k]} for k, v in sorted(self.seconds.items())}


class TimedEmbedder:
    """Delegates to an embedder, timing ``encode`` and ``count_truncated``."""

    def __init__(self, inner: Any, timers: Timers) -> None:
        self._inner = inner
        self.encode = timers.timed("encode", inner.encode)
        self.count_truncated = timers.timed("count_truncated (tokenize)", inner.count_truncated)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class TimedClient:
    """Delegates to an Elasticsearch client, timing ``mget`` and ``bulk`` (also on ``options()`` twins)."""

    def __init__(self, inner: Any, timers: Timers) -> None:
        self._inner, self._timers = inner, timers
        self.mget = timers.timed("mget", inner.mget)
        self.bulk = timers.timed("bulk (HTTP + Elasticsearch)", inner.bulk)

    def options(self, **kwargs: Any) -> TimedClient:
        return TimedClient(self._inner.options(**kwargs), self._timers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _time_serializer(client: Any, timers: Timers) -> None:
    # streaming_bulk turns every document into JSON with the transport's serializer, on the
    # writer thread; timing that one instance's dumps isolates the vectors' text encoding.
    serializer = client.transport.serializers.get_serializer("application/json")
    serializer.dumps = timers.timed("JSON serialisation", serializer.dumps)


def _time_prepare(timers: Timers) -> None:
    # The reading thread's per-batch work besides validation: the unchanged check, the vectors
    # and the documents (each float32 vector becomes a list of Python floats there). Its time
    # minus encode, tokenize and mget, which are timed on their own, is that list and dict work.
    from vecrank.ingest import items as items_module

    items_module._prepare = timers.timed("prepare batch (mget+encode+tolist)", items_module._prepare)


# --------------------------------------------------------------------------------------------
# Child processes: one measurement each
# --------------------------------------------------------------------------------------------


def _settings(args: argparse.Namespace, prefix: str | None = None):
    from vecrank.settings import Settings

    cli = {"es_url": args.es_url, "state_dir": args.state_dir, "index_prefix": prefix or args.index_prefix}
    return Settings.load(cli)


def _read_texts(catalog: Path, template: str) -> list[str]:
    from vecrank.ingest.template import TextTemplate

    renderer = TextTemplate(template)
    with catalog.open(encoding="utf-8") as handle:
        return [renderer.render(json.loads(line)) for line in handle if line.strip()]


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this (child) process: ``encode``, ``ingest`` or ``profile``."""
    from vecrank.client import make_client
    from vecrank.ingest.embed import Embedder

    adapter = _adapter()
    catalog = Path(args.catalog)
    texts = _read_texts(catalog, adapter.RECOMMENDED_TEMPLATE)
    embedder = Embedder(batch_size=args.encode_batch_size)
    # Load and warm the model (and the tokenizer count_truncated uses) before the clock starts.
    embedder.encode(texts[:WARMUP_TEXTS], show_progress_bar=False)
    embedder.count_truncated(texts[:WARMUP_TEXTS])
    settings = _settings(args, args.child_prefix)
    client = make_client(settings)
    meter = CpuMeter(client)
    result: dict[str, Any] = {"mode": args.child, "items": len(texts), "device": embedder.device}

    if args.child == "encode":
        meter.start()
        for chunk in _chunks(texts, args.batch_size):
            embedder.encode(chunk, normalize_embeddings=True, show_progress_bar=False)
        result.update(meter.stop())
    else:
        from vecrank.ingest.items import ItemSource, ingest_items

        source = ItemSource(template=adapter.RECOMMENDED_TEMPLATE, field_types=adapter.RECOMMENDED_FIELD_TYPES)
        timers = Timers()
        use_client, use_embedder = client, embedder
        if args.child == "profile":
            use_client, use_embedder = TimedClient(client, timers), TimedEmbedder(embedder, timers)
            _time_serializer(client, timers)
            _time_prepare(timers)
        meter.start()
        # cache=None: nothing may come from an embedding cache; every changed text is embedded.
        summary = ingest_items(
            use_client,
            settings,
            catalog,
            source,
            embedder=use_embedder,
            cache=None,
            batch_size=args.batch_size,
            progress=False,
        )
        result.update(meter.stop())
        result["summary"] = summary.to_dict()
        if args.child == "profile":
            result["profile"] = timers.to_dict()
    result["items_per_s"] = round(result["items"] / result["seconds"], 1) if result["seconds"] else None
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    client.close()
    return result


def spawn(args: argparse.Namespace, mode: str, catalog: Path, prefix: str) -> dict[str, Any]:
    """Runs this script as a child in ``mode`` and returns the JSON it prints last."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        mode,
        "--catalog",
        str(catalog),
        "--child-prefix",
        prefix,
        "--batch-size",
        str(args.batch_size),
        "--encode-batch-size",
        str(args.encode_batch_size),
    ]
    for flag, value in (("--es-url", args.es_url), ("--state-dir", args.state_dir)):
        if value:
            command += [flag, value]
    env = dict(os.environ)
    if not args.verbose:
        env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # the model-loading bar, once per child
    log.info("running %s child (%s)", mode, prefix)
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"the {mode} child exited with {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# The parent: prepare, spawn, report, clean up
# --------------------------------------------------------------------------------------------


def _cleanup(client: Any, prefix: str) -> list[str]:
    names = list(client.indices.get(index=f"{prefix}-*", expand_wildcards="all", ignore_unavailable=True))
    if names:
        client.indices.delete(index=",".join(names))
    return names


def _check_ingest(label: str, run: dict[str, Any], *, written: int, skipped: int) -> None:
    s = run["summary"]
    if not s["reconciles"] or s["failed"] or s["written"] != written or s["skipped_unchanged"] != skipped:
        raise RuntimeError(f"{label}: unexpected summary {json.dumps(s)}")


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Prepares the catalog, runs the children and returns every figure."""
    from vecrank.client import cluster_summary, make_client

    adapter = _adapter()
    run_id = uuid.uuid4().hex[:8]
    base = f"{args.index_prefix}-{run_id}"
    client = make_client(_settings(args, base))
    # The minimal Maven distribution answers GET / with 405, so ask the cluster summary instead.
    es_version = cluster_summary(client)["version"]
    cleaned: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="vecrank-bench-") as tmp:
            prepared = adapter.prepare(Path(args.data_dir), Path(tmp))
            lines = Path(prepared["items_path"]).read_text(encoding="utf-8").splitlines()
            if args.limit:
                lines = lines[: args.limit]
            catalog = Path(tmp) / "catalog.jsonl"
            catalog.write_text("\n".join(lines) + "\n", encoding="utf-8")
            n = len(lines)

            # Interleaved and repeated, best of each kept (as timeit does): on a shared machine
            # other tenants only ever make a run slower, and alternating the two kinds of run
            # spreads their noise over both instead of over one.
            encodes, ingests, reingests = [], [], []
            for k in range(args.repeat):
                encodes.append(spawn(args, "encode", catalog, f"{base}-encode"))
                ingests.append(spawn(args, "ingest", catalog, f"{base}-ingest{k}"))
                _check_ingest("ingest", ingests[-1], written=n, skipped=0)
            for _ in range(args.repeat):
                # Into the last fresh index again: every item is unchanged.
                reingests.append(spawn(args, "ingest", catalog, f"{base}-ingest{args.repeat - 1}"))
                _check_ingest("re-ingest", reingests[-1], written=0, skipped=n)
            baseline, ingest, reingest = (
                min(runs, key=lambda r: r["seconds"]) for runs in (encodes, ingests, reingests)
            )
            ratio = ingest["items_per_s"] / baseline["items_per_s"]
            profile = None
            if args.profile or (args.profile is None and ratio < RATIO_GOAL):
                profile = spawn(args, "profile", catalog, f"{base}-profile")
                _check_ingest("profile", profile, written=n, skipped=0)
    finally:
        if not args.keep:
            cleaned = _cleanup(client, base)
        client.close()

    import torch  # only for the report: the threads the model ran with

    return {
        "items": n,
        "template": adapter.RECOMMENDED_TEMPLATE,
        "batch_size": args.batch_size,
        "encode_batch_size": args.encode_batch_size,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": baseline["device"],
            "python": platform.python_version(),
            "platform": platform.platform(),
            "elasticsearch": es_version,
            "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "repeat": args.repeat,
        "baseline_encode": baseline,
        "ingest": ingest,
        "reingest": reingest,
        "ratio": round(ratio, 3),
        # Each ingest against the encode run just before it: a noise check on the best-of ratio.
        "pair_ratios": [round(i["items_per_s"] / e["items_per_s"], 3) for e, i in zip(encodes, ingests)],
        "runs": {
            "encode": [_brief(r) for r in encodes],
            "ingest": [_brief(r) for r in ingests],
            "reingest": [_brief(r) for r in reingests],
        },
        "ratio_goal": RATIO_GOAL,
        "reingest_speedup": round(ingest["seconds"] / reingest["seconds"], 1),
        "speedup_goal": SPEEDUP_GOAL,
        # The highest peak over the repeats: memory is a limit, so the worst run counts.
        "peak_rss_mib": {
            "ingest": max(r["peak_rss_mib"] for r in ingests),
            "encode_only": max(r["peak_rss_mib"] for r in encodes),
        },
        "profile": profile,
        "indices_deleted": cleaned,
    }


def _brief(run: dict[str, Any]) -> dict[str, Any]:
    return {k: run[k] for k in ("seconds", "items_per_s", "peak_rss_mib", "cpu_self_s", "cpu_es_s", "cpu_other_s")}


def _cpu_note(run: dict[str, Any]) -> str:
    parts = [f"self {run['cpu_self_s']:.0f}"]
    if run.get("cpu_es_s") is not None:
        parts.append(f"ES {run['cpu_es_s']:.0f}")
    if run.get("cpu_other_s") is not None:
        parts.append(f"other {run['cpu_other_s']:.0f}")
    return "CPU-s: " + ", ".join(parts)


def print_table(report: dict[str, Any]) -> None:
    """The human-readable report."""
    b, i, r = report["baseline_encode"], report["ingest"], report["reingest"]
    m = report["machine"]
    yes = {True: "met", False: "NOT met"}
    rows = [
        ("(a) encode only (baseline)", f"{b['items_per_s']:,.1f} items/s", f"{b['seconds']:.1f} s; {_cpu_note(b)}"),
        ("(b) full ingest, fresh index", f"{i['items_per_s']:,.1f} items/s", f"{i['seconds']:.1f} s; {_cpu_note(i)}"),
        ("    ratio (b)/(a)", f"{report['ratio']:.3f}", f"goal >= {RATIO_GOAL} {yes[report['ratio'] >= RATIO_GOAL]}"),
        (
            "(c) re-ingest, all unchanged",
            f"{r['seconds']:.2f} s",
            f"{r['items_per_s']:,.0f} items/s; {report['reingest_speedup']:.1f}x faster than (b), "
            f"goal >= {SPEEDUP_GOAL:g}x {yes[report['reingest_speedup'] >= SPEEDUP_GOAL]}",
        ),
        (
            "(d) peak RSS, ingest child",
            f"{report['peak_rss_mib']['ingest']:,.0f} MiB",
            f"ru_maxrss, highest of {report['repeat']} run(s)",
        ),
        (
            "    peak RSS, encode-only child",
            f"{report['peak_rss_mib']['encode_only']:,.0f} MiB",
            f"ru_maxrss, highest of {report['repeat']} run(s)",
        ),
    ]
    print(
        f"ingest benchmark: {report['items']:,} MovieLens items, template {report['template']!r}, "
        f"batch {report['batch_size']} rows, model batch {report['encode_batch_size']}, "
        f"best of {report['repeat']} interleaved run(s)"
    )
    print(
        f"machine: {m['cpus']} CPUs ({m['torch_threads']} torch threads, {m['device']}), Python {m['python']}, "
        f"Elasticsearch {m['elasticsearch']}, {m['platform']}"
    )
    width = max(len(row[0]) for row in rows)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>18}  {note}")
    if report["repeat"] > 1:
        runs = report["runs"]
        print(
            "  every run, items/s (CPU-s used by other processes): "
            + "; ".join(
                f"{kind} " + ", ".join(f"{r['items_per_s']:,.1f} ({r['cpu_other_s'] or 0:.0f})" for r in runs[kind])
                for kind in ("encode", "ingest")
            )
            + f"; pair ratios {', '.join(f'{x:.3f}' for x in report['pair_ratios'])}"
        )
    if report["profile"]:
        p = report["profile"]
        t = {label: data["seconds"] for label, data in p["profile"].items()}
        prepare = t.get("prepare batch (mget+encode+tolist)", 0.0)
        in_prepare = t.get("encode", 0.0) + t.get("mget", 0.0) + t.get("count_truncated (tokenize)", 0.0)
        lines = [
            ("reading thread: prepare batches", prepare),
            ("  encode", t.get("encode", 0.0)),
            ("  count_truncated (tokenize)", t.get("count_truncated (tokenize)", 0.0)),
            ("  mget (unchanged check)", t.get("mget", 0.0)),
            ("  rest (vector tolist, docs)", max(0.0, prepare - in_prepare)),
            ("reading thread: read, validate, hash", max(0.0, p["seconds"] - prepare)),
            ("writer thread: JSON serialisation", t.get("JSON serialisation", 0.0)),
            ("writer thread: bulk (HTTP + ES)", t.get("bulk (HTTP + Elasticsearch)", 0.0)),
        ]
        print(
            f"profile of one more ingest: {p['seconds']:.1f} s wall, {p['items_per_s']:,.1f} items/s, "
            f"{_cpu_note(p)} (the two threads overlap; the rest of the reading thread also covers waiting "
            f"for the writer and the final refresh)"
        )
        for label, seconds in lines:
            print(f"  {label:<38} {seconds:>8.1f} s")
    if report["indices_deleted"]:
        print(f"deleted {len(report['indices_deleted'])} benchmark index(es)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Benchmark item ingest on the MovieLens + TMDB catalog: encode-only baseline, full ingest, "
        "unchanged re-ingest, peak memory. Data from --data-dir (shared/data next to the repository; "
        "elsewhere download MovieLens ml-latest-small from grouplens.org and TMDB 5000 from Kaggle, "
        "laid out as shared/data/SOURCES.md says). Connects like the vecrank CLI: --es-url/--state-dir, "
        "VECRANK_* variables, the config file, else the local node.",
    )
    parser.add_argument(
        "--data-dir",
        default=str(DEFAULT_DATA_DIR),
        help="folder with the MovieLens and TMDB files (default: %(default)s)",
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N movies (default: all 9,742)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=256,
        help="rows per ingest batch, and per baseline chunk (default: %(default)s)",
    )
    parser.add_argument(
        "--encode-batch-size", type=int, default=64, help="texts per model forward pass (default: %(default)s)"
    )
    parser.add_argument("--es-url", default=None, help="Elasticsearch URL (default: as the vecrank CLI finds it)")
    parser.add_argument(
        "--state-dir",
        default=None,
        help="vecrank state folder whose local node to use (default: VECRANK_STATE_DIR, else "
        "~/.local/state/vecrank)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each measurement, interleaved; the best is reported (default: %(default)s; "
        "1 for a quick look)",
    )
    parser.add_argument(
        "--index-prefix",
        default="bench",
        help="prefix of the benchmark's indices; a run id is added (default: %(default)s)",
    )
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time encode/mget/bulk/JSON in one more ingest (default: when the ratio misses its goal)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the benchmark's indices")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress on stderr")
    # Internal: how the parent starts a child for one measurement.
    parser.add_argument("--child", choices=["encode", "ingest", "profile"], help=argparse.SUPPRESS)
    parser.add_argument("--catalog", help=argparse.SUPPRESS)
    parser.add_argument("--child-prefix", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; returns 0 when every run completed and reconciled, else 1."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:  # the client logs every retry with a traceback; our error says it once
        logging.getLogger("elastic_transport").setLevel(logging.ERROR)
    if args.limit is not None and args.limit < 1:
        _parser().error("--limit must be at least 1")
    if args.batch_size < 1 or args.encode_batch_size < 1 or args.repeat < 1:
        _parser().error("--batch-size, --encode-batch-size and --repeat must be at least 1")
    if args.child:
        print(json.dumps(run_child(args)))
        return 0
    try:
        report = run_benchmark(args)
    except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback under -v
        from vecrank.client import explain_error
        from vecrank.errors import VecrankError

        try:
            friendly = explain_error(exc, _settings(args))
        except VecrankError as config_problem:
            friendly = config_problem
        log.debug("benchmark failed", exc_info=True)
        print(f"bench_ingest: {friendly or exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
