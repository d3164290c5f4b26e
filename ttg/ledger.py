"""The coordinator's ledger: every planned chunk id, in exactly one state.

A chunk is *completed* (its first result that matches the plan was recorded), *dead*
(a dead letter whose task matches the plan, and no result), or outstanding. Completed
and dead are disjoint sets of planned chunk ids: a later result for a dead chunk makes it
completed, a dead letter for a completed chunk is noise, counted apart. Anything that
names no planned chunk, or disagrees with the plan, is rejected and counted. The run is
over when every planned chunk id is completed or dead (:attr:`Ledger.accounted`), never
on a count of messages.

Per-parameter results go straight into a float64 ``.npy`` file mapped in memory,
so a 10M sweep never holds its results as Python objects. Checksums are the
verdict's business: they are computed after the sweep, timed apart from it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ttg.broker import DeadLetter
from ttg.claimcheck import Reader, ValuesUnreadable
from ttg.errors import ConfigError, MessageError
from ttg.messages import Outcome, ReceiptMessage, decode_outcome, decode_planned_task
from ttg.plan import ChunkPlan
from ttg.producer import task_message

log = logging.getLogger(__name__)
REOPENS = 3  # how often a chunk whose receipted values could not be read is computed again before it is given up on


class ResumeError(ConfigError):
    """The run directory cannot be resumed (no ledger there, or one of another plan)."""


class Ledger:
    """``path``: ``results.npy``, with the chunks seen so far in ``seen.npy`` next to it, both memory-mapped, so a
    successor coordinator (``resume=True``) continues from what this one recorded, even if it was killed.

    ``claims``: the reader of the run's staging directory, when its workers send receipts for values they put there
    (:mod:`ttg.claimcheck`); without it a receipt is rejected."""

    def __init__(
        self, plan: ChunkPlan, run_id: str, path: Path | None = None, resume: bool = False, claims: Reader | None = None, reopens: int = REOPENS
    ) -> None:
        self.plan = plan
        self.run_id = run_id
        self.path = path
        self.claims = claims
        self.reopens = reopens  # 0 in static mode: its workers read no queue, so a chunk put back would never be computed
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
        # Plain views for the per-result writes: slicing an np.memmap makes a memmap object each time (a per-chunk cost).
        self._values = self.values.view(np.ndarray)
        self.completed = int(self.seen.sum())
        self.dead = np.zeros(plan.chunks, dtype=bool)  # dead-lettered and never completed
        self.dead_open = 0  # == dead.sum(), kept as a counter
        self.dead_reasons: dict[int, str] = {}
        self.dead_noise = 0  # dead letters for a chunk that completed anyway, or a second one for a dead chunk
        self.dead_rejected = 0  # dead letters whose task is not one of the plan (junk, forged, another run)
        self.duplicates = 0
        self.rejected = 0
        self.rejected_reasons: list[str] = []  # the first few, for the verdict
        # Chunks whose worker's receipt was genuine but whose values could not be read: computed again (the collector
        # reopens them on the broker), and after REOPENS tries given up on, lost at once instead of at --timeout.
        self.to_reopen: list[int] = []
        self.reopened: dict[int, int] = {}
        self.abandoned: set[int] = set()

    @staticmethod
    def exists(path: Path) -> bool:
        """Whether ``path`` (``results.npy``) and its ``seen.npy`` hold a ledger a coordinator left."""
        return path.exists() and path.with_name("seen.npy").exists()

    def add(self, raw: bytes) -> Outcome | None:
        """Record one encoded result (or receipt); returns it when it was the chunk's first, None otherwise."""
        try:
            msg = decode_outcome(raw)
            self._check(msg)
            if self.seen[msg.chunk_id]:  # before a receipt's values are read: a duplicate costs no I/O
                self.duplicates += 1
                log.info("duplicate result dropped", extra={"chunk_id": msg.chunk_id, "worker_id": msg.worker_id})
                return None
            if isinstance(msg, ReceiptMessage):
                if self.claims is None:
                    raise MessageError(f"a receipt for chunk {msg.chunk_id}, but this run takes result values through the broker")
                self.claims.read_into(msg, self._values[msg.start : msg.stop])
            else:
                self._values[msg.start : msg.stop] = msg.array()
        except ValuesUnreadable as e:
            self._unreadable(msg.chunk_id, str(e))
            return None
        except MessageError as e:
            self._reject(str(e))
            log.warning("result rejected: %s", e)
            return None
        self.seen[msg.chunk_id] = True
        self.completed += 1
        if self.dead[msg.chunk_id]:  # a dead letter came first (a copy of the task); the result wins
            self.dead[msg.chunk_id] = False
            self.dead_reasons.pop(msg.chunk_id, None)
            self.dead_open -= 1
            self.dead_noise += 1
        return msg

    def _reject(self, why: str) -> None:
        self.rejected += 1
        if len(self.rejected_reasons) < 20:
            self.rejected_reasons.append(f"result rejected: {why}")

    def _unreadable(self, chunk_id: int, why: str) -> None:
        self._reject(why)
        if chunk_id in self.to_reopen:  # a second copy of the same receipt in one read: it is being put back already
            return
        tries = self.reopened.get(chunk_id, 0)
        if tries >= self.reopens:
            log.error("chunk %d given up on: %s (computed again %d times)", chunk_id, why, tries)
            self.abandoned.add(chunk_id)
        else:
            log.warning("%s; computing chunk %d again", why, chunk_id)
            self.reopened[chunk_id] = tries + 1
            self.to_reopen.append(chunk_id)

    def take_reopens(self) -> list[tuple[int, bytes]]:
        """The (chunk id, task) pairs to put back in the queue, once each."""
        tasks = [(c, task_message(self.run_id, self.plan.chunk(c))) for c in self.to_reopen if not self.seen[c]]
        self.to_reopen = []
        return tasks

    def not_reopened(self, chunk_id: int) -> None:
        """The broker put no task back for ``chunk_id`` (a second unreadable copy of a receipt whose chunk is queued
        again already): that try does not count towards giving the chunk up."""
        if self.reopened.get(chunk_id, 0) > 0:
            self.reopened[chunk_id] -= 1

    @property
    def accounted(self) -> int:
        """Planned chunks that are completed, dead, or given up on: the run is over when this reaches ``plan.chunks``."""
        return self.completed + self.dead_open + sum(1 for c in self.abandoned if not self.seen[c] and not self.dead[c])

    def note_dead_letters(self, letters: list[DeadLetter]) -> None:
        """Fold the broker's dead letters (all of them, as read now) into the chunk states; idempotent.

        A dead letter counts as its chunk's death only if its task body is a task of this run whose
        range is the plan's for that chunk id, and the chunk has not completed.
        """
        self.dead[:] = False
        self.dead_reasons = {}
        self.dead_noise = self.dead_rejected = 0
        for letter in letters:
            try:
                task = decode_planned_task(letter.body, self.run_id, self.plan)
                if letter.chunk_id is not None and letter.chunk_id != task.chunk_id:
                    raise MessageError(f"dead letter names chunk {letter.chunk_id}, its task is chunk {task.chunk_id}")
            except MessageError as e:
                self.dead_rejected += 1
                log.warning("dead letter ignored: %s", e)
                continue
            if self.seen[task.chunk_id] or self.dead[task.chunk_id]:
                self.dead_noise += 1
                continue
            self.dead[task.chunk_id] = True
            self.dead_reasons[task.chunk_id] = letter.reason
        self.dead_open = len(self.dead_reasons)

    def _check(self, msg: Outcome) -> None:
        if msg.run_id != self.run_id:
            raise MessageError(f"result belongs to run {msg.run_id!r}, not {self.run_id!r}")
        if not 0 <= msg.chunk_id < self.plan.chunks:
            raise MessageError(f"result names chunk {msg.chunk_id}, outside the plan's 0..{self.plan.chunks - 1}")
        chunk = self.plan.chunk(msg.chunk_id)
        if (msg.start, msg.stop) != (chunk.start, chunk.stop):
            raise MessageError(f"result for chunk {msg.chunk_id} covers [{msg.start}, {msg.stop}), the plan says [{chunk.start}, {chunk.stop})")

    def close(self) -> None:
        """Let go of the staging files the claim check read."""
        if self.claims is not None:
            self.claims.close()

    def flush(self) -> None:
        """Write the mapped pages out: values first, so a chunk marked seen on disk has its values there too."""
        for arr in (self.values, self.seen):
            if isinstance(arr, np.memmap):
                arr.flush()
