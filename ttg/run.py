"""One sweep, end to end: broker, workers, plan, results, faults, verdict, record.

The phases, in order: start (or reach) the broker and declare the run; start
the workers and wait until each is connected; publish the plan (the clock
starts); collect results while firing faults at their progress points; stop
the workers; judge; write ``results.npy`` and ``record.json``; remove the run's
broker state. Whatever happens, workers and any private broker are stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import logging
import os
import random
import resource
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from ttg import __version__, backends
from ttg.argv import worker_argv
from ttg.broker import Broker, check_backend_available, open_broker
from ttg.compute import ComputeCrashed, ComputeProcess
from ttg.config import RunConfig, check_run_id, redact_url, worker_ids
from ttg.errors import AlgorithmNotFound, ConfigError, RunConflict, RuntimeStartError
from ttg.faults import PROXY_FAULTS
from ttg.lease import LEASE_TTL_S, new_owner
from ttg.ledger import Ledger
from ttg.nemesis import BrokerServer, FaultProxy, FaultSchedule
from ttg.plan import ChunkPlan
from ttg.producer import publish_plan
from ttg.record import RunRecord
from ttg.retry import patiently
from ttg.runtimes import Runtime, WorkerLaunch
from ttg.runtimes.local import LocalRuntime
from ttg.verdict import judge

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    chunks_done: int
    chunks_total: int
    params_done: int
    elapsed_s: float


ProgressFn = Callable[[Progress], None]
T = TypeVar("T")
BROKER_WAIT_S = 60.0  # how long the coordinator rides out an unreachable broker
ALGORITHM_IMPORT_TIMEOUT_S = 120.0  # a module that takes longer to import is taken for hung
ORPHAN_WAIT_S = 30.0  # local workers of a dead coordinator on the user's broker: how long they wait for a successor
PROGRESS_LINE_EVERY_S = 5.0  # `ttg run` prints a progress line this often when its output is not a terminal (a pod's log)


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class BrokerAccess:
    url: str
    startup_s: float | None = None  # None: an existing broker (--broker-url)
    server: BrokerServer | None = None  # the private broker, which broker faults may hit


@contextmanager
def private_or_given_broker(cfg: RunConfig) -> Iterator[BrokerAccess]:
    """The configured broker, or a private broker started for this run and stopped after it."""
    check_backend_available(cfg.sweep.backend)
    if cfg.sweep.broker_url:
        yield BrokerAccess(cfg.sweep.broker_url)
        return
    # A durable backend (RabbitMQ) keeps what it confirmed anyway; Redis only with --persistence (AOF).
    with backends.backend(cfg.sweep.backend).private_server(persistence=cfg.persistence) as server:
        yield BrokerAccess(server.url, server.startup_s, server)


def worker_launches(
    cfg: RunConfig, urls: Mapping[str, str] | str, run_id: str, *, coordinator_pid: int | None = None, successor_wait_s: float = 30.0
) -> list[WorkerLaunch]:
    """The ``ttg worker`` arguments of each worker: every setting travels explicitly, the broker URL in the environment.

    ``urls``: the broker URL, or one per worker id (each worker's own fault proxy). The URL may hold a
    password, so it goes in ``TTG_BROKER_URL``, never in the arguments, which any local user can read.
    ``coordinator_pid``: workers exit once that process (their parent) is gone, after waiting
    ``successor_wait_s`` for a successor coordinator (0: at once, as when the broker died with it)."""
    launches = []
    for i, wid in enumerate(worker_ids(cfg.workers)):
        static = f"{i}/{cfg.workers}" if cfg.mode == "static" else None
        args = worker_argv(cfg, run_id, wid, static=static, coordinator_pid=coordinator_pid, successor_wait_s=successor_wait_s)
        url = urls if isinstance(urls, str) else urls[wid]
        launches.append(WorkerLaunch(wid, tuple(args), {"TTG_BROKER_URL": url}))
    return launches


def _proxies_for(cfg: RunConfig, url: str, always: bool) -> dict[str, FaultProxy]:
    """One fault proxy per worker in front of the broker, so a partition can cut all workers or only some."""
    if not always and not any(f.kind in PROXY_FAULTS for f in cfg.faults):
        return {}
    parts = urlsplit(url)
    port = parts.port or backends.for_url(url).default_port
    return {w: FaultProxy(parts.hostname or "127.0.0.1", port) for w in worker_ids(cfg.workers)}


def _how_to_go_on(cfg: RunConfig, run_id: str) -> str:
    """The two commands that go on from a run that exists: resume it, or discard it."""
    where = f" --out {cfg.out}" if cfg.out != Path("runs") else ""
    broker = " --broker-url URL" if cfg.sweep.broker_url else ""
    return f"resume it with the same command plus --resume, or discard it with: ttg runs delete {run_id}{broker}{where}"


@functools.lru_cache(maxsize=16)  # `ttg run` checks before its progress bar and again in execute(): one child, not two
def check_algorithm(algorithm: str, grid: tuple[str, ...] = ()) -> None:
    """AlgorithmNotFound (a usage error) unless ``algorithm`` loads. A user's module is imported in a compute child, as
    the workers do, never here: its import-time code (slow, crashing, or holding the GIL) is no business of the
    process that holds the run's lease and broker connection."""
    if algorithm == "demo":
        return
    probe = ComputeProcess(algorithm, 0.0, grid)
    try:
        probe.start(timeout_s=ALGORITHM_IMPORT_TIMEOUT_S)
    except ComputeCrashed as e:
        raise AlgorithmNotFound(f"importing algorithm {algorithm!r}: the compute process {e.how}; check what its module does when imported") from None
    finally:
        probe.close()


def preflight(cfg: RunConfig, run_id: str) -> Path:
    """The checks that need no broker, made before one starts: the algorithm loads (a typo in --algorithm is a usage
    error) and ``--out`` is a directory this process can write; returns the run's directory, not yet created (a run
    refused later, for its lease, writes nothing); ConfigError naming the setting otherwise."""
    check_backend_available(cfg.sweep.backend)  # its driver is installed
    check_algorithm(cfg.sweep.algorithm, cfg.sweep.grid)
    run_dir = cfg.out / run_id
    try:
        if cfg.out.exists() and not cfg.out.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a directory")
        cfg.out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cfg.out):
            pass
        if run_dir.exists() and not run_dir.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{run_id} in it is a file, not a directory")
    except OSError as e:
        raise ConfigError(f"--out {cfg.out}: cannot hold the run directory {run_dir} ({e.strerror or e}); pass a writable directory") from None
    return run_dir


