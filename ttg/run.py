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
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from ttg import algorithms, backends
from ttg.argv import worker_argv
from ttg.broker import Broker, BrokerStats, open_broker
from ttg.claimcheck import KEY_FILE, STAGING, Reader, Staging
from ttg.collector import Collector, ProgressFn
from ttg.compute import ComputeCrashed, ComputeProcess
from ttg.config import RunConfig, check_run_id, worker_ids
from ttg.errors import AlgorithmNotFound, ConfigError, RunConflict, RuntimeStartError
from ttg.faults import PROXY_FAULTS
from ttg.lease import LEASE_TTL_S, new_owner
from ttg.ledger import REOPENS, Ledger
from ttg.nemesis import BrokerServer, FaultProxy, FaultSchedule
from ttg.plan import ChunkPlan
from ttg.producer import publish_plan
from ttg.record import RunRecord
from ttg.retry import patiently
from ttg.runtimes import Runtime, WorkerLaunch, describe_exit
from ttg.runtimes.local import LocalRuntime
from ttg.verdict import Verdict, judge

log = logging.getLogger(__name__)


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
    backends.backend(cfg.sweep.backend).require_driver()
    if cfg.sweep.broker_url:
        yield BrokerAccess(cfg.sweep.broker_url)
        return
    # A durable backend (RabbitMQ) keeps what it confirmed anyway; Redis only with --persistence (AOF).
    with backends.backend(cfg.sweep.backend).private_server(persistence=cfg.persistence) as server:
        yield BrokerAccess(server.url, server.startup_s, server)


def worker_launches(
    cfg: RunConfig,
    urls: Mapping[str, str] | str,
    run_id: str,
    *,
    coordinator_pid: int | None = None,
    successor_wait_s: float = 30.0,
    staging: Path | None = None,
) -> list[WorkerLaunch]:
    """The ``ttg worker`` arguments of each worker: every setting travels explicitly, the broker URL in the environment.

    ``urls``: the broker URL, or one per worker id (each worker's own fault proxy). The URL may hold a
    password, so it goes in ``TTG_BROKER_URL``, never in the arguments, which any local user can read.
    ``coordinator_pid``: workers exit once that process (their parent) is gone, after waiting
    ``successor_wait_s`` for a successor coordinator (0: at once, as when the broker died with it). ``staging``: the run's
    staging directory, when the workers put values there and send receipts (:mod:`ttg.claimcheck`)."""
    launches = []
    where = None if staging is None else str(staging)
    for i, wid in enumerate(worker_ids(cfg.workers)):
        static = f"{i}/{cfg.workers}" if cfg.mode == "static" else None
        args = worker_argv(cfg, run_id, wid, static=static, coordinator_pid=coordinator_pid, successor_wait_s=successor_wait_s, staging=where)
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
    if algorithm in algorithms.BUILT_IN:
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
    backends.backend(cfg.sweep.backend).require_driver()
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


def _claim_run(broker: Broker, owner: str, cfg: RunConfig, run_dir: Path, *, resume: bool, on_disk: bool) -> bool:
    """Take the run's lease and check what exists of it; returns whether the broker already held the run.

    One live coordinator per run id (a successor waits out a dead predecessor's lease); a run that
    exists is continued only with ``resume``, and only from the ledger of its first coordinator.
    """
    run_id = broker.run_id
    broker.claim(owner, wait_s=LEASE_TTL_S + 1.0 if resume else 0.0)
    had_state = broker.has_state()
    if had_state and not resume:
        raise RunConflict(f"run {run_id} already exists on the broker; {_how_to_go_on(cfg, run_id)}")
    if had_state and not on_disk:
        raise RunConflict(
            f"run {run_id} exists on the broker but {run_dir} holds no ledger of it; pass the --out of its first "
            f"coordinator, or discard it: ttg runs delete {run_id} --broker-url URL"
        )
    return had_state


LOCAL_CONNECT_S = 60.0  # local worker processes connect within a second or two
POD_ALL_CONNECT_S = 120.0  # pods may wait for a node and pull an image: after this the sweep starts with those connected
POD_FIRST_CONNECT_S = 600.0  # ... as long as one is; none by then fails the run with what the pods said


