"""The one codec of settings across a process boundary: the argv of ``ttg worker`` and ``ttg run`` from typed
settings, and the typed settings back from an argv.

The local runtime (worker processes), the Kubernetes manifests (worker and coordinator pods) and the CLI all go
through here, so a setting travels to every kind of process or to none: two hand-written serialisers once drifted,
and a poison-chunk fault accepted on Kubernetes never reached its workers. The broker URL is never encoded: it may
hold a password, which any local user could read in ``ps``; it travels in ``TTG_BROKER_URL`` (a Secret on Kubernetes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ttg.config import RunConfig, SweepSettings, check_run_id, load_run_config, load_sweep_settings, passed_options
from ttg.errors import ConfigError
from ttg.plan import ChunkPlan


@dataclass(frozen=True)
class WorkerArgs:
    """What ``ttg worker`` is told: the run's shared settings (no broker URL), its plan, and this worker's part."""

    run_id: str
    sweep: SweepSettings
    params: int
    chunk: int
    worker_id: str | None = None  # None: HOST-PID, chosen by the worker
    static: tuple[int, int] | None = None  # static mode: (block index, blocks)
    poisoned: frozenset[int] = frozenset()  # the poison-chunk fault: these chunk ids fail on every delivery
    broker_wait_s: float = 60.0
    coordinator_pid: int | None = None
    successor_wait_s: float = 30.0
    pid_file: str | None = None  # where the worker writes its pid (Kubernetes: the kill-pod fault's target)
    staging: str | None = None  # the run's staging directory (claim check), when the worker shares the coordinator's disk

    @property
    def plan(self) -> ChunkPlan:
        return ChunkPlan(self.params, self.chunk)


def poisoned_chunks(cfg: RunConfig) -> frozenset[int]:
    """The chunk ids the run's poison-chunk faults poison: the workers are launched with them."""
    chunks = ChunkPlan(cfg.params, cfg.chunk).chunks
    return frozenset(c for f in cfg.faults if f.kind == "poison-chunk" for c in f.poisoned_chunks(chunks))


def sweep_argv(s: SweepSettings) -> list[str]:
    """The options of the settings every process of a run shares (``--backend`` ... ``--grid``), the URL excepted."""
    args = ["--backend", s.backend, "--algorithm", s.algorithm, "--cost-us", repr(s.cost_us)]
    args += ["--max-deliveries", str(s.max_deliveries), "--reclaim-after", repr(s.reclaim_after_s)]
    args += ["--prefetch", str(s.prefetch)] if s.prefetch is not None else []
    args += ["--log-format", s.log_format, "--log-level", s.log_level]
    return args + [part for axis in s.grid for part in ("--grid", axis)]


def worker_argv(
    cfg: RunConfig,
    run_id: str,
    worker_id: str,
    *,
    static: str | None = None,
    coordinator_pid: int | None = None,
    successor_wait_s: float = 30.0,
    broker_wait_s: float | None = None,
    pid_file: str | None = None,
    staging: str | None = None,
) -> list[str]:
    """The arguments of ``ttg worker`` (after the command name) for one worker of the run ``cfg`` describes.

    ``worker_id`` and ``static`` ("I/W") are text, so a manifest may pass placeholders such as ``$(POD_NAME)``."""
    args = ["--run-id", run_id, "--worker-id", worker_id, *sweep_argv(replace(cfg.sweep, broker_url=None))]
    args += ["--params", str(cfg.params), "--chunk", str(cfg.chunk)]  # the plan: every task is checked against it
    if poisoned := poisoned_chunks(cfg):
        args += ["--poison-chunks", ",".join(map(str, sorted(poisoned)))]
    if static is not None:
        args += ["--static", static]
    if coordinator_pid is not None:
        args += ["--coordinator-pid", str(coordinator_pid), "--successor-wait", repr(successor_wait_s)]
    args += ["--broker-wait", repr(broker_wait_s)] if broker_wait_s is not None else []
    args += ["--pid-file", pid_file] if pid_file is not None else []
    args += ["--staging", staging] if staging is not None else []
    return args


def coordinator_argv(cfg: RunConfig, run_id: str, *, resume: bool = False) -> list[str]:
    """The arguments of ``ttg run`` (after the command name) that run ``cfg`` again, as ``run_id``."""
    args = ["--run-id", run_id, *(["--resume"] if resume else []), *sweep_argv(replace(cfg.sweep, broker_url=None))]
    args += ["--params", str(cfg.params), "--chunk", str(cfg.chunk), "--workers", str(cfg.workers), "--mode", cfg.mode]
    args += ["--out", str(cfg.out), "--verify", str(cfg.verify), "--persistence" if cfg.persistence else "--no-persistence"]
    args += ["--timeout", repr(cfg.timeout_s), "--seed", str(cfg.seed), "--runtime", cfg.runtime, "--namespace", cfg.namespace]
    args += ["--image", cfg.image] if cfg.image else []
    args += ["--broker-wait", repr(cfg.broker_wait_s)] if cfg.broker_wait_s else []
    args += ["--results-via", cfg.results_via] if cfg.results_via != "auto" else []
    return args + [part for f in cfg.faults for part in ("--fault", str(f))]


def decode_worker(params: Mapping[str, Any], env: Mapping[str, str] | None = None) -> WorkerArgs:
    """``ttg worker``'s parsed options (click's params) as typed arguments; ConfigError names a bad one."""
    given = dict(params)
    run_id = check_run_id(given.pop("run_id"))
    worker_id, static, params_n, chunk = given.pop("worker_id"), given.pop("static"), given.pop("params"), given.pop("chunk")
    poison, broker_wait = given.pop("poison_chunks"), given.pop("broker_wait")
    coordinator_pid, successor_wait = given.pop("coordinator_pid"), given.pop("successor_wait")
    pid_file, staging = given.pop("pid_file", None), given.pop("staging", None)
    sweep = load_sweep_settings(passed_options(**given), env)
    if params_n is None or chunk is None:
        raise ConfigError("ttg worker checks every task against the run's plan: pass --params N --chunk K, as given to ttg run")
    block: tuple[int, int] | None = None
    if static is not None:
        try:
            index, of = (int(x) for x in static.split("/"))
        except ValueError:
            raise ConfigError(f"--static must look like I/W, for example 0/4 (got {static!r})") from None
        block = (index, of)
    try:
        poisoned = frozenset(int(c) for c in poison.split(",") if c.strip())
    except ValueError:
        raise ConfigError(f"--poison-chunks must be comma-separated chunk ids, for example 3,17 (got {poison!r})") from None
    return WorkerArgs(run_id, sweep, params_n, chunk, worker_id, block, poisoned, broker_wait, coordinator_pid, successor_wait, pid_file, staging)


def parse_worker_argv(argv: Sequence[str], env: Mapping[str, str] | None = None) -> WorkerArgs:
    """The inverse of :func:`worker_argv`, through the ``ttg worker`` command's own option parser."""
    from ttg.cli import worker  # the CLI imports this module

    with worker.make_context("worker", list(argv)) as ctx:
        return decode_worker(ctx.params, {} if env is None else env)


def parse_coordinator_argv(argv: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[RunConfig, str | None, bool]:
    """The inverse of :func:`coordinator_argv`: (config, run id, resume), through ``ttg run``'s own option parser."""
    from ttg.cli import run

    with run.make_context("run", list(argv)) as ctx:
        given = dict(ctx.params)
    run_id, resume = given.pop("run_id"), given.pop("resume")
    for flag in ("as_json", "verbose", "in_cluster"):
        given.pop(flag, None)
    return load_run_config(passed_options(**given), {} if env is None else env), run_id, resume
