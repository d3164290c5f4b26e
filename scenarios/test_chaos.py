"""Every Chaos Toolkit experiment in experiments/, run through chaoslib as ``chaos run`` runs it.

Each experiment must complete without deviating: zero lost chunks, the result
matching the serial reference, and evidence that its fault really happened. The
static-mode control must deviate. Journals go to ``--ttg-results DIR``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
HOLDING = ("kill-worker", "terminate-worker", "kill-broker", "pause-broker", "partition-broker", "latency", "poison-chunk")
# RabbitMQ's node takes ~6 s to start, so it runs the faults that stress it differently from Redis; all run on Redis.
# `make scenarios` runs every experiment on its backends. `make test` runs the chaos path (`chaos run`, the actions, the
# probes) on Redis for the experiments below; the faults of the others run there through `ttg run` as matrix cells, and
# RabbitMQ's broker kill through tests/test_contract.py.
ON_RABBITMQ = ("kill-worker", "kill-broker", "partition-broker")
IN_MAKE_TEST = ("kill-worker", "kill-broker", "partition-broker", "poison-chunk")  # on Redis
Journal = dict[str, Any]


def after(journal: Journal) -> dict[str, Any]:
    """The steady-state probes' outputs after the method, by probe name."""
    return {p["activity"]["name"]: p["output"] for p in journal["steady_states"]["after"]["probes"]}


def summary(journal: Journal) -> str:
    failed = [(r["activity"]["name"], r.get("exception")) for r in journal["run"] if r["status"] != "succeeded"]
    return json.dumps({"status": journal["status"], "deviated": journal["deviated"], "failed": failed, "after": journal["steady_states"].get("after")})[:3000]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "backend"),
    [pytest.param(n, "redis", id=f"{n}-redis", marks=[] if n in IN_MAKE_TEST else [pytest.mark.matrix]) for n in HOLDING]
    + [pytest.param(n, "rabbitmq", id=f"{n}-rabbitmq", marks=[pytest.mark.matrix]) for n in ON_RABBITMQ],
)
def test_the_experiment_holds_and_its_fault_took_effect(chaos_experiment: Callable[..., Journal], name: str, backend: str) -> None:
    journal = chaos_experiment(EXPERIMENTS / f"{name}.json", TTG_BACKEND=backend)
    assert journal["status"] == "completed" and journal["deviated"] is False, summary(journal)
    before = {p["activity"]["name"]: p["output"] for p in journal["steady_states"]["before"]["probes"]}
    assert before["sweep-verdict"]["phase"] == "baseline" and before["sweep-verdict"]["ok"]
    verdict, faults = after(journal)["sweep-verdict"], after(journal)["fault-took-effect"]["faults"]
    assert verdict["phase"] == "chaos" and verdict["backend"] == backend
    assert verdict["lost"] == 0 and verdict["mismatches"] == 0
    assert verdict["dead_lettered"] == (1 if name == "poison-chunk" else 0)
    assert [f["kind"] for f in faults] == [name], faults
    assert faults[0]["evidence"], faults
    assert [r["status"] for r in journal["rollbacks"]] == ["succeeded"]


@pytest.mark.slow
def test_static_mode_under_a_worker_kill_deviates_with_its_lost_chunks(chaos_experiment: Callable[..., Journal]) -> None:
    journal = chaos_experiment(EXPERIMENTS / "static-kill-worker.json", TTG_BACKEND="redis")
    assert journal["status"] == "completed" and journal["deviated"] is True, summary(journal)
    verdict = after(journal)["sweep-verdict"]
    assert verdict["mode"] == "static" and verdict["lost"] > 0 and verdict["lost_chunk_ids"]


def test_an_experiment_whose_fault_never_happens_cannot_pass(chaos_experiment: Callable[..., Journal], tmp_path: Path) -> None:
    experiment = json.loads((EXPERIMENTS / "kill-worker.json").read_text())
    experiment["method"] = [a for a in experiment["method"] if a["name"] != "inject-kill-worker"]
    path = tmp_path / "kill-worker-without-the-kill.json"
    path.write_text(json.dumps(experiment))
    journal = chaos_experiment(path, TTG_BACKEND="redis")
    assert journal["deviated"] is True, summary(journal)
    probes = {p["activity"]["name"]: p for p in journal["steady_states"]["after"]["probes"]}
    assert probes["sweep-verdict"]["tolerance_met"] is True  # the sweep itself was fine ...
    assert probes["fault-took-effect"]["tolerance_met"] is False  # ... but nothing proves a fault happened
