"""The report's figures (matplotlib, headless): progress over time with fault markers, throughput, the benchmark
ratio against multiprocessing.Pool, and recovery time per fault kind. Each is drawn only when its data exists."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from ttg.faults import KINDS
from ttg.report.model import Report


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def timeline(report: Report, path: Path, most: int = 12) -> bool:
    runs = [r for r in report.runs if len(r.timeline) > 1][:most]
    if not runs:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in runs:
        t = [p[0] for p in r.timeline]
        done = [100.0 * p[1] / max(1, r.expected) for p in r.timeline]
        (line,) = ax.plot(t, done, label=f"{r.backend} {r.mode} {r.scale} ({r.run_id[:8]})", linewidth=1.3)
        for f in (f for f in r.faults if not (f["kind"] in KINDS and KINDS[f["kind"]].at_launch)):  # set at launch, not at a time
            ax.axvline(f["at_s"], color=KINDS[f["kind"]].colour if f["kind"] in KINDS else "grey", linestyle="--", linewidth=0.8)
            if f.get("healed_s") is not None:
                ax.axvspan(f["at_s"], f["healed_s"], color=line.get_color(), alpha=0.08)
    ax.set(xlabel="seconds since the plan was published", ylabel="chunks completed (%)", title="Progress over time (dashed: faults; shaded: until healed)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)
    return True


def throughput(report: Report, path: Path) -> bool:
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in report.runs:
        if r.mode == "queue" and r.ok and not r.faults and r.params_per_s > 0:
            groups[(r.scale, r.backend)].append(r.params_per_s)
    if not groups:
        return False
    plt = _pyplot()
    scales = sorted({s for s, _ in groups}, key=lambda s: min(r.params for r in report.runs if r.scale == s))
    backends = sorted({b for _, b in groups})
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(backends)
    for i, b in enumerate(backends):
        xs = [j + i * width for j in range(len(scales))]
        ys = [max(groups.get((s, b), [0.0])) for s in scales]
        ax.bar(xs, ys, width=width, label=b)
    ax.set_xticks([j + width * (len(backends) - 1) / 2 for j in range(len(scales))], scales)
    ax.set_yscale("log")  # small sweeps are start-up bound, large ones not: a linear axis would hide the small ones
    ax.set(xlabel="scale (parameters)", ylabel="parameters / s (best fault-free run)", title="Throughput by backend and scale")
    ax.legend()
    _save(fig, path)
    return True


def benchmark(report: Report, path: Path) -> bool:
    if not report.benchmarks:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(report.benchmarks)))
    labels = [f"{b.get('backend', '?')} {b.get('params', 0):,} / chunk {b.get('chunk', 0):,}" for b in report.benchmarks]
    ratios = [float(b["ratio_to_pool"]) for b in report.benchmarks]
    ax.barh(labels, ratios, color=["tab:green" if r >= 0.9 else "tab:red" for r in ratios])
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.axvline(0.9, color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlabel="throughput ratio TTG / multiprocessing.Pool (higher is better; dashed: 0.9)", title="Benchmark against multiprocessing.Pool")
    _save(fig, path)
    return True


def recovery(report: Report, path: Path) -> bool:
    by_kind: dict[str, list[float]] = defaultdict(list)
    for f in report.faults:
        if f.get("recovered_s") is not None:
            by_kind[f["kind"]].append(float(f["recovered_s"]))
    if not by_kind:
        return False
    plt = _pyplot()
    kinds = sorted(by_kind)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.boxplot([by_kind[k] for k in kinds], showfliers=False)
    for i, k in enumerate(kinds, start=1):
        ax.scatter([i] * len(by_kind[k]), by_kind[k], s=12, alpha=0.7)
    ax.set_xticks(range(1, len(kinds) + 1), kinds, rotation=20)
    ax.set(ylabel="seconds to recover", title="Recovery time per fault kind")
    _save(fig, path)
    return True


def draw_all(report: Report, img_dir: Path) -> dict[str, str]:
    """Draw every figure that has data into ``img_dir``; returns name -> file name."""
    img_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, fn in (("timeline", timeline), ("throughput", throughput), ("benchmark", benchmark), ("recovery", recovery)):
        if fn(report, img_dir / f"{name}.png"):
            out[name] = f"{name}.png"
    return out