def _claim_run(broker: Broker, cfg: RunConfig, run_dir: Path, *, resume: bool, on_disk: bool) -> bool:
    """Take the run's lease and check what exists of it; returns whether the broker already held the run.

    One live coordinator per run id (a successor waits out a dead predecessor's lease); a run that
    exists is continued only with ``resume``, and only from the ledger of its first coordinator.
    """
    run_id = broker.run_id
    broker.claim(new_owner(), wait_s=LEASE_TTL_S + 1.0 if resume else 0.0)
    had_state = broker.has_state()
    if had_state and not resume:
        raise RunConflict(f"run {run_id} already exists on the broker; {_how_to_go_on(cfg, run_id)}")
    if had_state and not on_disk:
        raise RunConflict(
            f"run {run_id} exists on the broker but {run_dir} holds no ledger of it; pass the --out of its first "
            f"coordinator, or discard it: ttg runs delete {run_id} --broker-url URL"
        )
    return had_state


def _wait_connected(broker: Broker, runtime: Runtime, want: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while broker.stats().consumers < want:
        dead = [w for w, rc in runtime.exit_codes().items() if rc is not None]
        if dead:
            raise RuntimeStartError(
                f"worker {dead[0]} exited with status {runtime.exit_codes()[dead[0]]} before connecting: {runtime.describe_failure(dead[0])}"
            )
        if time.monotonic() > deadline:
            raise RuntimeStartError(f"only {broker.stats().consumers} of {want} workers connected within {timeout_s:.0f}s")
        time.sleep(0.05)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass(frozen=True)
class LiveRun:
    """A sweep while it runs, for a caller that injects faults from outside (Chaos Toolkit actions)."""

    run_id: str
    run_dir: Path
    chunks: int
    faults: FaultSchedule
    runtime: Runtime
    server: BrokerServer | None


class _Collector:
    """The result loop: read, record, report progress, fire faults, decide when the sweep is over."""

    def __init__(
        self,
        cfg: RunConfig,
        broker: Broker,
        runtime: Runtime,
        ledger: Ledger,
        on_progress: ProgressFn | None,
        server: BrokerServer | None = None,
        proxies: Mapping[str, FaultProxy] | None = None,
        cancel: threading.Event | None = None,
        own_process: bool = False,
    ) -> None:
        self.cfg, self.broker, self.runtime, self.ledger, self.on_progress = cfg, broker, runtime, ledger, on_progress
        self.cancel = cancel or threading.Event()
        self.timeline: list[list[float]] = [[0.0, 0]]
        self.t0 = time.monotonic()
        rng = random.Random(cfg.seed)  # seeded: a random fault target replays with the run's --seed
        # Queue mode: hit the worker longest without a result (surely mid-chunk). Static mode: the one with the most of
        # its block left, at once; a static sweep with no work per parameter is over in a few tens of milliseconds.
        static = cfg.mode == "static"
        priority = ledger.results_by_worker if static else ledger.last_result
        self.faults = FaultSchedule(
            cfg.faults,
            runtime,
            ledger.plan.chunks,
            self.t0,
            priority,
            server,
            proxies,
            rng,
            immediate=static,
            run=(broker, ledger.plan),
            own_process=own_process,
        )

    def run(self) -> None:
        """Collect until every planned chunk id is completed or dead (never on a count of messages), or give up."""
        chunks = self.ledger.plan.chunks
        dead_seen = 0
        next_stats = 0.0
        next_flush = time.monotonic() + 2.0
        workers_gone_at: float | None = None
        while True:
            raws = self._patiently(lambda: self.broker.read_results(max_count=512, timeout_s=self.faults.wait_s(0.1)))
            for raw in raws:
                self.ledger.add(raw)
            now = time.monotonic()
            self._progress(now)
            self.faults.poll(self.ledger.completed, self.ledger.redelivered_at)
            if now >= next_stats:  # a dead letter ends a chunk too; ask the broker a few times a second
                dead_seen = self._note_dead_letters(dead_seen)
                next_stats = now + 0.25
            if now >= next_flush:  # a successor coordinator (--resume) finds on disk what this one recorded
                self.ledger.flush()
                next_flush = now + 2.0
            if self.ledger.accounted >= chunks:
                return
            outstanding = chunks - self.ledger.accounted
            if not self.runtime.alive():
                # Every worker is gone: take what is still in flight to the coordinator, then stop.
                workers_gone_at = workers_gone_at or now
                if not raws and now - workers_gone_at > 0.5:
                    log.warning("all workers exited with %d chunk(s) outstanding", outstanding)
                    return
            if self.cancel.is_set():
                log.warning("run cancelled with %d chunk(s) outstanding", outstanding)
                return
            if now - self.t0 > self.cfg.timeout_s:
                log.error("run timed out after %.0fs with %d chunk(s) outstanding", self.cfg.timeout_s, outstanding)
                return

    def _note_dead_letters(self, seen: int) -> int:
        """Re-read the dead letters when the broker's count of them changed; returns the count read."""
        count = self._patiently(self.broker.stats).dead_lettered
        if count != seen:
            self.ledger.note_dead_letters(self._patiently(self.broker.dead_letters))
        return count

    def _patiently(self, op: Callable[[], T]) -> T:
        # A broker restart (with --persistence nothing is lost) must not end the run.
        return patiently(op, wait_s=BROKER_WAIT_S)

    def _progress(self, now: float) -> None:
        elapsed = now - self.t0
        done = self.ledger.completed
        if done != self.timeline[-1][1] and (elapsed - self.timeline[-1][0] >= 0.1 or done == self.ledger.plan.chunks):
            self.timeline.append([round(elapsed, 3), done])
        if self.on_progress:
            params_done = min(done * self.ledger.plan.chunk_size, self.ledger.plan.params)
            self.on_progress(Progress(done, self.ledger.plan.chunks, params_done, elapsed))


def execute(
    cfg: RunConfig,
    *,
    on_progress: ProgressFn | None = None,
    run_id: str | None = None,
    keep_broker_state: bool = False,
    access: BrokerAccess | None = None,
    on_start: Callable[[LiveRun], None] | None = None,
    cancel: threading.Event | None = None,
    runtime: Runtime | None = None,
    resume: bool = False,
    own_process: bool = False,
) -> RunRecord:
    """Run one sweep and return its record (also written to ``<out>/<run_id>/record.json``).

    ``access``: a broker the caller started and keeps (a private one can still take broker
    faults); otherwise the configured or a private per-run broker. ``on_start`` receives the
    :class:`LiveRun` once the plan is published, and then the workers reach the broker
    through fault proxies, so faults of every kind can be added while the sweep runs.
    ``cancel`` ends collection early; the run is judged as it stands. ``runtime``: where the
    workers run (default: local processes; the in-cluster coordinator passes its worker Job's).
    ``resume``: if ``<out>/<run_id>`` holds the ledger of a coordinator that died, continue that
    run (its recorded results kept, only unrecorded chunks published again if the plan never was
    published completely); otherwise start it. ``own_process``: the caller is ``ttg run``, a process of its own, which
    ``kill-coordinator`` and ``terminate-coordinator`` faults may signal.
    """
    run_id = check_run_id(run_id) if run_id is not None else new_run_id()
    run_dir = preflight(cfg, run_id)
    plan = ChunkPlan(cfg.params, cfg.chunk)
    on_disk = Ledger.exists(run_dir / "results.npy")
    if on_disk and not resume:
        # Results already recorded are never touched: refuse at once, saying how to go on.
        raise RunConflict(f"run {run_id} already has results in {run_dir}; {_how_to_go_on(cfg, run_id)}")
    started_at = datetime.now(UTC)
    t_start = time.monotonic()
    with contextlib.nullcontext(access) if access is not None else private_or_given_broker(cfg) as given:
        url, broker_startup_s = given.url, given.startup_s
        broker = open_broker(url, run_id, max_deliveries=cfg.sweep.max_deliveries, reclaim_after_s=cfg.sweep.reclaim_after_s, prefetch=cfg.sweep.prefetch)
        runtime = runtime or LocalRuntime(run_dir / "logs")
        proxies: dict[str, FaultProxy] = {}
        ledger: Ledger | None = None
        complete = False
        try:
            had_state = _claim_run(broker, cfg, run_dir, resume=resume, on_disk=on_disk)
            resuming = resume and on_disk
            run_dir.mkdir(parents=True, exist_ok=True)
            # The ledger exists before the run does on the broker, so broker state always has a ledger to resume.
            ledger = Ledger(plan, run_id, run_dir / "results.npy", resume=resuming)
            broker.declare(plan.chunks)
            # Partition and latency faults need a path to cut: each worker reaches the broker through its own fault proxy.
            proxies = _proxies_for(cfg, url, always=on_start is not None)
            # A private broker dies with this coordinator, and its workers with it; on a broker of the user's they
            # wait a while for a successor (ttg run --resume) before giving their chunks back.
            urls = {w: p.url_for(url) for w, p in proxies.items()} or url
            local_pid = os.getpid() if runtime.name == "local" else None
            runtime.start(worker_launches(cfg, urls, run_id, coordinator_pid=local_pid, successor_wait_s=0.0 if given.server else ORPHAN_WAIT_S))
            if cfg.mode == "queue":
                # Pods may wait for a node and pull an image first; local processes connect within a second or two.
                _wait_connected(broker, runtime, cfg.workers, timeout_s=60.0 if runtime.name == "local" else 600.0)
            startup_s = time.monotonic() - t_start
            resumed_at = ledger.completed if resuming else None
            if resuming:
                log.warning("resuming run %s with %d of %d chunks recorded", run_id, ledger.completed, plan.chunks)
                # A fault whose point has passed fired in the previous coordinator's life.
                cfg = dataclasses.replace(cfg, faults=tuple(f for f in cfg.faults if f.at_fraction * plan.chunks > ledger.completed))
            collector = _Collector(cfg, broker, runtime, ledger, on_progress, given.server, proxies, cancel, own_process)
            published = run_dir / "published"
            if cfg.mode == "queue" and not (resuming and had_state and published.exists()):
                # A plan published only in part, or a broker that lost the run: publish what is not recorded again;
                # a chunk computed twice is dropped as a duplicate, never counted twice.
                publish_plan(broker, plan, ledger.seen)
                published.touch()
            if on_start is not None:
                on_start(LiveRun(run_id, run_dir, plan.chunks, collector.faults, runtime, given.server))
            try:
                collector.run()
            finally:
                # Heal before draining and judging (as Jepsen does), and on any error or Ctrl-C:
                # no broker is ever left killed or frozen.
                collector.faults.heal_all()
            wall_s = time.monotonic() - collector.t0
            broker.end_run()
            # Workers notice the end within a reclaim tick and exit by themselves; stop() catches stragglers.
            runtime.wait(timeout_s=cfg.sweep.reclaim_after_s + 2.0)
            runtime.stop(grace_s=10.0)
            for raw in broker.read_results(max_count=1_000_000, timeout_s=0.01):
                ledger.add(raw)  # a result that landed while workers stopped still counts
            stats = broker.stats()
            dead_letters = broker.dead_letters()
            verdict = judge(
                ledger,
                dead_letters,
                broker_duplicates=stats.duplicates,
                verify=cfg.verify,
                algorithm=cfg.sweep.algorithm,
                seed=cfg.seed,
                grid=cfg.sweep.grid,
                rejected=broker.rejections(),
            )
            collector.faults.finish(verdict.dead_letter_ids)
            complete = ledger.accounted >= plan.chunks
        finally:
            # Interruption is not deletion: SIGTERM, Ctrl-C, a timeout or a crash stop the workers and leave the
            # run resumable; only a run whose every chunk is accounted for is removed from the broker.
            runtime.stop(grace_s=5.0)
            for p in proxies.values():
                p.close()
            if ledger is not None:
                ledger.flush()
            try:
                if complete and not keep_broker_state:
                    broker.delete_run()
                elif ledger is not None and given.server is None:
                    log.warning("run %s is not complete and stays on the broker; %s", run_id, _how_to_go_on(cfg, run_id))
            finally:
                broker.close()  # and with it the run's lease
    record = RunRecord(
        run_id=run_id,
        ttg_version=__version__,
        backend=cfg.sweep.backend,
        runtime=runtime.name,
        mode=cfg.mode,
        params=cfg.params,
        chunk_size=cfg.chunk,
        chunks=plan.chunks,
        workers=cfg.workers,
        algorithm=cfg.sweep.algorithm,
        cost_us=cfg.sweep.cost_us,
        started_at=started_at.isoformat(timespec="seconds"),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        wall_s=round(wall_s, 4),
        params_per_s=round(cfg.params / wall_s, 1) if wall_s > 0 else 0.0,
        verdict=verdict.to_dict(),
        faults=[f.to_dict() for f in collector.faults.records],
        timeline=collector.timeline,
        startup_s=round(startup_s, 3),
        broker_startup_s=None if broker_startup_s is None else round(broker_startup_s, 3),
        verify_s=verdict.verify_s,
        total_s=round(time.monotonic() - t_start, 3),
        broker_url=redact_url(url),
        run_dir=str(run_dir),
        grid=list(cfg.sweep.grid),
        persistence=(cfg.persistence or backends.backend(cfg.sweep.backend).durable) and broker_startup_s is not None,
        worker_exit_codes=runtime.exit_codes(),
        broker_stats=asdict(stats),
        coordinator_peak_rss_mb=round(_peak_rss_mb(), 1),
        resumed_at_chunks=resumed_at,
    )
    record.write(run_dir / "record.json")
    return record
