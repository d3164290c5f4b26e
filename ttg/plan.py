"""The chunk plan: how a sweep is cut into chunks with stable ids.

Chunk ``c`` covers parameters ``[c*K, min((c+1)*K, N))``. Ids depend only on N and K,
so a rerun of the same sweep produces the same ids, and a result can be checked
against the plan without any other state.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ttg.errors import ConfigError


@dataclass(frozen=True)
class Chunk:
    id: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class ChunkPlan:
    params: int
    chunk_size: int

    def __post_init__(self) -> None:
        if self.params < 1 or self.chunk_size < 1:
            raise ConfigError(f"params and chunk size must be positive (got params={self.params}, chunk={self.chunk_size})")

    @property
    def chunks(self) -> int:
        return -(-self.params // self.chunk_size)

    def chunk(self, chunk_id: int) -> Chunk:
        if not 0 <= chunk_id < self.chunks:
            raise ConfigError(f"chunk id must be in 0..{self.chunks - 1} (got {chunk_id})")
        start = chunk_id * self.chunk_size
        return Chunk(chunk_id, start, min(start + self.chunk_size, self.params))

    def __iter__(self) -> Iterator[Chunk]:
        return (self.chunk(i) for i in range(self.chunks))

    def __len__(self) -> int:
        return self.chunks

    def static_assignment(self, workers: int, index: int) -> range:
        """Chunk ids given to worker ``index`` of ``workers`` in static mode (contiguous blocks)."""
        if not 0 <= index < workers:
            raise ConfigError(f"worker index must be in 0..{workers - 1} (got {index})")
        per, extra = divmod(self.chunks, workers)
        lo = index * per + min(index, extra)
        return range(lo, lo + per + (1 if index < extra else 0))
