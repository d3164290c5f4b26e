"""Fault scenarios on both backends: a killed worker loses nothing, static mode detects its loss, a poison chunk is
dead-lettered, and a broker killed, frozen, cut off or slowed mid-sweep loses nothing (a kill or a freeze hits a private
broker of the run's own; a cut or a delay hits the path to the session's broker, through the fault proxies).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fixtures.algos import POISON
from ttg import backends
from ttg.faults import parse_fault
from ttg.testing import assert_verdict
from ttg.testing.plugin import BrokerHandle

Runner = Callable[..., Any]


def fired(rec: Any) -> bool:
    return bool(rec.faults) and rec.faults[0].at_s is not None


def test_a_worker_killed_mid_sweep_loses_nothing(broker: BrokerHandle, run_sweep: Runner) -> None:
    # 100 chunks of ~20 ms: the kill at 30% lands while both workers hold chunks.
    rec = run_sweep(broker, params=100_000, chunk=1_000, workers=2, cost_us=20, reclaim_after_s=1.5, faults=["kill-worker@30%"])
    assert fired(rec) and rec.worker_exit_codes[rec.faults[0].target] == -9, rec.faults
    assert_verdict(rec, ok=True, lost=0, checksum_ok=True, chunks_completed=100)


def test_static_mode_with_a_killed_worker_detects_the_loss(broker: BrokerHandle, run_sweep: Runner) -> None:
    rec = run_sweep(broker, params=100_000, chunk=1_000, workers=2, cost_us=20, mode="static", faults=["kill-worker@30%"])
    assert fired(rec), rec.faults
    assert_verdict(rec, ok=False, lost=lambda n: n > 0, dead_lettered=0)


def test_a_poison_chunk_is_retried_then_dead_lettered_and_reported(broker: BrokerHandle, run_sweep: Runner) -> None:
    rec = run_sweep(broker, params=5_000, chunk=500, workers=2, algorithm="fixtures.algos:poison", max_deliveries=2, reclaim_after_s=1.0)
    poisoned = POISON // 500
    assert_verdict(rec, ok=False, lost=0, dead_lettered=1, dead_letter_ids=[poisoned], chunks_completed=9)
    assert f"cannot evaluate parameter {POISON}" in rec.verdict.dead_letter_reasons[0]


BROKER_FAULTS = {
    "kill-broker": "kill-broker@30%:1s",
    "pause-broker": "pause-broker@30%:2s",
    "partition-broker": "partition-broker@30%:2s",
    "latency": "latency@30%:1s",
}
# RabbitMQ's kill-broker here is the same case as tests/test_contract.py's broker kill: make test runs that one.
_MATRIX_ONLY = {("rabbitmq", "kill-broker")}


@pytest.mark.parametrize(
    ("backend", "fault"),
    [
        pytest.param(b, f, id=f"{b}-{name}", marks=[pytest.mark.matrix] if (b, name) in _MATRIX_ONLY else [])
        for b in backends.NAMES
        for name, f in BROKER_FAULTS.items()
    ],
)
def test_a_broker_fault_mid_sweep_then_healed_loses_nothing(backend: str, fault: str, run_sweep: Runner, request: pytest.FixtureRequest) -> None:
    # 100 chunks of ~30 ms, with another worker kill after the broker comes back. A fault on the broker's process hits
    # the run's own private broker; one on the path to it (through the fault proxies) runs on the session's broker.
    on_path = parse_fault(fault).info.family == "proxy"
    target: BrokerHandle | str = request.getfixturevalue(f"{backend}_broker") if on_path else backend
    rec = run_sweep(target, params=100_000, chunk=1_000, workers=2, cost_us=30, faults=[fault, "kill-worker@70%"])
    broker_fault = next(f for f in rec.faults if f.kind == fault.split("@")[0])
    assert broker_fault.healed_s is not None and broker_fault.healed_s > broker_fault.at_s, rec.faults
    assert broker_fault.recovered_s is not None, rec.faults
    assert broker_fault.evidence, rec.faults  # stopped state, pids, traffic held or delayed: a run without chaos cannot pass
    assert_verdict(rec, ok=True, lost=0, checksum_ok=True, chunks_completed=100)


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


def test_the_poison_chunk_fault_is_dead_lettered_and_reported(broker: BrokerHandle, run_sweep: Runner) -> None:
    rec = run_sweep(broker, params=20_000, chunk=1_000, workers=2, max_deliveries=2, reclaim_after_s=1.0, faults=["poison-chunk@50%"])
    assert rec.faults[0].poisoned_chunk_ids == [10] and rec.faults[0].evidence == "1 of 1 poisoned chunk(s) dead-lettered", rec.faults
    assert_verdict(rec, ok=False, lost=0, dead_lettered=1, dead_letter_ids=[10], chunks_completed=19)
    assert "poisoned by the poison-chunk fault" in rec.verdict.dead_letter_reasons[0]
