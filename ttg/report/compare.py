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
        if x.fault_free:
            groups[f"{x.backend}, {x.scale} params, {x.cost_us:g} µs/param"].append(x.params_per_s)
    return {k: statistics.median(v) for k, v in groups.items()}


def _pool_ratio(r: Report) -> dict[str, float]:
    return {f"{b.get('name', '?')} ({scale_name(int(b.get('params', 0)))} params)": float(b["ratio_to_pool"]) for b in r.benchmarks if "ratio_to_pool" in b}


def _recovery(r: Report) -> dict[str, float]:
    return {f"{backend}, {kind}": statistics.median(v) for (backend, kind), v in r.recoveries().items()}


def _lost(r: Report) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for x in r.runs:
        out[x.backend] += x.unexpected_lost
    return dict(out)


@dataclass(frozen=True)
class Metric:
    name: str
    read: Callable[[Report], dict[str, float]]
    higher_is_better: bool
    any_worse: bool = False  # every step the wrong way is a regression (a lost chunk), whatever the threshold
    noise: float = 0.0  # a change smaller than this, in the metric's unit, is not a regression

    def regressed(self, baseline: float, current: float, threshold: float) -> bool:
        worse = baseline - current if self.higher_is_better else current - baseline
        if self.any_worse:
            return worse > 0
        return worse > abs(baseline) * threshold and worse > self.noise


METRICS = (
    Metric("throughput (params/s, median)", _throughput, higher_is_better=True),
    Metric("ratio to Pool", _pool_ratio, higher_is_better=True),
    Metric("recovery (s, median)", _recovery, higher_is_better=False, noise=RECOVERY_NOISE_S),
    Metric("chunks lost where none was expected", _lost, higher_is_better=False, any_worse=True),
)


def compare(current: Report, baseline: Report, threshold: float) -> list[Delta]:
    """Every metric of either report, with a regression flag beyond ``threshold`` (0.1: 10 %)."""
    out = []
    for m in METRICS:
        now, then = m.read(current), m.read(baseline)
        for key in sorted(now.keys() | then.keys()):
            a, b = then.get(key), now.get(key)
            regression = a is not None and b is not None and m.regressed(a, b, threshold)
            out.append(Delta(m.name, key, a, b, m.higher_is_better, regression))
    return out