def _wait_connected(broker: Broker, runtime: Runtime, want: int) -> None:
    """Wait until the ``want`` workers are connected. Local processes that exit first fail the run at once; pods are
    replaced by their Job, and a cluster short of room for all of them must not hold up the ones it could schedule."""
    t0 = time.monotonic()
    while (connected := broker.stats().consumers) < want:
        waited = time.monotonic() - t0
        dead = [w for w, rc in runtime.exit_codes().items() if rc is not None]
        if runtime.owns_workers:
            if dead:
                raise RuntimeStartError(
                    f"worker {dead[0]} exited with status {describe_exit(runtime.exit_codes()[dead[0]])} before connecting: {runtime.describe_failure(dead[0])}"
                )
            if waited > LOCAL_CONNECT_S:
                raise RuntimeStartError(f"only {connected} of {want} workers connected within {LOCAL_CONNECT_S:.0f}s")
        elif connected > 0 and waited > POD_ALL_CONNECT_S:
            log.warning("%d of %d worker pods connected after %.0fs; sweeping with those, the rest join when scheduled", connected, want, waited)
            return
        elif waited > POD_FIRST_CONNECT_S:
            said = f"; {dead[0]} exited with status {describe_exit(runtime.exit_codes()[dead[0]])}: {runtime.describe_failure(dead[0])}" if dead else ""
            raise RuntimeStartError(f"no worker pod connected within {POD_FIRST_CONNECT_S:.0f}s{said}; check `kubectl describe pods`")
        time.sleep(0.05 if runtime.owns_workers else 0.5)


@dataclass(frozen=True)
class LiveRun:
    """A sweep while it runs, for a caller that injects faults from outside (Chaos Toolkit actions)."""

    run_id: str
    run_dir: Path
    chunks: int
    faults: FaultSchedule
    runtime: Runtime
    server: BrokerServer | None


