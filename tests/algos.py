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
