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

from ttg.errors import ConfigError, MessageError
from ttg.messages import ResultMessage, decode_result
from ttg.plan import ChunkPlan

log = logging.getLogger(__name__)


class ResumeError(ConfigError):
    """The run directory cannot be resumed (no ledger there, or one of another plan)."""


class Ledger:
    """``path``: ``results.npy``, with the chunks seen so far in ``seen.npy`` next to it, both memory-mapped, so a
    successor coordinator (``resume=True``) continues from what this one recorded, even if it was killed."""

    def __init__(self, plan: ChunkPlan, run_id: str, path: Path | None = None, resume: bool = False) -> None:
        self.plan = plan
        self.run_id = run_id
        self.path = path
        self.values: np.ndarray
        self.seen: np.ndarray
        if path is not None and resume:
            self.values = np.lib.format.open_memmap(path, mode="r+")
            self.seen = np.lib.format.open_memmap(path.with_name("seen.npy"), mode="r+")
            if self.values.shape != (plan.params,) or self.seen.shape != (plan.chunks,):
                raise ResumeError(f"{path.parent} holds a run of {self.values.shape[0]:,} parameters in {self.seen.shape[0]:,} chunks, not this plan's")
        elif path is not None:
            self.values = np.lib.format.open_memmap(path, mode="w+", dtype="<f8", shape=(plan.params,))
            self.values[:] = np.nan
            self.seen = np.lib.format.open_memmap(path.with_name("seen.npy"), mode="w+", dtype=bool, shape=(plan.chunks,))
        else:
            self.values = np.full(plan.params, np.nan, dtype="<f8")
            self.seen = np.zeros(plan.chunks, dtype=bool)
        self.completed = int(self.seen.sum())
        self.duplicates = 0
        self.rejected = 0
        self.redelivered_at: list[float] = []  # monotonic times of first results that needed more than one delivery
        self.last_result: dict[str, float] = {}  # worker id -> monotonic time of its latest result
        self.results_by_worker: dict[str, float] = {}  # worker id -> first results received from it

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
        self.results_by_worker[msg.worker_id] = self.results_by_worker.get(msg.worker_id, 0) + 1
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
        """Write the mapped pages out: values first, so a chunk marked seen on disk has its values there too."""
        for arr in (self.values, self.seen):
            if isinstance(arr, np.memmap):
                arr.flush()
