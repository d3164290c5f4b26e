"""Fault scenarios beyond the one-fault matrix (scenarios/test_matrix.py), on both backends: static mode detects its
loss, an algorithm that raises is retried then dead-lettered, two workers killed at once, one worker cut off alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fixtures.algos import POISON
from ttg.testing import assert_verdict
from ttg.testing.plugin import BrokerHandle

Runner = Callable[..., Any]


def fired(rec: Any) -> bool:
    return bool(rec.faults) and rec.faults[0].at_s is not None


def test_static_mode_with_a_killed_worker_detects_the_loss(broker: BrokerHandle, run_sweep: Runner) -> None:
    rec = run_sweep(broker, params=100_000, chunk=1_000, workers=2, cost_us=20, mode="static", faults=["kill-worker@30%"])
    assert fired(rec), rec.faults
    assert_verdict(rec, ok=False, lost=lambda n: n > 0, dead_lettered=0)


def test_a_poison_chunk_is_retried_then_dead_lettered_and_reported(broker: BrokerHandle, run_sweep: Runner) -> None:
    rec = run_sweep(broker, params=5_000, chunk=500, workers=2, algorithm="fixtures.algos:poison", max_deliveries=2, reclaim_after_s=1.0)
    poisoned = POISON // 500
    assert_verdict(rec, ok=False, lost=0, dead_lettered=1, dead_letter_ids=[poisoned], chunks_completed=9)
    assert f"cannot evaluate parameter {POISON}" in rec.verdict.dead_letter_reasons[0]


def test_two_of_four_workers_killed_at_once_lose_nothing(broker: BrokerHandle, run_sweep: Runner) -> None:
    rec = run_sweep(broker, params=100_000, chunk=1_000, workers=4, cost_us=30, reclaim_after_s=1.5, faults=["kill-worker@30%/2"])
    killed = rec.faults[0].target.split(",")
    assert len(killed) == 2 and all(rec.worker_exit_codes[w] == -9 for w in killed), rec.faults
    assert_verdict(rec, ok=True, lost=0, checksum_ok=True, chunks_completed=100)


def test_one_worker_cut_off_while_the_others_carry_on(broker: BrokerHandle, run_sweep: Runner) -> None:
    rec = run_sweep(broker, params=100_000, chunk=1_000, workers=3, cost_us=30, faults=["partition-broker@20%:3s/w1"])
    cut = rec.faults[0]
    assert cut.target == "w1<->broker" and cut.evidence, rec.faults
    during = [done for t, done in rec.timeline if cut.at_s <= t <= (cut.healed_s or 0.0)]
    assert during and during[-1] > during[0], "the workers outside the partition should have kept completing chunks"
    assert_verdict(rec, ok=True, lost=0, checksum_ok=True, chunks_completed=100)
