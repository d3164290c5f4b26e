"""The 'before' of the compute child, for `make bench-compute-child` only: the algorithm in the worker's own process.

The A/B script copies this into a scratch worktree as ttg/bench_inprocess.py and points ttg/worker.py at it; it is
never imported by TTG itself. Same interface as ttg.compute.ComputeProcess as the worker uses it; with no measured
time per chunk the worker sends batches of one, two in flight: the pipeline the worker had before the child.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from ttg import algorithms
from ttg.compute import MAX_BATCH
from ttg.sweep import SweepSpec

__all__ = ["MAX_BATCH", "InProcess"]


class InProcess:
    def __init__(self, algorithm: str, cost_us: float = 0.0, grid: Sequence[str] = (), slot_values: int = 0) -> None:
        self._fn = algorithms.load(algorithm)
        self._sweep = SweepSpec.from_axes(tuple(grid)) if grid else None
        self._cost_us = cost_us
        self._done: deque[np.ndarray] = deque()
        self.chunk_s: float | None = None
        self.capacity = 2

    def start(self, timeout_s: float | None = None) -> None:
        pass

    def submit(self, start: int, stop: int) -> None:
        self._done.append(algorithms.evaluate(self._fn, start, stop, self._cost_us, self._sweep))

    def flush(self) -> None:
        pass

    def result(self) -> np.ndarray:
        return self._done.popleft()

    def evaluate(self, start: int, stop: int) -> np.ndarray:
        self.submit(start, stop)
        return self.result()

    def close(self) -> None:
        self._done.clear()
