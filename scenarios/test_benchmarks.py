"""Throughput against ``multiprocessing.Pool``, measured side by side in the same test (pytest-benchmark).

``pytest scenarios --benchmark-only --benchmark-save=baseline`` keeps the JSON under
``reports/benchmarks/``. Speed is recorded, never asserted (a shared host is noisy). The sweep is
``--ttg-bench-params`` parameters (2M in ``make test``; 10M, the README's workload, in ``make report``) with no work per
parameter, so the ratio measures TTG's own overhead; the session's summary shows each ratio to Pool.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

import pytest

from ttg.bench import time_pool
from ttg.config import backend_for_url, load_run_config
from ttg.run import execute
from ttg.testing.plugin import BrokerHandle, record_pool_ratio
from ttg.testing.summary import PoolRatio

ROUNDS = 3


# make test measures chunk 10,000 (its summary shows the ratio); make scenarios and make report both sizes.
@pytest.mark.parametrize("chunk", [10_000, pytest.param(1_000, marks=pytest.mark.matrix)], ids=["chunk10k", "chunk1k"])
def test_throughput_against_multiprocessing_pool(broker: BrokerHandle, chunk: int, benchmark: Any, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    params = request.config.getoption("ttg_bench_params")
    cfg = load_run_config(
        {"backend": backend_for_url(broker.url), "broker_url": broker.url, "params": params, "chunk": chunk, "workers": 2, "verify": "off", "out": tmp_path},
        env={},
    )
    records = []
    benchmark.pedantic(lambda: records.append(execute(cfg)), rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert all(r.verdict.lost == 0 and r.verdict.chunks_completed == r.chunks for r in records), [r.verdict for r in records]
    ttg_s = statistics.median(r.wall_s for r in records)  # sweep time, workers already connected (as for Pool)
    pool_s = statistics.median(time_pool(dataclasses.replace(cfg), ROUNDS))
    benchmark.extra_info.update(
        backend=cfg.sweep.backend,
        params=cfg.params,
        chunk=cfg.chunk,
        cost_us=cfg.sweep.cost_us,
        workers=cfg.workers,
        ttg_sweep_s=ttg_s,
        pool_s=pool_s,
        params_per_s=cfg.params / ttg_s,
        pool_params_per_s=cfg.params / pool_s,
        ratio_to_pool=pool_s / ttg_s,
    )
    record_pool_ratio(request, PoolRatio(request.node.nodeid, cfg.sweep.backend, cfg.params, cfg.chunk, cfg.sweep.cost_us, ttg_s, pool_s))
