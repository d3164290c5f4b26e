"""Algorithms used by tests; worker processes import them as ``algos:NAME``."""

from __future__ import annotations

import numpy as np

from ttg.algorithms import demo, grid_algorithm, vectorize

POISON = 1234


def poison(params: np.ndarray) -> np.ndarray:
    """The demo function, except that it raises for parameter 1234: its chunk can never complete."""
    if (params == POISON).any():
        raise ValueError(f"cannot evaluate parameter {POISON}")
    return demo(params)


square_root = vectorize(lambda p: float(p) ** 0.5)


def wrong_length(params: np.ndarray) -> np.ndarray:
    return np.zeros(len(params) + 1)


@grid_algorithm
def grid_product(p: dict[str, np.ndarray]) -> np.ndarray:
    return p["alpha"] * p["beta"]


def flaky_once(params: np.ndarray) -> np.ndarray:
    """Fails the first time any worker evaluates chunk 0 (a marker file remembers), then works: a transient error."""
    import os
    from pathlib import Path

    marker = Path(os.environ["TTG_TEST_FLAKY_MARKER"])
    if params[0] == 0 and not marker.exists():
        marker.touch()
        raise ConnectionError("transient: the database blinked")
    return demo(params)


def _gil_loop_size(seconds: float) -> int:
    """How many integers ``sum(range(n))`` adds in about ``seconds``: one C call that never releases the GIL."""
    import time

    n = 2_000_000
    t0 = time.perf_counter()
    sum(range(n))
    return max(n, int(n * seconds / max(time.perf_counter() - t0, 1e-6)))


_GIL_N: int | None = None


def holds_the_gil(params: np.ndarray) -> np.ndarray:
    """The demo function after ~2 s in one C call that holds the GIL (as a regex or a non-releasing extension would)."""
    global _GIL_N
    if _GIL_N is None:
        _GIL_N = _gil_loop_size(2.0)
    sum(range(_GIL_N))
    return demo(params)


def segfaults_on_poison(params: np.ndarray) -> np.ndarray:
    """The demo function, except that the process dies of SIGSEGV on parameter 1234 (a crashing C extension)."""
    if (params == POISON).any():
        import ctypes

        ctypes.string_at(0)
    return demo(params)
