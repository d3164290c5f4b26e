"""The coordinator's ledger: every result received, de-duplicated by chunk id.

Per-parameter results go straight into a float64 ``.npy`` file mapped in memory,
so a 10M sweep never holds its results as Python objects. Checksums are the
verdict's business: they are computed after the sweep, timed apart from it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ttg.errors import MessageError
from ttg.messages import ResultMessage, decode_result
from ttg.plan import ChunkPlan

log = logging.getLogger(__name__)


class Ledger:
    def __init__(self, plan: ChunkPlan, run_id: str, path: Path | None = None) -> None:
        self.plan = plan
        self.run_id = run_id
        self.path = path
        if path is not None:
            self.values: np.ndarray = np.lib.format.open_memmap(path, mode="w+", dtype="<f8", shape=(plan.params,))
        else:
            self.values = np.empty(plan.params, dtype="<f8")
        self.values[:] = np.nan
        self.seen = np.zeros(plan.chunks, dtype=bool)
        self.completed = 0
        self.duplicates = 0
        self.rejected = 0
        self.redelivered_at: list[float] = []  # monotonic times of first results that needed more than one delivery
        self.last_result: dict[str, float] = {}  # worker id -> monotonic time of its latest result

    def add(self, raw: bytes) -> ResultMessage | None:
        """Record one encoded result; returns it when it was the chunk's first, None otherwise."""
        try:
            msg = decode_result(raw)
            self._check(msg)
        except MessageError as e:
            self.rejected += 1
            log.warning("result rejected: %s", e)
            return None
        if self.seen[msg.chunk_id]:
            self.duplicates += 1
            log.info("duplicate result dropped", extra={"chunk_id": msg.chunk_id, "worker_id": msg.worker_id})
            return None
        self.last_result[msg.worker_id] = time.monotonic()
        values = msg.array()
        self.values[msg.start : msg.stop] = values
        self.seen[msg.chunk_id] = True
        self.completed += 1
        if msg.deliveries > 1:
            self.redelivered_at.append(time.monotonic())
        return msg

    def _check(self, msg: ResultMessage) -> None:
        if msg.run_id != self.run_id:
            raise MessageError(f"result belongs to run {msg.run_id!r}, not {self.run_id!r}")
        if not 0 <= msg.chunk_id < self.plan.chunks:
            raise MessageError(f"result names chunk {msg.chunk_id}, outside the plan's 0..{self.plan.chunks - 1}")
        chunk = self.plan.chunk(msg.chunk_id)
        if (msg.start, msg.stop) != (chunk.start, chunk.stop):
            raise MessageError(f"result for chunk {msg.chunk_id} covers [{msg.start}, {msg.stop}), the plan says [{chunk.start}, {chunk.stop})")

    def flush(self) -> None:
        if isinstance(self.values, np.memmap):
            self.values.flush()
