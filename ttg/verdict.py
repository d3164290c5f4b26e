"""The verdict: did every parameter come back exactly once, and correct?

A value, not a print: :func:`judge` returns a :class:`Verdict`, and
:meth:`Verdict.raise_for_failure` raises with the first missing chunk ids.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from ttg import algorithms, checksum
from ttg.broker import DeadLetter
from ttg.compute import ComputeProcess
from ttg.config import Verify
from ttg.errors import VerdictFailed
from ttg.ledger import Ledger

_BLOCK = 1 << 20  # verify in blocks so memory stays flat on a 10M sweep


def checksum_words(checksum_ok: bool | None, mismatches: int | None, lost: int, dead_lettered: int) -> str:
    """The checksum's state in the one wording the CLI, the chaos probes and the reports all use."""
    if checksum_ok is None:
        return "not checked"
    if checksum_ok:
        return "ok"
    if not mismatches and (lost or dead_lettered):
        # Every value that came back matches the serial reference; the sum lacks the chunks that never came back.
        return f"values ok, {lost + dead_lettered} chunk(s) missing"
    return f"MISMATCH ({mismatches} values)"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    chunks_expected: int
    chunks_completed: int
    lost: int
    lost_chunk_ids: list[int]
    duplicates: int
    dead_lettered: int
    dead_letter_ids: list[int]
    checksum_expected: str | None
    checksum_actual: str | None
    checksum_ok: bool | None
    verify: str
    mismatches: int | None
    rejected_messages: int
    verify_s: float
    dead_letter_reasons: list[str] = field(default_factory=list)
    unverifiable_chunk_ids: list[int] = field(default_factory=list)  # the reference itself raised for these
    ignored_dead_letters: int = 0  # for a chunk that completed anyway, or a second one for a dead chunk: noise
    rejected_reasons: list[str] = field(default_factory=list)  # the first few, for whoever reads the record

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Verdict:
        """A verdict as :meth:`to_dict` gave it, in this or an earlier version (fields added since take their defaults)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})

    @property
    def checksum_text(self) -> str:
        return checksum_words(self.checksum_ok, self.mismatches, self.lost, self.dead_lettered)

    def problems(self) -> list[str]:
        out = []
        if self.lost:
            ids = ", ".join(map(str, self.lost_chunk_ids[:10])) + (" ..." if self.lost > 10 else "")
            out.append(f"{self.lost} chunk(s) lost: {ids}")
        if self.dead_lettered:
            out.append(f"{self.dead_lettered} chunk(s) dead-lettered: {', '.join(map(str, self.dead_letter_ids[:10]))}")
        unchecked = [c for c in self.unverifiable_chunk_ids if c not in self.dead_letter_ids and c not in self.lost_chunk_ids]
        if unchecked:
            out.append(f"{len(unchecked)} completed chunk(s) could not be verified, the reference raised: {', '.join(map(str, unchecked[:10]))}")
        if self.checksum_ok is False:
            out.append(f"checksum {self.checksum_actual} != expected {self.checksum_expected}: {self.checksum_text}")
        return out

    def raise_for_failure(self) -> None:
        if not self.ok:
            raise VerdictFailed("sweep failed: " + "; ".join(self.problems()))


class _Reference:
    """The serial reference. The demo's closed form runs here; a user algorithm runs in a compute child, never in the
    coordinator, which holds the broker connection and the run's lease (a GIL-bound or crashing algorithm must not
    starve or kill them). A child that crashes fails that block; the next call starts a new one."""

    def __init__(self, algorithm: str, grid: Sequence[str]) -> None:
        self.demo = algorithm in algorithms.BUILT_IN  # the demo's values: its closed form
        self.child = None if self.demo else ComputeProcess(algorithm, 0.0, grid)

    def range(self, start: int, stop: int) -> np.ndarray:
        if self.child is None:
            return algorithms.demo_reference(np.arange(start, stop))
        return self.child.evaluate(start, stop)

    def at(self, indices: np.ndarray) -> np.ndarray:
        if self.child is None:
            return algorithms.demo_reference(indices)
        return self.child.evaluate_indices(indices)

    def close(self) -> None:
        if self.child is not None:
            self.child.close()


def _differs(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.count_nonzero(~((a == b) | (np.isnan(a) & np.isnan(b)))))


def _reference_blocks(ledger: Ledger, reference: _Reference, unverifiable: list[int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(indices, reference) in blocks; where the reference raises, chunk by chunk, skipping the chunks that raise."""
    plan = ledger.plan
    per_block = max(1, _BLOCK // plan.chunk_size)
    for first in range(0, plan.chunks, per_block):
        ids = range(first, min(first + per_block, plan.chunks))
        lo, hi = plan.chunk(ids[0]).start, plan.chunk(ids[-1]).stop
        try:
            ref = reference.range(lo, hi)
        except Exception:  # the user's algorithm may raise (a poison chunk); narrow down to the chunks that do
            pass
        else:
            yield np.arange(lo, hi), ref
            continue
        for c in ids:
            chunk = plan.chunk(c)
            try:
                ref = reference.range(chunk.start, chunk.stop)
            except Exception:
                unverifiable.append(c)
                continue
            yield np.arange(chunk.start, chunk.stop), ref


def _verify_full(ledger: Ledger, reference: _Reference, unverifiable: list[int]) -> tuple[int, int, int]:
    expected, actual, mismatches = 0, 0, 0
    for idx, ref in _reference_blocks(ledger, reference, unverifiable):
        got = np.asarray(ledger.values[idx[0] : idx[-1] + 1])
        done = ledger.seen[idx // ledger.plan.chunk_size]
        expected = (expected + checksum.pair_sum(idx, ref)) & checksum.MASK
        actual = (actual + checksum.pair_sum(idx[done], got[done])) & checksum.MASK
        mismatches += _differs(got[done], ref[done])
    return expected, actual, mismatches


def _verify_sample(ledger: Ledger, reference: _Reference, size: int, seed: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(seed)
    idx = np.unique(rng.integers(0, ledger.plan.params, size=min(size, ledger.plan.params)))
    idx = idx[ledger.seen[idx // ledger.plan.chunk_size]]  # what never came back is lost or dead, not a mismatch
    ref = reference.at(idx)
    got = np.asarray(ledger.values[idx])
    return checksum.pair_sum(idx, ref), checksum.pair_sum(idx, got), _differs(got, ref)


def judge(
    ledger: Ledger,
    dead: list[DeadLetter],
    *,
    verify: Verify,
    algorithm: str,
    seed: int = 0,
    grid: Sequence[str] = (),
    rejected: Sequence[DeadLetter] = (),
) -> Verdict:
    """Compare what came back with the plan and, as asked, with a reference.

    ``dead``: the broker's dead letters, folded into the ledger's chunk states (only a task of the
    plan counts as a chunk's death); ``rejected``: messages the workers refused as not of the plan.
    """
    t0 = time.perf_counter()
    ledger.note_dead_letters(dead)
    dead_ids = [int(i) for i in np.flatnonzero(ledger.dead)]
    lost_ids = [int(i) for i in np.flatnonzero(~ledger.seen & ~ledger.dead)]
    exp: int | None
    act: int | None
    mism: int | None
    unverifiable: list[int] = []
    reference = _Reference(algorithm, grid)
    try:
        if verify.kind == "full":
            exp, act, mism = _verify_full(ledger, reference, unverifiable)
        elif verify.kind == "sample":
            exp, act, mism = _verify_sample(ledger, reference, verify.sample, seed)
        else:
            exp, act, mism = None, None, None
    finally:
        reference.close()
    checksum_ok = None if exp is None else (exp == act and mism == 0)
    # A completed chunk whose reference raised was never checked: not ok, however the checksums compare.
    unchecked = [c for c in unverifiable if ledger.seen[c]]
    ok = not lost_ids and not dead_ids and checksum_ok is not False and not unchecked
    return Verdict(
        ok=ok,
        chunks_expected=ledger.plan.chunks,
        chunks_completed=ledger.completed,
        lost=len(lost_ids),
        lost_chunk_ids=lost_ids,
        duplicates=ledger.duplicates,
        dead_lettered=len(dead_ids),
        dead_letter_ids=dead_ids,
        checksum_expected=checksum.fmt(exp),
        checksum_actual=checksum.fmt(act),
        checksum_ok=checksum_ok,
        verify=str(verify),
        mismatches=mism,
        rejected_messages=ledger.rejected + ledger.dead_rejected + len(rejected),
        verify_s=round(time.perf_counter() - t0, 4),
        dead_letter_reasons=[ledger.dead_reasons[c] for c in dead_ids[:20]],
        unverifiable_chunk_ids=unverifiable,
        ignored_dead_letters=ledger.dead_noise,
        rejected_reasons=([r.reason for r in rejected] + ledger.rejected_reasons)[:20],
    )
