"""The fixtures plugin itself: usable from another project, fleets that kill and respawn, scale options, verdict tables."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ttg.broker import open_broker
from ttg.brokers.redis.server import PrivateRedis
from ttg.ledger import Ledger
from ttg.plan import ChunkPlan
from ttg.producer import publish_plan
from ttg.testing import SCALES, assert_verdict
from ttg.testing.plugin import kind_unavailable_reason
from ttg.testing.scales import parse_scales


def test_another_project_gets_the_fixtures_through_the_entry_point(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text("def test_x(redis_broker):\n    assert redis_broker.url.startswith('redis://')\n")
    listed = subprocess.run([sys.executable, "-m", "pytest", "--fixtures", "-q", "-p", "no:cacheprovider"], cwd=tmp_path, capture_output=True, text=True)
    for name in ("redis_broker", "rabbitmq_broker", "broker", "fleet", "kind_cluster", "run_sweep"):
        assert name in listed.stdout, listed.stdout[-2000:]
    ran = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_x.py"], cwd=tmp_path, capture_output=True, text=True)
    assert ran.returncode == 0 and "1 passed" in ran.stdout, ran.stdout[-2000:]


def test_a_fleet_worker_killed_and_respawned_leaves_nothing_behind(redis_broker: PrivateRedis, fleet: Callable[..., Any]) -> None:
    plan = ChunkPlan(20_000, 500)
    f = fleet(redis_broker, workers=2, cost_us=50, params=plan.params, chunk=plan.chunk_size)  # 40 chunks of ~25 ms
    coord = open_broker(redis_broker.url, f.run_id)
    coord.declare(plan.chunks)
    publish_plan(coord, plan)
    ledger = Ledger(plan, f.run_id)
    killed = respawned = False
    deadline = time.monotonic() + 60
    while ledger.completed < plan.chunks and time.monotonic() < deadline:
        for raw in coord.read_results(100, 0.1):
            ledger.add(raw)
        if not killed and ledger.completed >= 10:
            f.kill("w0")
            killed = True
        elif killed and not respawned and ledger.completed >= 20:
            assert f.exit_codes()["w0"] == -9
            f.respawn("w0")
            respawned = True
    coord.end_run()
    assert killed and respawned and ledger.completed == plan.chunks
    assert "w0" in f.alive() or f.exit_codes()["w0"] == 0
    coord.delete_run()
    coord.close()


def test_scales_are_known_names_or_name_params_chunk() -> None:
    assert parse_scales("small,large") == [SCALES["small"], SCALES["large"]]
    (huge,) = parse_scales("huge=100_000_000:100000")
    assert (huge.name, huge.params, huge.chunk, huge.chunks, huge.cost_us, huge.heavy) == ("huge", 100_000_000, 100_000, 1000, 0.0, True)
    (slow,) = parse_scales("slow=5000:50:2.5")
    assert (slow.cost_us, slow.heavy) == (2.5, False)
    with pytest.raises(ValueError, match="unknown scale 'tiny'"):
        parse_scales("tiny")


def test_a_failed_scenario_shows_the_verdict_table(run_sweep: Callable[..., Any]) -> None:
    rec = run_sweep(params=1_000, chunk=100, workers=1)
    with pytest.raises(AssertionError) as info:
        assert_verdict(rec, ok=True, lost=lambda n: n > 0)
    text = str(info.value)
    assert "lost: expected" in text and "chunks_completed" in text and rec.run_id in text


def test_kind_scenarios_say_exactly_why_they_cannot_run_here() -> None:
    reason = kind_unavailable_reason()
    assert reason is None or reason.startswith(("no Docker", "no kind binary"))


def test_ttg_results_records_are_marked_with_their_scenarios_outcome(tmp_path: Path) -> None:
    (tmp_path / "test_y.py").write_text(
        "def test_pass(run_sweep):\n    run_sweep('redis', params=2000, chunk=500)\n\n"
        "def test_fail(run_sweep):\n    run_sweep('redis', params=2000, chunk=500)\n    assert False, 'the scenario expected something else'\n"
    )
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_y.py", "--ttg-results", str(results)]
    subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    docs = {json.loads(p.read_text())["scenario"].split("::")[1]: json.loads(p.read_text()) for p in results.glob("*.json")}
    assert docs["test_pass"]["scenario_passed"] is True and docs["test_fail"]["scenario_passed"] is False
    assert docs["test_fail"]["verdict"]["ok"] is True  # the sweep was fine; the report still lists it, as its scenario failed


def test_the_installed_plugin_is_ttg_testing_and_no_top_level_fixtures_package_is_shipped() -> None:
    # A top-level `fixtures` would collide with the PyPI package of that name (testtools, OpenStack).
    import importlib.metadata
    import tomllib

    from setuptools import find_packages

    root = Path(__file__).resolve().parent.parent
    (plugin,) = [ep for ep in importlib.metadata.entry_points(group="pytest11") if ep.value.startswith("ttg")]
    assert plugin.name == plugin.value == "ttg.testing.plugin"
    find = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    shipped = find_packages(str(root), include=find["include"])
    assert "ttg.testing" in shipped and all(p == "ttg" or p.startswith("ttg.") for p in shipped), shipped


def test_pytest_kinds_cluster_fixture_gets_the_binaries_on_path_the_pinned_image_and_our_cluster_name(
    pytestconfig: pytest.Config, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import types

    from pytest_kind import KindCluster

    from ttg.testing.plugin import KIND_CLUSTER, KIND_NODE_IMAGE, _configure_pytest_kind

    assert pytestconfig.option.cluster_name == KIND_CLUSTER and pytestconfig.option.kind_image == KIND_NODE_IMAGE  # this session's
    for name in ("kind", "kubectl"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    defaults = types.SimpleNamespace(kind_bin=None, kind_kubectl_bin=None, cluster_name="pytest-kind", kind_image=None)
    _configure_pytest_kind(types.SimpleNamespace(option=defaults))  # type: ignore[arg-type]
    assert defaults.kind_bin == str(tmp_path / "kind") and defaults.kind_kubectl_bin == str(tmp_path / "kubectl")
    assert defaults.cluster_name == KIND_CLUSTER and defaults.kind_image == KIND_NODE_IMAGE
    given = types.SimpleNamespace(kind_bin="/opt/kind", kind_kubectl_bin=None, cluster_name="mine", kind_image="kindest/node:v1.33.1")
    _configure_pytest_kind(types.SimpleNamespace(option=given))  # type: ignore[arg-type]
    assert (given.kind_bin, given.cluster_name, given.kind_image) == ("/opt/kind", "mine", "kindest/node:v1.33.1")  # the user's word wins
    monkeypatch.chdir(tmp_path)
    cluster = KindCluster(KIND_CLUSTER, kind_path=Path(defaults.kind_bin), kubectl_path=Path(defaults.kind_kubectl_bin))
    cluster.ensure_kind()  # a kind_path that exists: nothing is downloaded (no network here, so a download would fail)
    cluster.ensure_kubectl()


def test_a_session_of_scenarios_ends_with_what_each_proved_and_junit_carries_the_figures(tmp_path: Path) -> None:
    (tmp_path / "test_s.py").write_text(
        "import pytest\n"
        "from ttg.testing.plugin import record_pool_ratio\n"
        "from ttg.testing.summary import PoolRatio\n"
        "@pytest.mark.parametrize('backend', ['redis'])\n"
        "def test_kill(run_sweep, backend):\n"
        "    rec = run_sweep(backend, params=20_000, chunk=1_000, workers=2, cost_us=50, faults=['kill-worker@30%'])\n"
        "    assert rec.verdict.ok\n"
        "def test_static_loss(run_sweep):\n"
        "    rec = run_sweep('redis', params=20_000, chunk=1_000, workers=2, cost_us=50, mode='static', faults=['kill-worker@30%'])\n"
        "    assert not rec.verdict.ok\n"
        "def test_ratio(request):\n"
        "    record_pool_ratio(request, PoolRatio(request.node.nodeid, 'redis', 10_000_000, 10_000, 0.0, ttg_s=0.5, pool_s=0.45))\n"
    )
    junit = tmp_path / "junit.xml"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_s.py", f"--junitxml={junit}"]
    ran = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout[-3000:]
    out = ran.stdout
    assert "TTG sweeps: what 2 scenario run(s) proved" in out
    kill = next(line for line in out.splitlines() if "│ kill[redis] " in line)  # the cell's id, not taken for markup
    assert "│ redis " in kill and "kill-worker" in kill and " ok " in kill and "20K/1K" in kill
    static = next(line for line in out.splitlines() if "│ static_loss " in line)
    assert "FAILED (asserted)" in static  # the loss the test asserted: the scenario's point, not a failure
    assert "0 unexpected failed verdict(s); chunks lost where none was expected: 0" in out
    ratio = next(line for line in out.splitlines() if "│ ratio " in line)
    assert "10M/10K" in ratio and "0.500" in ratio and "0.450" in ratio and "│     0.90 │" in ratio, ratio
    import xml.etree.ElementTree as ET

    case = next(c for c in ET.parse(junit).getroot().iter("testcase") if c.get("name") == "test_kill[redis]")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["ttg_backend"] == "redis" and props["ttg_lost"] == "0" and props["ttg_faults"] == "kill-worker" and props["ttg_verdict"] == "ok"
    assert props["ttg_recovery"].startswith("kill-worker ") and int(props["ttg_params_per_s"]) > 0
    case = next(c for c in ET.parse(junit).getroot().iter("testcase") if c.get("name") == "test_ratio")
    assert {p.get("name"): p.get("value") for p in case.iter("property")}["ttg_ratio_to_pool"] == "0.9"


def test_an_experiment_without_chaostoolkit_skips_unless_required_then_fails(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text("import sys\nsys.modules['chaoslib'] = None  # as if chaostoolkit-lib were not installed\n")
    (tmp_path / "test_e.py").write_text("def test_e(chaos_experiment):\n    chaos_experiment('x.json')\n")
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "test_e.py"]
    skipped = subprocess.run(base, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout and "pip install 'ttg[chaos]'" in skipped.stdout, skipped.stdout[-2000:]
    required = subprocess.run([*base, "--ttg-require-chaos"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert required.returncode == 1 and "1 error" in required.stdout and "--ttg-require-chaos makes a skipped experiment a failure" in required.stdout


def _collected(*args: str) -> list[str]:
    argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "scenarios/test_matrix.py", *args]
    ran = subprocess.run(argv, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stdout[-2000:]
    return [line.split("[", 1)[1].rstrip("]") for line in ran.stdout.splitlines() if "::test_matrix_cell[" in line]


def test_the_matrix_is_selectable_by_backend_scale_and_fault_and_make_test_leaves_10m_out() -> None:
    assert _collected("-k", "rabbitmq and large and kill") == ["rabbitmq-large-kill-worker", "rabbitmq-large-kill-broker"]
    in_make_test = _collected("-m", "not matrix")
    assert "redis-small-kill-worker" in in_make_test and "rabbitmq-medium-partition-broker" in in_make_test
    assert not [c for c in in_make_test if "-large-" in c]
    assert len(_collected("--ttg-scales", "tiny=500:50:100")) == 16  # 2 backends x 8 faults at the user's own scale
