"""The Chaos Toolkit extension without a whole experiment: discovery, validation, errors, and the rollback's clean-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from chaoslib.exceptions import ActivityFailed

import ttg
from ttg.chaos import actions, probes, session

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
CHAOS = Path(sys.executable).parent / "chaos"


@pytest.fixture(autouse=True)
def _clean_session() -> object:
    yield
    session.reset()


@pytest.mark.skipif(not CHAOS.exists(), reason="no chaos CLI next to this Python (make install puts it in .venv/bin)")
def test_chaos_discover_ttg_finds_every_action_and_probe(tmp_path: Path) -> None:
    # Through the real CLI: chaoslib imports the distribution's first top-level package, which is `fixtures`.
    out = tmp_path / "discovery.json"
    cmd = [str(CHAOS), "--no-log-file", "discover", "--no-install", "--no-system-info", "--discovery-path", str(out), "ttg"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and out.exists(), proc.stdout + proc.stderr
    names = {(a["type"], a["name"]) for a in json.loads(out.read_text())["activities"]}
    assert {("action", n) for n in actions.__all__} <= names
    assert {("probe", n) for n in probes.__all__} <= names
    assert ttg.discover(discover_system=False)["activities"]


@pytest.mark.skipif(not CHAOS.exists(), reason="no chaos CLI next to this Python (make install puts it in .venv/bin)")
@pytest.mark.parametrize("path", sorted(EXPERIMENTS.rglob("*.json")), ids=lambda p: str(p.relative_to(EXPERIMENTS).with_suffix("")))
def test_chaos_validate_accepts_the_experiment(path: Path) -> None:
    proc = subprocess.run([str(CHAOS), "--no-log-file", "validate", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "experiment looks valid" in (proc.stdout + proc.stderr).lower()


def test_every_experiment_reads_its_settings_from_ttg_environment_variables() -> None:
    for path in EXPERIMENTS.rglob("*.json"):
        conf = json.loads(path.read_text())["configuration"]
        assert {"backend", "params", "chunk", "workers", "fault_at_percent"} <= set(conf), path.name
        assert all(v["type"] == "env" and v["key"].startswith("TTG_") and "default" in v for v in conf.values()), path.name


def test_activities_fail_with_what_to_change() -> None:
    with pytest.raises(ActivityFailed, match="put a start_sweep action before inject_fault"):
        actions.inject_fault(kind="kill-worker")
    with pytest.raises(ActivityFailed, match="put a start_sweep action in the method"):
        actions.wait_for_sweep()
    with pytest.raises(ActivityFailed, match=r"could not start the sweep: .*backend"):
        actions.start_sweep(backend="kafka")
    assert probes.verdict_holds(None) is False and probes.faults_took_effect(None) is False


def test_a_wrong_fault_is_refused_before_it_touches_the_sweep(tmp_path: Path) -> None:
    actions.start_sweep(params=40_000, chunk=1_000, workers=2, cost_us=50, configuration={"out": str(tmp_path)})
    with pytest.raises(ActivityFailed, match="unknown fault kind 'kill-everything'"):
        actions.inject_fault(kind="kill-everything")
    with pytest.raises(ActivityFailed, match="would stop all 2 worker"):
        actions.inject_fault(kind="kill-worker", target="all")
    with pytest.raises(ActivityFailed, match="names worker 'w7'"):
        actions.inject_fault(kind="partition-broker", target="w7", duration_s=1)
    with pytest.raises(ActivityFailed, match="pass faults='poison-chunk@P%' to start_sweep"):
        actions.inject_fault(kind="poison-chunk")
    assert actions.wait_for_sweep()["lost"] == 0


def test_the_rollback_heals_an_active_fault_and_stops_workers_and_broker(tmp_path: Path) -> None:
    live = session.start_sweep(session.run_config({"params": 400_000, "chunk": 1_000, "workers": 2, "cost_us": 50, "out": str(tmp_path)}))
    rec = actions.inject_fault(kind="pause-broker", at_percent=0, duration_s=600)  # far longer than the test
    assert live.server is not None and live.server.state() == "T" and rec["evidence"] == ""
    pid = live.server.pid
    assert pid is not None
    stopped = actions.stop_sweep()
    assert stopped == {"stopped": live.run_id}
    assert live.runtime.alive() == []
    assert live.faults.records[0].healed_s is not None  # resumed before anything was stopped
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the broker is gone, not left frozen
    assert actions.stop_sweep() == {"stopped": None}  # safe to run twice


def test_kubernetes_activities_say_why_they_cannot_run_without_a_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ttg.chaos import kubernetes as k8s_chaos

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ActivityFailed, match="no cluster to talk to"):
        k8s_chaos.start_kubernetes_sweep(run_id="x", configuration={"kube_context": None})
    with pytest.raises(ActivityFailed, match="put start_kubernetes_sweep first"):
        k8s_chaos.wait_for_progress(percent=30)
    assert k8s_chaos.pod_faults_took_effect() == {"phase": "baseline", "faults": []}
    assert k8s_chaos.progress_stalled() == {"phase": "baseline", "faults": []}


@pytest.mark.parametrize(
    ("kind", "code", "done", "proves"),
    [
        ("kill-pod", 137, 40, True),  # SIGKILLed through exec, mid-sweep
        ("kill-pod", 137, 200, False),  # after the last chunk: proves nothing
        ("kill-pod", 0, 40, False),  # it exited 0: the run had ended, no kill reached it
        ("kill-pod", None, 40, False),  # never ended
        ("kill-pod", 143, 40, False),  # drained: a SIGTERM, not the SIGKILL the experiment claims
        ("terminate-pod", 143, 40, True),  # drained on SIGTERM mid-sweep
        ("terminate-pod", 137, 40, False),  # SIGKILLed after its grace: not a drain
    ],
)
def test_a_pod_fault_proves_itself_only_by_its_exit_status_mid_sweep(kind: str, code: int | None, done: int, proves: bool) -> None:
    from ttg.chaos import kubernetes as k8s_chaos

    inj = k8s_chaos.Injection(kind, "ttg-workers-r1-abcde", 0.0, done, 200)
    evidence = k8s_chaos.pod_fault_evidence(inj, code)
    assert bool(evidence) is proves, evidence
    if proves:
        assert f"injected at {done}/200 chunks" in evidence and str(code) in evidence


class _Pods:
    def __init__(self, codes: dict[str, int | None]) -> None:
        self.codes = codes

    def exit_codes(self) -> dict[str, int | None]:
        return self.codes


def test_the_pod_fault_probe_reads_the_pods_container_status(monkeypatch: pytest.MonkeyPatch) -> None:
    from ttg.chaos import kubernetes as k8s_chaos

    sweep = k8s_chaos._Sweep(cluster=None, cfg=None, run_id="r1")  # type: ignore[arg-type]  # no cluster is used here
    sweep.runtime = _Pods({"w-a": 137, "w-b": None})  # type: ignore[assignment]
    sweep.add_line("progress 80/200 chunks, 1,200 params/s, 10.0 s")
    sweep.inject("kill-pod", "w-a")
    k8s_chaos._state["sweep"] = sweep
    try:
        assert probes.faults_took_effect(k8s_chaos.pod_faults_took_effect(), kinds=["kill-pod"]) is True
        sweep.runtime.codes["w-a"] = 0  # type: ignore[attr-defined]
        monkeypatch.setattr(k8s_chaos.time, "sleep", lambda s: None)
        value = k8s_chaos.pod_faults_took_effect()
        assert probes.faults_took_effect(value, kinds=["kill-pod"]) is False
        assert value["faults"][0]["note"] == "pod w-a ended with 0 (after the run ended), injected at 80/200 chunks"
    finally:
        k8s_chaos._state.clear()


def test_a_stall_after_the_cut_is_the_kubernetes_partitions_evidence() -> None:
    from ttg.chaos import kubernetes as k8s_chaos

    assert k8s_chaos.longest_stall_s([(0.0, 10), (1.0, 20), (2.0, 20), (3.0, 20), (4.0, 30)]) == 2.0  # stood still 1 s to 3 s
    assert k8s_chaos.longest_stall_s([(0.0, 10), (1.0, 20), (13.0, 60)]) == 11.0  # cut off, the coordinator printed nothing
    assert k8s_chaos.longest_stall_s([(0.0, 10), (1.0, 10), (5.0, 20), (6.0, 30)], since=4.5) == 0.0  # only after the cut counts
    sweep = k8s_chaos._Sweep(cluster=None, cfg=None, run_id="r1")  # type: ignore[arg-type]
    sweep.progress_at = [(0.0, 10), (1.0, 20)]
    sweep.chunks_total = 100
    inj = sweep.inject("partition-broker", "ttg-redis-r1-0", "3")
    sweep.progress_at += [(inj.at + 0.5, 20), (inj.at + 9.0, 20), (inj.at + 10.0, 40)]
    sweep.refused_at = [inj.at + 1.0, inj.at + 3.0, inj.at - 5.0]
    k8s_chaos._state["sweep"] = sweep
    try:
        value = k8s_chaos.progress_stalled(min_s=4)
        assert probes.faults_took_effect(value, kinds=["partition-broker"]) is True
        assert "refused 2 time(s)" in value["faults"][0]["evidence"] and "cut at 20/100 chunks" in value["faults"][0]["evidence"]
        assert probes.faults_took_effect(k8s_chaos.progress_stalled(min_s=12), kinds=["partition-broker"]) is False  # too short a stall
        late = k8s_chaos.Injection("partition-broker", "p", 0.0, 100, 100)
        assert k8s_chaos.partition_evidence(late, 30.0, 5, 4.0) == ""  # after the last chunk: proves nothing
    finally:
        k8s_chaos._state.clear()
