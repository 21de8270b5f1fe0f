"""The plots of an experiment report: one PNG per metric, its cumulative value per arm with a band.

matplotlib is imported when a plot is drawn, not with this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vecrank.rank.interleaving import PreferenceResult

#: metric -> unit -> ``(t, value, half-width of its interval or None)``, as the report's ``series``.
Series = Mapping[str, Mapping[str, Sequence[tuple[int, float | None, float | None]]]]


def _headline(metric: str, result: Mapping[str, Any]) -> str:
    """One line for a plot: the comparison's difference, interval and p, or why there is none."""
    if result.get("p_value") is None:
        return result.get("note") or "no test possible"
    scale, unit = (100, " pp") if metric in ("ctr", "conversion") else (1, "")
    lo, hi = result["ci"]
    return (
        f"{result['diff'] * scale:+.3g}{unit} [{lo * scale:+.3g}, {hi * scale:+.3g}], p {result['p_value']:.3g}"
        f"{' (significant)' if result['significant'] else ''}"
    )


def plot_series(
    out_dir: str | Path,
    *,
    experiment_id: str,
    control: str | None,
    ndcg_k: int,
    series: Series,
    comparisons: Mapping[str, Mapping[str, Mapping[str, Any]]],
    interleaving: PreferenceResult | None,
) -> list[str]:
    """One PNG per metric of ``series`` in ``out_dir``: its cumulative value per unit over time
    with the interval's band; under the title, each arm's test against the control from
    ``comparisons`` (for the preference, ``interleaving``'s p-value and winner).

    Returns:
        The paths written, ``<out_dir>/<experiment_id>-<metric>.png``.
    """
    # lazy: matplotlib takes 0.8 s to import; only the plots need it
    import matplotlib

    matplotlib.use("Agg")
    # lazy: matplotlib takes 0.8 s to import; only the plots need it
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    titles = {
        "ctr": "CTR (clicks / exposures), users as clusters",
        "clicks_per_user": "clicks per user",
        "conversion": "conversion (share of users)",
        "ndcg": f"NDCG@{ndcg_k} from clicks",
        "preference": f"interleaving: share of decided requests won by {interleaving.b if interleaving else 'B'}",
    }
    for metric, per_unit in series.items():
        fig, ax = plt.subplots(figsize=(7, 4.4))
        for unit, points in per_unit.items():
            pts = [(datetime.fromtimestamp(t / 1000, tz=UTC), v, h) for t, v, h in points if v is not None]
            if not pts:
                continue
            xs, ys, halves = zip(*pts)
            (line,) = ax.plot(xs, ys, label=unit, marker=".", linewidth=1.5)
            banded = [(x, y, h) for x, y, h in zip(xs, ys, halves) if h is not None]
            if banded:
                bx, by, bh = zip(*banded)
                ax.fill_between(
                    bx,
                    [y - h for y, h in zip(by, bh)],
                    [y + h for y, h in zip(by, bh)],
                    color=line.get_color(),
                    alpha=0.15,
                    linewidth=0,
                )
        if metric == "preference":
            ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"{experiment_id}: {titles.get(metric, metric)} (cumulative)", fontsize=10)
        lines = [
            f"{arm} vs {control}: {_headline(metric, tests[metric])}"
            for arm, tests in comparisons.items()
            if metric in tests
        ]
        if metric == "preference" and interleaving is not None:
            p = interleaving
            lines.append(
                f"p {p.p_value:.3g}, winner {p.winner or 'none'}"
                if p.p_value is not None
                else p.note or "no test possible"
            )
        if lines:
            ax.text(
                0.01,
                0.99,
                "\n".join(lines),
                transform=ax.transAxes,
                va="top",
                fontsize=7,
                bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0},
            )
        ax.set_xlabel("time (UTC)")
        ax.legend(loc="lower right", fontsize=8)
        fig.autofmt_xdate()
        fig.tight_layout()
        path = out / f"{experiment_id}-{metric}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written
