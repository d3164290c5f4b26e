"""Median ratio to Pool per variant from the JSON lines of an A/B run (scripts/compute-child-ab/run, scripts/ab/run).

Usage: summary.py FILE [--labels A_LABEL B_LABEL]  (default labels: the compute child's A/B)."""

import json
import statistics
import sys
from collections import defaultdict

labels = ("in the worker (A)", "in the compute child (B)")
if len(sys.argv) == 5 and sys.argv[2] == "--labels":
    labels = (sys.argv[3], sys.argv[4])
ratios: dict[tuple[float, int, str], list[float]] = defaultdict(list)
with open(sys.argv[1]) as f:
    for line in f:
        d = json.loads(line)
        for ttg_s, pool_s in zip(d["ttg_rounds_s"], d["pool_rounds_s"], strict=True):
            ratios[(d["cost_us"], d["chunk"], d["variant"])].append(pool_s / ttg_s)
print(f"| cost µs | chunk | {labels[0]} | {labels[1]} | change | rounds |")
print("|---|---|---|---|---|---|")
for cost, chunk in sorted({(c, k) for c, k, _ in ratios}):
    a, b = ratios[(cost, chunk, "A")], ratios[(cost, chunk, "B")]
    if a and b:
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"| {cost:g} | {chunk:,} | {ma:.3f} | {mb:.3f} | {100 * (mb / ma - 1):+.1f} % | {len(a)} + {len(b)} |")
