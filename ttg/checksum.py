"""An order-independent checksum over (parameter, result) pairs.

Each pair is mixed into 64 bits (splitmix64 over the index and the result's bit
pattern) and the mixes are summed modulo 2**64, so chunks may arrive in any
order, and a missing, duplicated or altered value changes the sum.
"""

from __future__ import annotations

import numpy as np

MASK = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def pair_sum(indices: np.ndarray, values: np.ndarray) -> int:
    """Sum of the mixes of ``(indices[i], values[i])``, as an int modulo 2**64."""
    h = indices.astype(np.uint64) * _GOLDEN
    h ^= np.ascontiguousarray(values, dtype="<f8").view(np.uint64)
    h ^= h >> np.uint64(30)
    h *= _M1
    h ^= h >> np.uint64(27)
    h *= _M2
    h ^= h >> np.uint64(31)
    return int(h.sum(dtype=np.uint64))


def fmt(value: int | None) -> str | None:
    return None if value is None else f"{value & MASK:016x}"