class Run:
    """One sweep on a broker that is reachable, in phases: :meth:`claim`, :meth:`start_workers`, :meth:`publish`,
    :meth:`collect`, :meth:`finish`; used as a context manager, which stops the workers, flushes the ledger and
    removes the run from the broker only if every chunk was accounted for, whatever happened in between.

    ``live``: every worker reaches the broker through a fault proxy even if no configured fault needs one, so a caller
    may add faults of any kind while the sweep runs (Chaos Toolkit actions)."""

    def __init__(
        self,
        cfg: RunConfig,
        run_id: str,
        run_dir: Path,
        given: BrokerAccess,
        *,
        runtime: Runtime | None = None,
        resume: bool = False,
        on_progress: ProgressFn | None = None,
        cancel: threading.Event | None = None,
        own_process: bool = False,
        live: bool = False,
        t_start: float | None = None,
    ) -> None:
        self.cfg, self.run_id, self.run_dir, self.given = cfg, run_id, run_dir, given
        self.plan = ChunkPlan(cfg.params, cfg.chunk)
        self.runtime = runtime or LocalRuntime(run_dir / "logs")
        self.on_disk = Ledger.exists(run_dir / "results.npy")
        self.resume, self.resuming = resume, resume and self.on_disk
        self.on_progress, self.cancel, self.own_process, self.live = on_progress, cancel, own_process, live
        # t_start: when the caller began, before any private broker it started for this run (start-up counts from it).
        self.started_at, self.t_start = datetime.now(UTC), time.monotonic() if t_start is None else t_start
        self.proxies: dict[str, FaultProxy] = {}
        self.ledger: Ledger | None = None
        self.staging: Staging | None = None  # the claim check's directory, when the workers share this disk
        self.collector: Collector | None = None
        self.had_state = self.complete = self.workers_connected = False
        self.startup_s = self.wall_s = 0.0
        self.stats: BrokerStats | None = None
        self.resumed_at: int | None = None  # chunks a previous coordinator had recorded, when resuming
        self.broker = open_broker(
            given.url, run_id, max_deliveries=cfg.sweep.max_deliveries, reclaim_after_s=cfg.sweep.reclaim_after_s, prefetch=cfg.sweep.prefetch
        )

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def persistent(self) -> bool:
        """Whether the private broker TTG started keeps every confirmed write over a restart (a given broker: not TTG's to say)."""
        return self.given.startup_s is not None and (self.cfg.persistence or backends.backend(self.cfg.sweep.backend).durable)

    def claim(self) -> None:
        """Take the run's lease, check what exists of it, open the ledger and declare the run on the broker."""
        # A broker that is still starting (a StatefulSet beside the coordinator pod) gets --broker-wait to come up.
        # One owner for every attempt: a retry after the lease was taken re-claims it as its holder, not as a rival.
        owner = new_owner()
        self.had_state = patiently(
            lambda: _claim_run(self.broker, owner, self.cfg, self.run_dir, resume=self.resume, on_disk=self.on_disk), wait_s=self.cfg.broker_wait_s
        )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Local workers put values beside the run and send receipts: RabbitMQ no longer carries 80 MB per 10M values.
        self.staging = Staging.create(self.run_dir) if self.cfg.claim_check and self.runtime.name == "local" else None
        # Receipts are read whenever the run has a key, whatever this life's --results-via: a predecessor's workers (or
        # its orphans, still serving) may have left receipts on the broker, and their chunks are acknowledged there.
        key = self.run_dir / STAGING / KEY_FILE
        readable = self.staging or (Staging.open(key.parent) if self.resuming and key.exists() else None)
        # The ledger exists before the run does on the broker, so broker state always has a ledger to resume.
        claims = None if readable is None else Reader(readable)
        reopens = 0 if self.cfg.mode == "static" else REOPENS
        self.ledger = Ledger(self.plan, self.run_id, self.run_dir / "results.npy", resume=self.resuming, claims=claims, reopens=reopens)
        self.broker.declare(self.plan.chunks, workers=self.cfg.workers)
        if self.resuming:
            self.resumed_at = self.ledger.completed
            log.warning("resuming run %s with %d of %d chunks recorded", self.run_id, self.ledger.completed, self.plan.chunks)
            # A fault whose point has passed fired in the previous coordinator's life; one in place from the workers'
            # launch (a poison) is in place in this life's workers too.
            faults = tuple(f for f in self.cfg.faults if f.info.at_launch or f.at_fraction * self.plan.chunks > self.ledger.completed)
            self.cfg = dataclasses.replace(self.cfg, faults=faults)

    def start_workers(self) -> None:
        """Start the workers (each through its own fault proxy when faults need a path to cut) and wait until each is connected."""
        cfg, url = self.cfg, self.given.url
        self.proxies = _proxies_for(cfg, url, always=self.live)
        urls = {w: p.url_for(url) for w, p in self.proxies.items()} or url
        # A private broker dies with this coordinator, and its workers with it; on a broker of the user's they
        # wait a while for a successor (ttg run --resume) before giving their chunks back.
        local_pid = os.getpid() if self.runtime.name == "local" else None
        wait_s = 0.0 if self.given.server else ORPHAN_WAIT_S
        staging = None if self.staging is None else self.staging.directory
        self.runtime.start(worker_launches(cfg, urls, self.run_id, coordinator_pid=local_pid, successor_wait_s=wait_s, staging=staging))
        # A coordinator replaced after every chunk was recorded (killed while judging) has nobody to wait for: the
        # workers saw the end and left, and on Kubernetes their Job, complete, starts no more.
        finished = self.resuming and self._ledger().accounted >= self.plan.chunks
        # Connected workers have their signal handlers in place: finish() may tell them the end with a SIGTERM.
        self.workers_connected = cfg.mode == "queue" and not finished
        if self.workers_connected:
            _wait_connected(self.broker, self.runtime, cfg.workers)
        self.startup_s = time.monotonic() - self.t_start

    def publish(self) -> LiveRun:
        """Start the clock and publish the plan, less what a resumed ledger recorded; returns the run as it goes."""
        ledger = self._ledger()
        self.collector = Collector(
            self.cfg, self.broker, self.runtime, ledger, self.on_progress, self.given.server, self.proxies, self.cancel, self.own_process
        )
        published = self.run_dir / "published"
        if self.cfg.mode == "queue" and not (self.resuming and self.had_state and published.exists()):
            # A plan published only in part, or a broker that lost the run: publish what is not recorded again;
            # a chunk computed twice is dropped as a duplicate, never counted twice.
            publish_plan(self.broker, self.plan, ledger.seen)
            published.touch()
        return LiveRun(self.run_id, self.run_dir, self.plan.chunks, self.collector.faults, self.runtime, self.given.server)

    def collect(self) -> None:
        """Collect results until the sweep is over; heal every fault before returning, and on any error or Ctrl-C
        (as Jepsen does, before draining and judging): no broker is ever left killed or frozen."""
        collector = self._collector()
        try:
            collector.run()
        finally:
            collector.faults.heal_all()
        self.wall_s = time.monotonic() - collector.t0

    def finish(self) -> Verdict:
        """End the run on the broker, stop the workers, take what is still in flight, and judge."""
        ledger, collector, broker, cfg = self._ledger(), self._collector(), self.broker, self.cfg
        broker.end_run()
        if not (self.runtime.owns_workers and self.workers_connected):
            # Workers notice the end within a reclaim tick and exit by themselves. Pods must: one stopped now would
            # exit 143 and its Job would replace it, to serve a run about to be deleted. Local workers that were never
            # seen connected (static mode, a resumed run already complete) may not have their signal handlers yet.
            self.runtime.wait(timeout_s=cfg.sweep.reclaim_after_s + (2.0 if self.runtime.owns_workers else 120.0))
        # Connected local workers are told at once (SIGTERM: finish the chunk in hand, give back the rest, see the end
        # marker and exit 0) rather than left to notice the end on their next look, up to a reclaim tick (0.9 s) later.
        self.runtime.stop(grace_s=10.0)
        for raw in broker.read_results(max_count=1_000_000, timeout_s=0.01):
            ledger.add(raw)  # a result that landed while workers stopped still counts
        self.stats = broker.stats()
        verdict = judge(
            ledger,
            broker.dead_letters(),
            verify=cfg.verify,
            algorithm=cfg.sweep.algorithm,
            seed=cfg.seed,
            grid=cfg.sweep.grid,
            rejected=broker.rejections(),
        )
        collector.faults.finish(verdict.dead_letter_ids)
        collector.memory.sample()  # after verification, which reads the results back
        self.complete = ledger.accounted >= self.plan.chunks
        return verdict

    def close(self) -> None:
        """Interruption is not deletion: SIGTERM, Ctrl-C, a timeout or a crash stop the workers and leave the run
        resumable; only a run whose every chunk is accounted for is removed from the broker. Workers that outlive
        their coordinator (pods of a Job) keep serving the run for its successor."""
        if self.complete or self.runtime.owns_workers:
            self.runtime.stop(grace_s=5.0)
        for p in self.proxies.values():
            p.close()
        if self.ledger is not None:
            self.ledger.flush()
            self.ledger.close()
        if self.complete:  # every value is in results.npy; an incomplete run keeps its staging files to resume
            shutil.rmtree(self.run_dir / STAGING, ignore_errors=True)
        try:
            if self.complete:
                self.broker.delete_run()
            elif self.ledger is not None and self.given.server is None:
                log.warning("run %s is not complete and stays on the broker; %s", self.run_id, _how_to_go_on(self.cfg, self.run_id))
        finally:
            self.broker.close()  # and with it the run's lease

    def _ledger(self) -> Ledger:
        if self.ledger is None:
            raise RuntimeError("claim() comes first")  # a phase called out of order: a bug in the caller
        return self.ledger

    def _collector(self) -> Collector:
        if self.collector is None:
            raise RuntimeError("publish() comes first")
        return self.collector


def execute(
    cfg: RunConfig,
    *,
    on_progress: ProgressFn | None = None,
    run_id: str | None = None,
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
    if Ledger.exists(run_dir / "results.npy") and not resume:
        # Results already recorded are never touched: refuse at once, saying how to go on.
        raise RunConflict(f"run {run_id} already has results in {run_dir}; {_how_to_go_on(cfg, run_id)}")
    t_start = time.monotonic()
    with contextlib.nullcontext(access) if access is not None else private_or_given_broker(cfg) as given:
        run = Run(
            cfg,
            run_id,
            run_dir,
            given,
            runtime=runtime,
            resume=resume,
            on_progress=on_progress,
            cancel=cancel,
            own_process=own_process,
            live=on_start is not None,
            t_start=t_start,
        )
        with run:
            run.claim()
            run.start_workers()
            sweep = run.publish()
            if on_start is not None:
                on_start(sweep)
            run.collect()
            verdict = run.finish()
    record = RunRecord.from_run(run, verdict)
    record.write(run_dir / "record.json")
    return record
