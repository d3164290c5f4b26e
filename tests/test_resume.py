"""A coordinator SIGKILLed mid-sweep, then ``ttg run --resume``: the run completes from the ledger it left, losing nothing.

This is what lets the Kubernetes coordinator Job replace a disrupted coordinator pod.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ttg.config import backend_for_url
from ttg.testing.plugin import BrokerHandle


def _coordinator(broker: BrokerHandle, out: Path, run_id: str, *extra: str) -> subprocess.Popen[str]:
    args = ["run", "--backend", backend_for_url(broker.url), "--broker-url", broker.url, "--run-id", run_id, "--out", str(out)]
    args += ["--params", "300000", "--chunk", "1000", "--workers", "2", "--cost-us", "40", "--json", *extra]
    return subprocess.Popen([sys.executable, "-m", "ttg", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_coordinator_is_resumed_and_the_run_loses_nothing(broker: BrokerHandle, tmp_path: Path) -> None:
    run_id = f"resume{int(time.time() * 1000) % 10**8}"
    first = _coordinator(broker, tmp_path, run_id)
    seen = tmp_path / run_id / "seen.npy"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill it once it has recorded (and flushed) part of the sweep
        if seen.exists() and 60 <= int(np.load(seen, mmap_mode="r").sum()) < 250:
            break
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    recorded = int(np.load(seen).sum())
    assert 0 < recorded < 300, "the kill should land mid-sweep"

    second = _coordinator(broker, tmp_path, run_id, "--resume")
    stdout, stderr = second.communicate(timeout=180)
    assert second.returncode == 0, stderr
    record = json.loads(stdout)
    assert record["resumed_at_chunks"] is not None and record["resumed_at_chunks"] >= recorded - 5, record["resumed_at_chunks"]
    v = record["verdict"]
    assert v["lost"] == 0 and v["chunks_completed"] == 300 and v["checksum_ok"] is True, v


def test_resume_needs_a_run_id_and_the_broker_that_holds_the_run(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "ttg", "run", "--resume", "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "pass --run-id and --broker-url" in proc.stderr


@pytest.mark.parametrize("kind", ["kill-coordinator", "terminate-coordinator"])
def test_a_coordinator_fault_ends_ttg_run_and_resume_finishes_the_run(broker: BrokerHandle, tmp_path: Path, kind: str) -> None:
    # The fault the fuzzer draws, through the CLI a user would type: `ttg run` signals itself at 40 % (SIGKILL exits
    # -9 with no clean-up at all; SIGTERM unwinds like Ctrl-C and exits 143), its run stays on the broker, --resume finishes it.
    run_id = f"cf{int(time.time() * 1000) % 10**8}"
    first = _coordinator(broker, tmp_path, run_id, "--fault", f"{kind}@40%", "--fault", "poison-chunk@80%")
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == (-signal.SIGKILL if kind == "kill-coordinator" else 143), stderr
    assert not stdout and f"finish run {run_id} with ttg run --resume" in stderr
    recorded = int(np.load(tmp_path / run_id / "seen.npy").sum())
    assert 120 <= recorded < 300, recorded  # 40 % of 300 chunks, and the fault fired mid-sweep

    second = _coordinator(broker, tmp_path, run_id, "--resume", "--fault", "poison-chunk@80%")
    stdout, stderr = second.communicate(timeout=180)
    assert second.returncode == 1, stderr  # the poisoned chunk is dead-lettered, so the verdict is a failure, by design
    v = json.loads(stdout)["verdict"]
    # The checksum covers the whole sweep, dead chunk included: every recorded value is compared instead.
    assert (v["lost"], v["chunks_completed"], v["dead_lettered"], v["mismatches"]) == (0, 299, 1, 0), v
