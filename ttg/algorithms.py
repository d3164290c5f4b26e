"""Algorithms: the function a sweep evaluates, on a numpy array of parameter indices.

An algorithm takes a 1-D int64 array of parameter indices and returns a float64
array of the same length. ``demo`` is built in, and ``sleep``: the demo's values, with ``--cost-us`` spent asleep
instead of spinning the CPU, so that a hundred workers on two cores load the broker and the coordinator as a hundred
machines would (``bench/scale``). Anything else is loaded from
``package.module:function``. A scalar function ``f(p) -> float`` is wrapped with
:func:`vectorize`::

    from ttg.algorithms import vectorize
    my_algorithm = vectorize(lambda p: p ** 0.5)   # then --algorithm mypkg.mod:my_algorithm

A sweep over named grid axes (``--grid alpha=0:1:101 --grid beta=1,2,3``) can hand
an algorithm the axis values instead of indices: decorate it with :func:`grid_algorithm`
and it receives a dict of equally long arrays, one per axis::

    @grid_algorithm
    def model(p: dict[str, np.ndarray]) -> np.ndarray:
        return p["alpha"] * p["beta"]
"""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable

import numpy as np

from ttg.errors import AlgorithmError, AlgorithmNotFound
from ttg.sweep import SweepSpec

Algorithm = Callable[[np.ndarray], np.ndarray]


def demo(params: np.ndarray) -> np.ndarray:
    """f(p) = ((7p + 13) mod 1000) + (p mod 100) / 100, deterministic and cheap."""
    p = params.astype(np.int64, copy=False)
    return ((7 * p + 13) % 1000).astype(np.float64) + (p % 100).astype(np.float64) / 100.0


def demo_reference(params: np.ndarray) -> np.ndarray:
    """The demo function computed another way (integer arithmetic in Python's own terms), for the verdict."""
    p = np.asarray(params, dtype=np.int64)
    whole = np.remainder(np.add(np.multiply(p, 7), 13), 1000)
    frac = np.remainder(p, 100) / np.float64(100.0)
    return whole.astype(np.float64) + frac


def sleep(params: np.ndarray) -> np.ndarray:
    """The demo's values; :func:`evaluate` sleeps its cost instead of burning it (no CPU: a simulated remote machine)."""
    return demo(params)


sleep.ttg_sleeps = True  # type: ignore[attr-defined]

# Built in, by name: both give the demo's values, which the verdict's closed form checks.
BUILT_IN: dict[str, Algorithm] = {"demo": demo, "sleep": sleep}


def vectorize(scalar: Callable[[int], float]) -> Algorithm:
    """Wrap a per-parameter Python function into an algorithm over an index array."""

    def run(params: np.ndarray) -> np.ndarray:
        return np.fromiter((scalar(int(p)) for p in params), dtype=np.float64, count=len(params))

    run.__name__ = getattr(scalar, "__name__", "vectorized")
    return run


def grid_algorithm(fn: Callable[[dict[str, np.ndarray]], np.ndarray]) -> Algorithm:
    """Mark an algorithm that takes grid axis values (a dict of arrays) instead of parameter indices."""
    fn.ttg_grid = True  # type: ignore[attr-defined]
    return fn  # type: ignore[return-value]


def call(fn: Algorithm, indices: np.ndarray, sweep: SweepSpec | None = None) -> np.ndarray:
    """Apply ``fn`` to parameter indices, or to their grid values for a :func:`grid_algorithm`."""
    if getattr(fn, "ttg_grid", False):
        if sweep is None or not sweep.axes:
            raise AlgorithmError(f"{getattr(fn, '__name__', 'algorithm')} takes grid values; define the sweep with --grid NAME=VALUES")
        return fn(sweep.values(indices))  # type: ignore[arg-type]
    return fn(indices)


def burn(cost_us: float, n: int) -> None:
    """Spin the CPU for ``cost_us`` microseconds per parameter (simulated work, not sleep)."""
    if cost_us <= 0:
        return
    deadline = time.perf_counter() + cost_us * n / 1e6
    while time.perf_counter() < deadline:
        pass


# Modules whose callables run commands, evaluate code or touch the process: never an algorithm over parameters.
_SYSTEM_MODULES = frozenset(
    {"builtins", "os", "posix", "nt", "subprocess", "shutil", "sys", "importlib", "pty", "socket", "signal", "ctypes", "runpy", "code", "pdb"}
)


def load(spec: str) -> Algorithm:
    """Resolve ``demo``, ``sleep`` or ``package.module:function`` to a callable."""
    if spec in BUILT_IN:
        return BUILT_IN[spec]
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AlgorithmNotFound(f"algorithm must be {' or '.join(repr(b) for b in BUILT_IN)} or 'package.module:function' (got {spec!r}); pass --algorithm")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise AlgorithmNotFound(f"cannot import algorithm module {module_name!r}: {e}; check --algorithm and PYTHONPATH") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise AlgorithmNotFound(f"{module_name} has no callable {attr!r}; check --algorithm")
    home = getattr(fn, "__module__", None) or module_name
    if inspect.isclass(fn) or home.partition(".")[0] in _SYSTEM_MODULES or module_name.partition(".")[0] in _SYSTEM_MODULES:
        # os:system, builtins:eval, subprocess:Popen ...: callable, but not an algorithm over an array of parameters.
        # A C extension's function (pybind11, Cython) is a built-in too, and a fine algorithm: judged by its module.
        kind = "class" if inspect.isclass(fn) else f"function of the system module {home}"
        raise AlgorithmNotFound(f"{spec} is a {kind}, not an algorithm; --algorithm takes a function that maps an array of parameters to an array of floats")
    return fn  # type: ignore[no-any-return]


def evaluate(fn: Algorithm, start: int, stop: int, cost_us: float = 0.0, sweep: SweepSpec | None = None) -> np.ndarray:
    """Run ``fn`` over parameters [start, stop) and check what it returned."""
    params = np.arange(start, stop, dtype=np.int64)
    out = call(fn, params, sweep)
    if getattr(fn, "ttg_sleeps", False):
        time.sleep(cost_us * (stop - start) / 1e6)
    else:
        burn(cost_us, stop - start)
    return checked(out, params)


def checked(out: object, params: np.ndarray) -> np.ndarray:
    """``out`` as float64, or AlgorithmError when it is not one value per parameter."""
    arr = np.asarray(out)
    if arr.shape != params.shape:
        raise AlgorithmError(f"algorithm returned shape {arr.shape} for {len(params)} parameters; it must return one float per parameter")
    return arr.astype("<f8", copy=False)
