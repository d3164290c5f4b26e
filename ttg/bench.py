"""``ttg bench``: TTG against ``multiprocessing.Pool`` over the same chunks and algorithm, interleaved.

Both sides are timed with their workers already running: TTG from publishing
the plan to the last result (``wall_s`` of the run record), Pool from the first
``imap_unordered`` submission to the last result written into the output array.
Rounds alternate (TTG, Pool, TTG, Pool ...) so machine noise hits both alike;
medians are compared. Verification is off in the timed runs (it is reported
apart from the sweep's time anyway).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ttg import algorithms, backends
from ttg.config import RunConfig
from ttg.plan import ChunkPlan
from ttg.run import execute, private_or_given_broker

_pool_fn: algorithms.Algorithm | None = None  # each Pool process loads the algorithm once, as a TTG worker does


def _pool_init(algorithm: str) -> None:
    global _pool_fn
    # Forked from the CLI, which turns SIGTERM into KeyboardInterrupt; Pool.terminate() needs it to kill.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _pool_fn = algorithms.load(algorithm)


def _pool_chunk(job: tuple[float, int, int]) -> tuple[int, np.ndarray]:
    cost_us, start, stop = job
    assert _pool_fn is not None, "Pool initializer did not run"
    return start, algorithms.evaluate(_pool_fn, start, stop, cost_us)


def _pool_round(pool: Any, cfg: RunConfig, plan: ChunkPlan) -> float:
    out = np.empty(cfg.params, dtype="<f8")
    jobs = [(cfg.sweep.cost_us, c.start, c.stop) for c in plan]
    t0 = time.perf_counter()
    for start, values in pool.imap_unordered(_pool_chunk, jobs, chunksize=1):
        out[start : start + len(values)] = values
    return time.perf_counter() - t0


@contextmanager
def warm_pool(cfg: RunConfig) -> Iterator[Any]:
    """A forked ``multiprocessing.Pool`` of ``cfg.workers`` processes, started and warm, as TTG's workers are."""
    with multiprocessing.get_context("fork").Pool(cfg.workers, initializer=_pool_init, initargs=(cfg.sweep.algorithm,)) as pool:
        pool.map(abs, range(cfg.workers))
        yield pool


def time_pool(cfg: RunConfig, rounds: int) -> list[float]:
    """Seconds per round of a warm ``multiprocessing.Pool`` over ``cfg``'s chunks (for benchmarks measured elsewhere)."""
    plan = ChunkPlan(cfg.params, cfg.chunk)
    with warm_pool(cfg) as pool:
        return [_pool_round(pool, cfg, plan) for _ in range(rounds)]


def run_bench(cfg: RunConfig, *, repeat: int = 3, on_round: Callable[[str], None] | None = None) -> dict[str, Any]:
    plan = ChunkPlan(cfg.params, cfg.chunk)
    ttg_s: list[float] = []
    pool_s: list[float] = []
    records = []
    with tempfile.TemporaryDirectory(prefix="ttg-bench-") as tmp, private_or_given_broker(cfg) as access:
        url, broker_startup_s = access.url, access.startup_s
        run_cfg = dataclasses.replace(cfg, out=Path(tmp), sweep=dataclasses.replace(cfg.sweep, broker_url=url))
        count_round_trips = backends.for_url(url).round_trip_counter()  # None: the server keeps no such count
        with warm_pool(cfg) as pool:
            rt_before = count_round_trips(url) if count_round_trips else 0
            for i in range(repeat):
                rec = execute(run_cfg)
                records.append(rec)
                ttg_s.append(rec.wall_s)
                pool_s.append(_pool_round(pool, cfg, plan))
                if on_round:
                    on_round(f"round {i + 1}/{repeat}: TTG {ttg_s[-1]:.3f} s, Pool {pool_s[-1]:.3f} s, ratio {pool_s[-1] / ttg_s[-1]:.3f}")
            rt_after = count_round_trips(url) if count_round_trips else 0
        for r in records:
            if not r.verdict.ok:
                raise RuntimeError(f"benchmark run {r.run_id} failed its verdict: {r.verdict}")
    t_ttg, t_pool = statistics.median(ttg_s), statistics.median(pool_s)
    return {
        "backend": cfg.sweep.backend,
        "params": cfg.params,
        "chunk": cfg.chunk,
        "workers": cfg.workers,
        "cost_us": cfg.sweep.cost_us,
        "results_via": "file" if cfg.claim_check else "broker",
        "repeat": repeat,
        "ttg_s": t_ttg,
        "pool_s": t_pool,
        "ttg_rounds_s": ttg_s,
        "pool_rounds_s": pool_s,
        "ttg_params_per_s": cfg.params / t_ttg,
        "pool_params_per_s": cfg.params / t_pool,
        "ratio": t_pool / t_ttg,
        "ttg_total_s": statistics.median(r.total_s for r in records),
        "broker_startup_s": broker_startup_s,
        # Counted by the server where it keeps a count (Redis's command statistics); None where it does not (RabbitMQ).
        "round_trips_per_chunk": (rt_after - rt_before) / (plan.chunks * repeat) + 1 / 1000 if count_round_trips else None,
        "coordinator_peak_rss_mb": max(r.coordinator_peak_rss_mb for r in records),
    }
