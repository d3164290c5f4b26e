"""The sweep specification: N parameters, indexed 0..N-1, optionally mapped onto named grid axes.

A grid ``{"alpha": [0.1, 0.2], "beta": [1, 2, 3]}`` has 6 points; index ``i`` maps to
``alpha[i // 3]``, ``beta[i % 3]`` (row-major, last axis fastest, like ``numpy.unravel_index``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ttg.errors import ConfigError


@dataclass(frozen=True)
class SweepSpec:
    params: int
    axes: tuple[tuple[str, tuple[float, ...]], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.params < 1:
            raise ConfigError(f"a sweep needs at least 1 parameter (got {self.params})")
        if self.axes:
            size = int(np.prod([len(values) for _, values in self.axes]))
            if size != self.params:
                raise ConfigError(f"grid axes hold {size:,} points but the sweep has {self.params:,} parameters")

    @classmethod
    def grid(cls, axes: Mapping[str, Sequence[float]]) -> SweepSpec:
        if not axes or any(len(v) == 0 for v in axes.values()):
            raise ConfigError("a grid needs at least one axis, and every axis at least one value")
        frozen = tuple((name, tuple(float(x) for x in values)) for name, values in axes.items())
        return cls(int(np.prod([len(v) for _, v in frozen])), frozen)

    def values(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Map parameter indices to their grid values, one array per axis."""
        if not self.axes:
            return {"index": indices}
        shape = tuple(len(v) for _, v in self.axes)
        coords = np.unravel_index(indices, shape)
        return {name: np.asarray(values)[c] for (name, values), c in zip(self.axes, coords, strict=True)}
