"""A report against a baseline (``ttg report DIR --baseline OTHER``), as pytest-benchmark compares runs: per metric,
the baseline's figure, this one's, the change, and a flag when it moved the wrong way by more than the threshold.

Metrics are compared only between like and like: throughput of fault-free queue runs of the same backend, scale and
cost per parameter; each benchmark's ratio to Pool by its name; median recovery per backend and fault kind; chunks lost
where none was expected, per backend. A metric present on one side only is listed, never flagged.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from ttg.report.model import Report, scale_name

RECOVERY_NOISE_S = 0.1  # recovery moves by a poll interval from run to run: a smaller change is not a regression


@dataclass(frozen=True)
class Delta:
    metric: str
    key: str
    baseline: float | None
    current: float | None
    higher_is_better: bool
    regression: bool

    @property
    def change(self) -> float | None:
        """Relative change, current against baseline (None when either is missing or the baseline is 0)."""
        if self.baseline is None or self.current is None or self.baseline == 0:
            return None
        return (self.current - self.baseline) / self.baseline


def _throughput(r: Report) -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for x in r.runs:
        if x.mode == "queue" and x.ok and not x.faults and x.params_per_s > 0:
            groups[f"{x.backend}, {x.scale} params, {x.cost_us:g} µs/param"].append(x.params_per_s)
    return {k: statistics.median(v) for k, v in groups.items()}


def _pool_ratio(r: Report) -> dict[str, float]:
    return {f"{b.get('name', '?')} ({scale_name(int(b.get('params', 0)))} params)": float(b["ratio_to_pool"]) for b in r.benchmarks if "ratio_to_pool" in b}


def _recovery(r: Report) -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for f in r.faults:
        if f.get("recovered_s") is not None:
            groups[f"{f['backend']}, {f['kind']}"].append(float(f["recovered_s"]))
    return {k: statistics.median(v) for k, v in groups.items()}


def _lost(r: Report) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for x in r.runs:
        out[x.backend] += 0 if x.expected_failure else x.lost
    return dict(out)


# metric name, how to read it from a report, whether higher is better
METRICS: tuple[tuple[str, Callable[[Report], dict[str, float]], bool], ...] = (
    ("throughput (params/s, median)", _throughput, True),
    ("ratio to Pool", _pool_ratio, True),
    ("recovery (s, median)", _recovery, False),
    ("chunks lost where none was expected", _lost, False),
)


def _regressed(metric: str, baseline: float, current: float, higher_is_better: bool, threshold: float) -> bool:
    if metric.startswith("chunks lost"):
        return current > baseline  # any new loss
    if higher_is_better:
        return current < baseline * (1 - threshold)
    return current > baseline * (1 + threshold) and current - baseline > RECOVERY_NOISE_S


def compare(current: Report, baseline: Report, threshold: float) -> list[Delta]:
    """Every metric of either report, with a regression flag beyond ``threshold`` (0.1: 10 %)."""
    out = []
    for metric, read, higher_is_better in METRICS:
        now, then = read(current), read(baseline)
        for key in sorted(now.keys() | then.keys()):
            a, b = then.get(key), now.get(key)
            regression = a is not None and b is not None and _regressed(metric, a, b, higher_is_better, threshold)
            out.append(Delta(metric, key, a, b, higher_is_better, regression))
    return out
