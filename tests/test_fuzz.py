"""``ttg chaos fuzz``: schedules are reproducible from their seed and never stop every worker; real runs replay exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ttg.chaos.fuzz import draw_schedule
from ttg.config import load_run_config
from ttg.errors import ConfigError
from ttg.faults import COORDINATOR_FAULTS, FUZZ_FAULTS, WORKER_FAULTS, parse_fault, targets_count


def test_a_schedule_is_a_function_of_its_seed_and_always_leaves_a_worker() -> None:
    seen_kinds = set()
    for seed in range(500):
        schedule = draw_schedule(seed, workers=3)
        assert schedule == draw_schedule(seed, workers=3)
        assert 1 <= len(schedule) <= 3
        stopped = sum(targets_count(f.target, 3) or 1 for f in schedule if f.kind in WORKER_FAULTS)
        assert stopped <= 2, schedule
        assert sum(f.kind in ("kill-broker", "pause-broker") for f in schedule) <= 1, schedule  # soak seed 3026
        if any(f.kind in WORKER_FAULTS for f in schedule):  # soak seed 1045: a partition of w1 after w1 was killed
            assert all(f.target in ("all", "one") for f in schedule if f.kind in ("partition-broker", "latency")), schedule
        if any(f.kind in COORDINATOR_FAULTS for f in schedule):  # its successor may find the sweep done: no other fault
            assert all(f.kind in (*COORDINATOR_FAULTS, "poison-chunk") for f in schedule), schedule
            assert sum(f.kind in COORDINATOR_FAULTS for f in schedule) == 1, schedule
        for f in schedule:
            assert parse_fault(str(f)) == f  # every drawn fault is one a user could type
        resumable = {"broker_url": "redis://127.0.0.1:6399/0"} if any(f.kind in COORDINATOR_FAULTS for f in schedule) else {}
        load_run_config({"workers": 3, "faults": schedule, **resumable}, env={})  # and one ttg run accepts
        seen_kinds |= {f.kind for f in schedule}
    assert seen_kinds == set(FUZZ_FAULTS)
    assert draw_schedule(1, workers=3) != draw_schedule(2, workers=3)


def _fuzz(tmp_path: Path, *args: str) -> tuple[int, list[dict[str, object]], str]:
    cmd = [sys.executable, "-m", "ttg", "chaos", "fuzz", "--params", "60000", "--chunk", "1000", "--cost-us", "30", "--out", str(tmp_path), "--json", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return proc.returncode, json.loads(proc.stdout or "[]"), proc.stderr


def test_fuzz_runs_real_sweeps_and_a_seed_replays_its_schedule(tmp_path: Path) -> None:
    rc, rows, stderr = _fuzz(tmp_path, "--runs", "2", "--seed", "11")
    assert rc == 0, stderr
    assert [r["seed"] for r in rows] == [11, 12]
    assert all(r["ok"] and r["lost"] == 0 and r["run_id"] for r in rows), rows
    assert "ttg chaos fuzz: 2 runs on redis, 2 ok" in stderr
    rc, replay, stderr = _fuzz(tmp_path, "--runs", "1", "--seed", "12")
    assert rc == 0, stderr
    assert replay[0]["faults"] == rows[1]["faults"]
    table = json.loads((tmp_path / "fuzz-redis-seed11-runs2.json").read_text())
    assert [r["seed"] for r in table["rows"]] == [11, 12] and table["rows"][1]["faults"] == rows[1]["faults"]
    from ttg.report.render import make_report

    make_report(tmp_path, tmp_path / "report", ("md",), "fuzz")
    md = (tmp_path / "report" / "report.md").read_text()
    fuzz_section = md.split("## Fuzz", 1)[1].split("## Milestone parity", 1)[0]
    assert all(" ".join(r["faults"]) in fuzz_section for r in rows)  # the report shows the table, row by row
    for r in rows + replay:  # each run's record holds the faults the row names, injected or explained
        record = json.loads((tmp_path / str(r["run_id"]) / "record.json").read_text())
        assert sorted(f["kind"] for f in record["faults"]) == sorted(str(x).split("@")[0] for x in r["faults"])


def test_the_soak_summary_counts_every_run_and_splits_recovery_by_fault_kind() -> None:
    from ttg.chaos.fuzz import FuzzRow, summarise

    rows = [
        FuzzRow(1, ["kill-worker@30%/one", "junk-messages@50%"], recovery=[("kill-worker", 0.5)], wall_s=2.0),
        FuzzRow(2, ["kill-worker@40%/one", "pause-broker@20%:1s"], recovery=[("kill-worker", 1.5), ("pause-broker", None)], wall_s=3.0),
        FuzzRow(3, ["poison-chunk@50%"], dead_lettered=1, expected_dead=1, wall_s=1.0),
        FuzzRow(4, ["latency@10%:1s"], lost=2, recovery=[("latency", 0.2)], wall_s=1.0),
        FuzzRow(5, ["pause-broker@10%:1s"], not_injected=["pause-broker: not injected: no evidence"], wall_s=1.0),
    ]
    s = summarise(rows)
    assert (s["runs"], s["ok"], s["failed_seeds"], s["lost"], s["not_injected"]) == (5, 3, [4, 5], 2, 1)
    assert (s["dead_lettered"], s["expected_dead"], s["wall_s"]) == (1, 1, 8.0)
    assert s["faults_drawn"] == {"junk-messages": 1, "kill-worker": 2, "latency": 1, "pause-broker": 2, "poison-chunk": 1}
    assert s["recovery"]["kill-worker"] == {"faults": 2, "not_recovered": 0, "p50_s": 1.0, "p95_s": 1.5, "max_s": 1.5}
    assert s["recovery"]["pause-broker"] == {"faults": 1, "not_recovered": 1, "p50_s": None, "p95_s": None, "max_s": None}


@pytest.mark.parametrize("text", ["junk-messages@10%/0", "forged-task@10%/x", "junk-messages@10%:2s", "forged-task@10%/10001"])
def test_message_faults_take_a_message_count_and_no_duration(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_fault(text)


def test_a_coordinator_fault_row_is_judged_on_its_successors_verdict(tmp_path: Path) -> None:
    # Seed 9 draws kill-coordinator@33% with a poison at 19%: the first `ttg run` SIGKILLs itself, the fuzzer resumes
    # the run, and the row is the successor's verdict: nothing lost, the poison dead-lettered once.
    assert [str(f) for f in draw_schedule(9, workers=3)] == ["kill-coordinator@33%", "poison-chunk@19%"]
    rc, rows, stderr = _fuzz(tmp_path, "--runs", "1", "--seed", "9")
    assert rc == 0, stderr
    (row,) = rows
    assert row["ok"] and row["lost"] == 0 and row["dead_lettered"] == row["expected_dead"] == 1, row
    assert [kind for kind, _ in row["recovery"]] == ["kill-coordinator"] and row["recovery"][0][1] is not None, row
    record = json.loads((tmp_path / str(row["run_id"]) / "record.json").read_text())
    assert record["resumed_at_chunks"] and 0 < record["resumed_at_chunks"] < 60, record["resumed_at_chunks"]  # 33% of 60 chunks, or a batch more
    assert record["verdict"]["mismatches"] == 0  # the checksum covers the dead chunk too: compare value by value


@pytest.mark.parametrize(
    ("faults", "url", "says"),
    [
        (["kill-coordinator@40%"], None, "a private broker dies with its coordinator; pass --broker-url"),
        (["kill-coordinator@40%", "terminate-coordinator@60%"], "redis://127.0.0.1:6399/0", "one coordinator fault per run"),
    ],
)
def test_a_coordinator_fault_needs_a_broker_that_outlives_it_and_comes_once(faults: list[str], url: str | None, says: str) -> None:
    given = {"faults": tuple(parse_fault(f) for f in faults), **({"broker_url": url} if url else {})}
    with pytest.raises(ConfigError, match=says):
        load_run_config(given, env={})
    with pytest.raises(ConfigError, match="takes no /TARGET"):
        parse_fault("kill-coordinator@40%/w1")
