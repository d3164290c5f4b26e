"""The report's figures (matplotlib, headless), one idea each, in the manner of Jepsen's results pages:

- ``panels-<backend>``: one small panel per run with a fault, chunks completed over time, each fault's window a band
  in its kind's colour (labelled once per figure);
- ``recovery``: recovery times split by fault kind and backend, every run a dot, with n under each group;
- ``throughput``: fault-free runs compared only with runs of the same scale and the same cost per parameter;
- ``benchmark``: the ratio to ``multiprocessing.Pool``, with the 1.0 line (as fast as Pool) and the target;
- ``scale``: chunks per second achieved against offered, and the p99 recording lag, by fleet size (bench/scale).

Colours are the Okabe-Ito palette (told apart by colour-blind readers); every figure is drawn only when its data exists.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from ttg.faults import KINDS
from ttg.report.model import Report, RunRow, group, scale_name

BACKEND_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7")  # Okabe-Ito: blue, orange, green, purple
POOL_TARGET = 0.9  # the ratio the benchmarks aim for (README, "Benchmark")
MOST_PANELS = 24  # per backend: beyond that a panel is too small to read
DPI = 110


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    _pyplot().close(fig)


def _colour(kind: str) -> str:
    return KINDS[kind].colour if kind in KINDS else "#999999"


def _window(f: dict[str, Any]) -> tuple[float, float] | None:
    """A fault's window on the time axis: a timed fault until its heal, a signal until the run recovered (or a
    moment); None for a fault set at launch (a poisoned chunk has no time)."""
    if f["kind"] in KINDS and KINDS[f["kind"]].at_launch:
        return None
    start = float(f["at_s"])
    if f.get("healed_s") is not None:
        return start, float(f["healed_s"])
    return start, start + max(0.05, float(f.get("recovered_s") or 0.0))


def _panel_title(r: RunRow) -> str:
    kinds = " + ".join(dict.fromkeys(f["kind"] for f in r.faults))
    lost = f", LOST {r.lost}" if r.lost else ""
    return f"{r.scale}, {r.mode}, {kinds}{lost}"


def panels(runs: list[RunRow], path: Path, backend: str) -> bool:
    """Chunks completed over time, one panel per run with a fault, the fault windows as bands."""
    runs = [r for r in runs if r.backend == backend and r.faults and len(r.timeline) > 1][:MOST_PANELS]
    if not runs:
        return False
    plt = _pyplot()
    cols = min(4, len(runs))
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 2.3 * rows + 0.6), squeeze=False)
    seen: dict[str, Any] = {}
    for ax, r in zip(axes.flat, runs, strict=False):
        t = [p[0] for p in r.timeline]
        done = [100.0 * p[1] / max(1, r.expected) for p in r.timeline]
        for f in r.faults:
            window = _window(f)
            if window is None:
                continue
            # A timed fault's band is the fault itself; a signal is a line at the moment, its band the wait to recovery.
            timed = f.get("healed_s") is not None
            seen[f["kind"]] = ax.axvspan(*window, color=_colour(f["kind"]), alpha=0.35 if timed else 0.15, linewidth=0)
            if not timed:
                ax.axvline(window[0], color=_colour(f["kind"]), linewidth=2)
        ax.plot(t, done, color="#222222", linewidth=1.2)
        ax.set_ylim(0, 105)
        ax.set_xlim(0, max(t) * 1.02 or 1)
        ax.set_title(_panel_title(r), color="#990000" if not r.fine and not r.expected_failure else "black")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(runs) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("chunks done (%)")
    for ax in axes[-1, :]:
        ax.set_xlabel("seconds")
    title = f"{backend}: progress of each run with a fault (line: a signal, band: until recovered; dark band: a fault until healed)"
    fig.suptitle(title, fontsize=10)
    fig.legend(seen.values(), seen.keys(), loc="upper center", ncol=min(6, len(seen)), bbox_to_anchor=(0.5, 0.99 - 0.02 * rows), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93 - 0.01 * rows))
    _save(fig, path)
    return True


def recovery(report: Report, path: Path) -> bool:
    """Recovery time by fault kind, split by backend: every fault a dot, the median a bar, n under each group."""
    groups = {(kind, backend): values for (backend, kind), values in report.recoveries().items()}
    if not groups:
        return False
    plt = _pyplot()
    kinds = sorted({k for k, _ in groups})
    names = sorted({b for _, b in groups})
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(kinds) + 2), 4))
    width = 0.8 / len(names)
    labelled: set[str] = set()
    for j, b in enumerate(names):
        colour = BACKEND_COLOURS[j % len(BACKEND_COLOURS)]
        for i, k in enumerate(kinds):
            values = groups.get((k, b))
            if not values:
                continue
            x = i + (j - (len(names) - 1) / 2) * width
            spread = [x + width * 0.3 * ((n % 7) / 6 - 0.5) for n in range(len(values))]  # fixed jitter: a redraw is the same
            ax.scatter(spread, values, s=14, color=colour, alpha=0.75, label=None if b in labelled else b)
            labelled.add(b)
            ax.hlines(statistics.median(values), x - width * 0.4, x + width * 0.4, color=colour, linewidth=2)
            ax.annotate(f"n={len(values)}", (x, 0), xytext=(0, -14), textcoords="offset points", ha="center", fontsize=7, annotation_clip=False)
    ax.set_xticks(range(len(kinds)), kinds)
    ax.tick_params(axis="x", pad=16)
    ax.set_ylim(bottom=0)
    ax.set(ylabel="seconds to recover", title="Recovery time by fault kind and backend (dots: runs; bar: median)")
    ax.legend(frameon=False)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)
    return True


def throughput(report: Report, path: Path) -> bool:
    """Fault-free queue runs: parameters/s per backend, one group per (scale, cost per parameter), never across them."""
    groups: dict[tuple[int, float], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in report.runs:
        if r.fault_free:
            groups[(r.params, r.cost_us)][r.backend].append(r.params_per_s)
    if not groups:
        return False
    plt = _pyplot()
    keys = sorted(groups)
    names = sorted({b for per in groups.values() for b in per})
    fig, axes = plt.subplots(1, len(keys), figsize=(2.2 * len(keys) + 1.5, 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        per = groups[key]
        ys = [statistics.median(per[b]) if b in per else 0.0 for b in names]
        ax.bar(range(len(names)), ys, color=[BACKEND_COLOURS[i % len(BACKEND_COLOURS)] for i in range(len(names))])
        for i, b in enumerate(names):
            if b in per:
                ax.annotate(f"n={len(per[b])}", (i, ys[i]), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=7)
        ax.set_xticks(range(len(names)), names)
        ax.set_title(f"{scale_name(key[0])} params, {key[1]:g} µs/param")
    axes[0][0].set_ylabel("parameters / s (median)")
    for ax in axes[0]:
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda y, _: f"{y:,.0f}"))
    fig.suptitle("Throughput of fault-free runs, compared only at the same scale and cost", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return True


def benchmark(report: Report, path: Path) -> bool:
    """Each benchmark's throughput ratio to Pool, with the 1.0 line and the target."""
    if not report.benchmarks:
        return False
    plt = _pyplot()
    names = sorted({str(b.get("backend", "?")) for b in report.benchmarks})
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.42 * len(report.benchmarks)))
    labels = [
        f"{b.get('backend', '?')}, {scale_name(int(b.get('params', 0)))} params, chunk {b.get('chunk', 0):,}, {b.get('cost_us', 0):g} µs/param"
        for b in report.benchmarks
    ]
    ratios = [float(b["ratio_to_pool"]) for b in report.benchmarks]
    colours = [BACKEND_COLOURS[names.index(str(b.get("backend", "?"))) % len(BACKEND_COLOURS)] for b in report.benchmarks]
    ax.barh(labels, ratios, color=colours)
    for y, ratio in enumerate(ratios):
        ax.annotate(f"{ratio:.2f}", (ratio, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.axvline(POOL_TARGET, color="#555555", linestyle="--", linewidth=1)
    ax.text(1.0, 1.01, " as fast as Pool", transform=ax.get_xaxis_transform(), fontsize=7)
    ax.text(POOL_TARGET, 1.01, f"target {POOL_TARGET} ", transform=ax.get_xaxis_transform(), fontsize=7, ha="right")
    ax.set_xlim(0, max([1.2, *ratios]) * 1.12)
    ax.invert_yaxis()
    ax.set(xlabel="throughput TTG / multiprocessing.Pool (higher is better)")
    _save(fig, path)
    return True


LAG_TARGET_S = 1.0  # issue 16: at 100 workers x 100 ms chunks the coordinator keeps up (p99 recording lag under 1 s)


def scale(report: Report, path: Path) -> bool:
    """Left: achieved chunks/s by workers, a line per backend and chunk length, the offered rate dashed. Right: p99 lag."""
    rows = [x for x in report.scale if x["kind"] == "ttg"]
    if not rows:
        return False
    plt = _pyplot()
    fig, (rate, lag) = plt.subplots(1, 2, figsize=(9, 3.4))
    backends = sorted({x["backend"] for x in rows})
    for (backend, chunk_ms), fleet in sorted(group(rows, lambda x: (x["backend"], x["chunk_ms"])).items()):
        fleet.sort(key=lambda x: x["workers"])
        colour = BACKEND_COLOURS[backends.index(backend) % len(BACKEND_COLOURS)]
        style = "-" if chunk_ms >= 100 else ":"
        workers = [x["workers"] for x in fleet]
        label = f"{backend}, {chunk_ms:g} ms chunks"
        rate.plot(workers, [x["chunks_per_s"] for x in fleet], style, marker="o", color=colour, label=label)
        lag.plot(workers, [max(1e-4, x.get("lag_p99_s") or 0.0) for x in fleet], style, marker="o", color=colour, label=label)
    for chunk_ms in sorted({x["chunk_ms"] for x in rows}):
        offered = sorted({(x["workers"], x.get("offered_chunks_per_s") or 0.0) for x in rows if x["chunk_ms"] == chunk_ms})
        rate.plot([w for w, _ in offered], [o for _, o in offered], "--", color="#999999", linewidth=1)
        rate.annotate(f"offered ({chunk_ms:g} ms)", offered[-1], xytext=(-4, 4), textcoords="offset points", ha="right", fontsize=7, color="#555555")
    rate.set(xlabel="workers", ylabel="chunks / s achieved", yscale="log")
    lag.axhline(LAG_TARGET_S, color="#555555", linestyle="--", linewidth=1)
    lag.text(lag.get_xlim()[0], LAG_TARGET_S, " target p99 < 1 s", fontsize=7, va="bottom")
    lag.set(xlabel="workers", ylabel="recording lag p99, s", yscale="log")
    rate.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    _save(fig, path)
    return True


def draw_all(report: Report, img_dir: Path) -> dict[str, str]:
    """Draw every figure that has data into ``img_dir``; returns figure name -> file name."""
    img_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for b in sorted({r.backend for r in report.runs}):
        if panels(report.runs, img_dir / f"panels-{b}.png", b):
            out[f"panels-{b}"] = f"panels-{b}.png"
    for name, fn in (("recovery", recovery), ("throughput", throughput), ("benchmark", benchmark), ("scale", scale)):
        if fn(report, img_dir / f"{name}.png"):
            out[name] = f"{name}.png"
    return out
