"""The one settings codec (ttg.argv): what a coordinator tells its workers, locally or as pods, is what they parse.

Two hand-written serialisers once drifted: a poison-chunk fault accepted on Kubernetes never reached the worker pods,
and --prefetch, --log-level, --seed and --timeout were dropped there. The round trip below runs over generated
configurations, through the real ``ttg worker`` and ``ttg run`` option parsers.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ttg.argv import coordinator_argv, parse_coordinator_argv, parse_worker_argv, poisoned_chunks, worker_argv
from ttg.config import RunConfig, SweepSettings, Verify, check_fault
from ttg.errors import ConfigError
from ttg.faults import FaultSpec
from ttg.k8s.manifests import ManifestSettings, documents
from ttg.run import worker_launches

finite = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
axis = st.sampled_from(["x=0:1:5", "a=1,2,3", "b=-2.5:2.5:11", "name_2=0:10:3"])
sweeps = st.builds(
    SweepSettings,
    backend=st.sampled_from(["redis", "rabbitmq"]),
    algorithm=st.sampled_from(["demo", "tests.algos:grid_product"]),
    cost_us=finite,
    max_deliveries=st.integers(1, 100),
    reclaim_after_s=st.floats(min_value=0.1, max_value=3600, allow_nan=False),
    prefetch=st.none() | st.integers(1, 1000),
    log_format=st.sampled_from(["text", "json"]),
    log_level=st.sampled_from(["debug", "info", "warning", "error"]),
    grid=st.lists(axis, max_size=3, unique=True).map(tuple),
)
faults = st.lists(
    st.sampled_from(["poison-chunk@10%", "poison-chunk@50%/3", "kill-worker@30%/1", "pause-broker@20%:1.5s", "latency@40%:2s/all"]),
    max_size=3,
    unique=True,
).map(lambda fs: tuple(_fault(f) for f in fs))


def _fault(text: str) -> FaultSpec:
    from ttg.faults import parse_fault

    return parse_fault(text)


@st.composite
def configs(draw: st.DrawFn) -> RunConfig:
    """Valid run configurations: generated settings, through the same checks as the CLI's (invalid draws are skipped)."""
    sweep = draw(sweeps)
    params = draw(st.integers(1, 10**9))
    if sweep.grid:
        params = sweep.sweep_spec(params).params  # the axes decide the size
    cfg = RunConfig(
        sweep=sweep,
        params=params,
        chunk=draw(st.integers(1, min(params, 10**6))),
        workers=draw(st.integers(1, 64)),
        mode=draw(st.sampled_from(["queue", "static"])),
        faults=draw(faults),
        out=draw(st.sampled_from([Path("runs"), Path("/results"), Path("out dir/x")])),
        verify=draw(st.sampled_from([Verify("full"), Verify("off"), Verify("sample", 1000)])),
        persistence=draw(st.booleans()),
        timeout_s=draw(st.floats(min_value=1, max_value=1e6, allow_nan=False)),
        seed=draw(st.integers(0, 2**31)),
        runtime=draw(st.sampled_from(["local", "kubernetes"])),
        namespace=draw(st.sampled_from(["ttg", "team-a"])),
        image=draw(st.sampled_from(["", "registry.example/ttg:1.2"])),
    )
    try:
        for f in cfg.faults:
            check_fault(cfg, f)
    except ConfigError:
        assume(False)
    return cfg


@settings(max_examples=150, deadline=None)
@given(cfg=configs(), static=st.none() | st.sampled_from(["0/4", "3/4"]), parent=st.none() | st.integers(2, 10**6))
def test_a_worker_parses_back_every_setting_its_coordinator_encoded(cfg: RunConfig, static: str | None, parent: int | None) -> None:
    args = parse_worker_argv(worker_argv(cfg, "run-1", "w3", static=static, coordinator_pid=parent, successor_wait_s=12.5))
    assert args.sweep == replace(cfg.sweep, broker_url=None)
    assert (args.run_id, args.worker_id, args.params, args.chunk) == ("run-1", "w3", cfg.params, cfg.chunk)
    assert args.poisoned == poisoned_chunks(cfg)
    assert args.static == (None if static is None else tuple(int(x) for x in static.split("/")))
    assert (args.coordinator_pid, args.successor_wait_s) == (parent, 12.5 if parent is not None else 30.0)


@settings(max_examples=150, deadline=None)
@given(cfg=configs(), resume=st.booleans())
def test_a_coordinator_parses_back_the_config_it_was_started_with(cfg: RunConfig, resume: bool) -> None:
    parsed, run_id, resumed = parse_coordinator_argv(coordinator_argv(cfg, "run-1", resume=resume))
    assert parsed == cfg  # broker_url is None in these configs: it never travels in argv
    assert (run_id, resumed) == ("run-1", resume)


def test_no_broker_url_or_password_travels_in_argv() -> None:
    secret = "s3cret-pw"
    cfg = RunConfig(SweepSettings(broker_url=f"redis://:{secret}@127.0.0.1:6379/0"), params=100, chunk=10, workers=2)
    for launch in worker_launches(cfg, cfg.sweep.broker_url or "", "run-1"):
        assert not any(secret in a for a in launch.args)
        assert secret in launch.env["TTG_BROKER_URL"]
    assert not any(secret in a for a in coordinator_argv(cfg, "run-1"))


def _pod_args(docs: list[dict[str, object]], component: str) -> list[str]:
    for d in docs:
        labels = d.get("metadata", {}).get("labels", {})  # type: ignore[union-attr]
        if d.get("kind") == "Job" and labels.get("app.kubernetes.io/component") == component:  # type: ignore[union-attr]
            return list(d["spec"]["template"]["spec"]["containers"][0]["args"])  # type: ignore[index]
    raise AssertionError(f"no {component} Job")


def test_a_poison_chunk_run_renders_its_poison_onto_the_kubernetes_workers() -> None:
    # The drift this codec ended: Kubernetes accepted --fault poison-chunk@50% and its workers never heard of it.
    cfg = RunConfig(
        SweepSettings(backend="rabbitmq", prefetch=5, log_level="debug"),
        params=1000,
        chunk=10,
        workers=3,
        faults=(_fault("poison-chunk@50%/2"),),
        timeout_s=900,
        seed=7,
    )
    docs = documents(ManifestSettings("run-1", cfg, namespace="team-a", image="registry.example/ttg:1.2"))
    worker = parse_worker_argv(_pod_args(docs, "worker")[1:])
    assert worker.poisoned == {50, 51}
    assert worker.sweep.prefetch == 5 and worker.sweep.log_level == "debug" and worker.sweep.log_format == "json"
    coordinator, run_id, resume = parse_coordinator_argv(_pod_args(docs, "coordinator")[1:-1])  # [run ... --json]
    assert (run_id, resume) == ("run-1", True)
    assert coordinator.faults == cfg.faults and coordinator.timeout_s == 900 and coordinator.seed == 7
    assert (coordinator.namespace, coordinator.image, coordinator.runtime) == ("team-a", "registry.example/ttg:1.2", "kubernetes")
    # Pods start beside a broker that may still be starting: both sides wait for it; the kill-pod fault finds the pid.
    assert coordinator.broker_wait_s == 300.0 and worker.broker_wait_s == 300.0 and worker.pid_file == "/tmp/ttg-worker.pid"
    assert "--in-cluster" in _pod_args(docs, "coordinator")  # the coordinator is told where it runs, not left to guess
