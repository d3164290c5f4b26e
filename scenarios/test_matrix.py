"""The scale × fault matrix on both backends: ``pytest scenarios -k "rabbitmq and large and kill"``.

Every cell is one real sweep with one fault, sized so that the fault lands mid-sweep: each scale carries a per-parameter
cost that makes a chunk last ~10-20 ms (small, medium) or leaves a 10M sweep at about a second of pure transport (large), and the cell
asserts that the fault fired with chunks done and chunks still to do. The scales are ``--ttg-scales`` (default small,
medium, large). ``make test`` runs the small and medium cells; the large (10M) ones carry the ``matrix`` mark
(``make scenarios``; ``make report`` runs the 10M worker kills).

A fault on the broker's process (kill, pause) hits a private broker of the cell's own; one on the path to the broker
(partition, latency) goes through the fault proxies to the session's broker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ttg import backends
from ttg.faults import KINDS, parse_fault
from ttg.record import FaultOutcome, RunRecord
from ttg.testing import Scale, assert_verdict
from ttg.testing.plugin import heavy_mark, selected_scales

# One fault per cell, at a progress point; a timed one heals after its duration, well before the sweep's end.
FAULTS = {
    "none": None,
    "kill-worker": "kill-worker@30%",
    "terminate-worker": "terminate-worker@30%",
    "kill-broker": "kill-broker@30%:1s",
    "pause-broker": "pause-broker@30%:1s",
    "partition-broker": "partition-broker@30%:1s",
    "latency": "latency@30%:1s",
    "poison": "poison-chunk@50%",
}
# How a worker stopped by each worker fault exits: SIGKILL gives it no say; SIGTERM before the end marker is 143.
WORKER_EXIT = {"kill-worker": -9, "terminate-worker": 143}
# A private RabbitMQ node takes seconds to start, and kill-broker starts it twice: make test runs RabbitMQ's
# pause-broker at medium only, and its kill-broker through tests/test_contract.py's broker kill; make scenarios runs all.
LEFT_TO_MAKE_SCENARIOS = {
    ("rabbitmq", "small", "kill-broker"),
    ("rabbitmq", "small", "pause-broker"),
    ("rabbitmq", "medium", "kill-broker"),
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The cells: every backend × the ``--ttg-scales`` scales × every fault, with ids like ``redis-small-kill-worker``."""
    if metafunc.definition.name != "test_matrix_cell":
        return
    cells = []
    for b in backends.NAMES:
        for size in selected_scales(metafunc.config):
            for name, fault in FAULTS.items():
                marks = heavy_mark(size) or ([pytest.mark.matrix] if (b, size.name, name) in LEFT_TO_MAKE_SCENARIOS else [])
                cells.append(pytest.param(b, size, fault, id=f"{b}-{size.name}-{name}", marks=marks))
    metafunc.parametrize(("backend", "size", "fault"), cells)


def _landed_mid_sweep(f: FaultOutcome, chunks: int) -> None:
    assert f.injected and 0 < f.at_chunks < chunks, f"the fault must fire with chunks done and chunks to do: {f}"


def test_matrix_cell(backend: str, size: Scale, fault: str | None, run_sweep: Callable[..., RunRecord], request: pytest.FixtureRequest) -> None:
    """Nothing lost, the result equal to the serial reference, and the fault's own evidence; a poisoned chunk is the
    only loss, dead-lettered and reported."""
    spec = parse_fault(fault) if fault else None
    on_own_broker = spec is not None and spec.info.family == "broker"
    target: Any = backend if on_own_broker else request.getfixturevalue(f"{backend}_broker")
    settings: dict[str, Any] = {"params": size.params, "chunk": size.chunk, "workers": 2, "cost_us": size.cost_us}
    if spec is not None:
        settings.update(faults=[fault], reclaim_after_s=1.5, max_deliveries=2)
    rec = run_sweep(target, **settings)

    if spec is None:
        assert_verdict(rec, ok=True, lost=0, duplicates=0, dead_lettered=0, checksum_ok=True, chunks_completed=size.chunks)
        return
    (outcome,) = rec.faults
    if spec.kind == "poison-chunk":  # in place from the start: the chunk it poisons is the one mid-plan
        poisoned = outcome.poisoned_chunk_ids
        assert poisoned == [size.chunks // 2] and outcome.evidence, outcome
        assert_verdict(rec, ok=False, lost=0, dead_lettered=1, dead_letter_ids=poisoned, chunks_completed=size.chunks - 1)
        return
    _landed_mid_sweep(outcome, size.chunks)
    if spec.kind in WORKER_EXIT:
        assert rec.worker_exit_codes[outcome.target] == WORKER_EXIT[spec.kind], (rec.worker_exit_codes, outcome)
    else:  # a timed fault: healed mid-sweep, with evidence that it happened, and chunks completed after the heal
        assert outcome.healed_s is not None and outcome.healed_s > outcome.at_s and outcome.evidence, outcome
    assert outcome.recovered_s is not None, f"{spec.kind}: no chunk completed after the fault: {outcome}"
    assert_verdict(rec, ok=True, lost=0, checksum_ok=True, dead_lettered=0, chunks_completed=size.chunks)


def test_the_matrix_covers_every_fault_kind_a_local_sweep_recovers_from() -> None:
    # A new fault kind of the worker, broker or proxy family must get its column here.
    kinds = {parse_fault(f).kind for f in FAULTS.values() if f}
    expected = {k.name for k in KINDS.values() if k.family in ("worker", "broker", "proxy") and k.fuzz}
    assert expected <= kinds, f"matrix lacks {sorted(expected - kinds)}"
