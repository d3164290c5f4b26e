"""The sweep specification: N parameters, indexed 0..N-1, optionally mapped onto named grid axes.

A grid ``{"alpha": [0.1, 0.2], "beta": [1, 2, 3]}`` has 6 points; index ``i`` maps to
``alpha[i // 3]``, ``beta[i % 3]`` (row-major, last axis fastest, like ``numpy.unravel_index``).

On the command line an axis is ``NAME=v1,v2,...`` (listed values) or ``NAME=a:b:n``
(n evenly spaced values from a to b inclusive, as ``numpy.linspace``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ttg.errors import ConfigError

# An axis is held in memory as Python floats (~32 bytes each): a million values is ~32 MB. The product of the
# axes is the sweep's N, bounded as --params is.
MAX_AXIS_VALUES = 1_000_000
MAX_GRID_POINTS = 10**12

_AXIS_RE = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<values>.+)")


def parse_axis(text: str) -> tuple[str, tuple[float, ...]]:
    """``alpha=0.1,0.2`` or ``alpha=0:1:11`` -> ("alpha", values)."""
    m = _AXIS_RE.fullmatch(text.strip())
    if not m:
        raise ConfigError(f"grid axis must look like NAME=v1,v2,... or NAME=start:stop:count (got {text!r}); pass --grid")
    name, spec = m.group("name"), m.group("values")
    try:
        if ":" in spec:
            a, b, n = spec.split(":")
            count = int(n)
            if not 1 <= count <= MAX_AXIS_VALUES:
                raise ValueError(f"count must be between 1 and {MAX_AXIS_VALUES:,}")
            return name, tuple(float(x) for x in np.linspace(float(a), float(b), count))
        values = spec.split(",")
        if len(values) > MAX_AXIS_VALUES:
            raise ValueError(f"at most {MAX_AXIS_VALUES:,} values per axis")
        return name, tuple(float(x) for x in values)
    except ValueError as e:
        raise ConfigError(f"grid axis {name!r} has unreadable values {spec!r} ({e}); use v1,v2,... or start:stop:count") from None


@dataclass(frozen=True)
class SweepSpec:
    params: int
    axes: tuple[tuple[str, tuple[float, ...]], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.params < 1:
            raise ConfigError(f"a sweep needs at least 1 parameter (got {self.params})")
        if self.axes:
            size = math.prod(len(values) for _, values in self.axes)
            if size != self.params:
                raise ConfigError(f"grid axes hold {size:,} points but the sweep has {self.params:,} parameters")

    @classmethod
    def grid(cls, axes: Mapping[str, Sequence[float]]) -> SweepSpec:
        if not axes or any(len(v) == 0 for v in axes.values()):
            raise ConfigError("a grid needs at least one axis, and every axis at least one value")
        frozen = tuple((name, tuple(float(x) for x in values)) for name, values in axes.items())
        size = math.prod(len(v) for _, v in frozen)
        if size > MAX_GRID_POINTS:
            raise ConfigError(f"the grid axes hold {size:,} points, more than the {MAX_GRID_POINTS:,} a sweep may have; use fewer values")
        return cls(size, frozen)

    @classmethod
    def from_axes(cls, texts: Sequence[str], params: int | None = None) -> SweepSpec:
        """The sweep of ``--params`` (no axes) or of ``--grid`` axes (their product is N)."""
        if not texts:
            if params is None:
                raise ConfigError("a sweep needs --params or at least one --grid axis")
            return cls(params)
        axes = [parse_axis(t) for t in texts]
        names = [n for n, _ in axes]
        if len(set(names)) != len(names):
            raise ConfigError(f"grid axis names must be unique (got {', '.join(names)})")
        return cls.grid(dict(axes))

    def values(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Map parameter indices to their grid values, one array per axis."""
        if not self.axes:
            return {"index": indices}
        shape = tuple(len(v) for _, v in self.axes)
        coords = np.unravel_index(indices, shape)
        return {name: np.asarray(values)[c] for (name, values), c in zip(self.axes, coords, strict=True)}
