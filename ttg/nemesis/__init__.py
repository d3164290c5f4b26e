"""Nemeses: faults injected into a running sweep, all with one interface (inject / heal).

The same classes serve ``ttg run --fault``, pytest fixtures and Chaos Toolkit
actions. :class:`FaultSchedule` fires each fault at its progress point, heals a
timed fault when its duration is over (and every fault, whatever happens, in
:meth:`FaultSchedule.finish`), and records start, end and recovery.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from ttg.broker import Broker
from ttg.errors import BrokerError, FaultNotInjected
from ttg.faults import BROKER_FAULTS, MESSAGE_FAULTS, PROXY_FAULTS, FaultSpec
from ttg.nemesis.base import BUILDERS, FaultContext, Nemesis
from ttg.nemesis.broker import BrokerServer, KillBroker, Latency, PartitionBroker, PauseBroker
from ttg.nemesis.coordinator import SignalCoordinator
from ttg.nemesis.messages import ForgeMessages
from ttg.nemesis.proxy import FaultProxy
from ttg.nemesis.workers import SignalWorker, select_workers
from ttg.plan import ChunkPlan
from ttg.record import FaultOutcome
from ttg.runtimes import Runtime

__all__ = [
    "BrokerServer",
    "FaultContext",
    "FaultProxy",
    "FaultRecord",
    "FaultSchedule",
    "ForgeMessages",
    "KillBroker",
    "Latency",
    "Nemesis",
    "PartitionBroker",
    "PauseBroker",
    "SignalCoordinator",
    "SignalWorker",
    "nemesis_for",
    "select_workers",
]
log = logging.getLogger(__name__)
RATE_WINDOW_S = 3.0  # the pace that decides when a due fault fires is measured over this much recent progress
MIN_RATE_SPAN_S = 0.2  # ... once it spans at least this long


def nemesis_for(spec: FaultSpec, ctx: FaultContext) -> Nemesis:
    """The nemesis that injects ``spec`` (the class that lists its kind); FaultNotInjected when this run offers
    nothing it needs (it is then recorded "not injected")."""
    if spec.info.at_launch:
        raise FaultNotInjected(f"{spec.kind} is set up when the workers start, not injected into a running sweep")
    try:
        cls = BUILDERS[spec.kind]
    except KeyError:  # parse_fault admits only known kinds, and a test checks that each has a nemesis
        raise ValueError(f"no nemesis injects fault kind {spec.kind!r}; nemeses exist for {', '.join(sorted(BUILDERS))}") from None
    return cls.for_fault(spec, ctx)


@dataclass
class FaultRecord:
    kind: str
    target: str
    at_s: float
    at_chunks: int
    recovered_s: float | None = None
    note: str = ""
    fired_at: float = float("inf")  # monotonic; inf when the fault could not be injected
    healed_s: float | None = None  # since the run's start, for timed faults
    healed_at: float | None = None  # monotonic
    timed: bool = False  # healed after a duration (broker and network faults): recovery counts from the heal
    chunks_at_heal: int = 0
    evidence: str = ""  # what shows the fault happened (traffic the partition held back ...)
    nemesis: Nemesis | None = field(default=None, repr=False)
    spec: FaultSpec | None = field(default=None, repr=False)
    poisoned: list[int] = field(default_factory=list)  # poison-chunk: the chunks made to fail

    def outcome(self) -> FaultOutcome:
        """What the run record keeps of this fault."""
        return FaultOutcome(
            kind=self.kind,
            target=self.target,
            at_s=round(self.at_s, 3),
            at_chunks=self.at_chunks,
            healed_s=None if self.healed_s is None else round(self.healed_s, 3),
            recovered_s=None if self.recovered_s is None else round(self.recovered_s, 3),
            note=self.note,
            evidence=self.evidence,
            poisoned_chunk_ids=list(self.poisoned),
        )


class FaultSchedule:
    """Fires faults at progress points, heals timed ones, and measures recovery.

    Recovery of a worker fault = time from the fault to the first result that
    needed another delivery (the orphaned chunk, completed by a survivor).
    Recovery of a broker or network fault = time from healing it to the next completed chunk.

    The collector thread calls :meth:`poll`; other threads (a Chaos Toolkit action)
    may :meth:`add` a fault to a running sweep and :meth:`wait_fired` for it.
    """

    def __init__(
        self,
        specs: tuple[FaultSpec, ...],
        runtime: Runtime,
        chunks: int,
        started: float,
        last_result: Mapping[str, float],
        server: BrokerServer | None = None,
        proxies: Mapping[str, FaultProxy] | None = None,
        rng: random.Random | None = None,
        immediate: bool = False,
        run: tuple[Broker, ChunkPlan] | None = None,
        own_process: bool = False,
    ) -> None:
        self.own_process = own_process  # a coordinator fault may signal this process (see nemesis_for)
        self.immediate = immediate  # fire at the progress point itself, not half a chunk later
        self.run = run  # the run's broker connection and plan, for message faults
        self.proxies = proxies or {}
        self.runtime = runtime
        self.chunks = chunks
        self.started = started
        self.last_result = last_result
        self.server = server
        self.rng = rng or random.Random(0)
        self.records: list[FaultRecord] = []
        self.pending: list[FaultSpec] = []
        self._due_at: float | None = None
        self._ready_since: float | None = None  # when the next pending fault reached its progress point
        self._ready_workers = 1  # workers alive then (a pod LIST on Kubernetes: asked once per fault, not per poll)
        self._active: list[tuple[threading.Timer, Nemesis, FaultRecord]] = []
        self._lock = threading.RLock()
        self._fired = threading.Condition(self._lock)
        self._chunks_done = 0
        self._healing = 0  # heals under way (a broker restart on a timer thread)
        self._progress: deque[tuple[float, int]] = deque()  # (when, chunks done) over the last RATE_WINDOW_S
        for spec in specs:
            self.add(spec)

    def add(self, spec: FaultSpec) -> None:
        """Schedule ``spec``; a poison is in place from the start (the workers were launched with it)."""
        with self._lock:
            if spec.info.at_launch:  # poison-chunk, the one fault in place from the start
                ids = spec.poisoned_chunks(self.chunks)
                target = f"chunk {ids[0]}" if len(ids) == 1 else f"chunks {ids[0]}..{ids[-1]}"
                self.records.append(FaultRecord(spec.kind, target, 0.0, 0, spec=spec, poisoned=ids))
                self._fired.notify_all()
                return
            self.pending.append(spec)
            self.pending.sort(key=lambda s: s.at_fraction)

    def wait_fired(self, spec: FaultSpec, timeout_s: float) -> FaultRecord | None:
        """The record of ``spec`` once it has fired (or failed to), None if it did not within ``timeout_s``."""
        with self._fired:
            self._fired.wait_for(lambda: any(r.spec is spec for r in self.records), timeout=timeout_s)
            return next((r for r in self.records if r.spec is spec), None)

    def poll(self, chunks_done: int, redelivered_at: list[float]) -> None:
        now = time.monotonic()
        with self._lock:
            self._chunks_done = chunks_done
            self._progress.append((now, chunks_done))
            while now - self._progress[0][0] > RATE_WINDOW_S:
                self._progress.popleft()
            while self.pending and chunks_done >= self.pending[0].at_fraction * self.chunks:
                if not self._may_fire(self.pending[0]):
                    break
                # Results arrive the moment a worker finishes a chunk, so firing at once would hit
                # workers between chunks; half a chunk later, every busy worker is mid-chunk.
                # The wait is measured again at every poll: the pace may change while the fault waits.
                if self._ready_since is None:
                    self._ready_since, self._ready_workers = now, max(1, len(self.runtime.alive()))
                self._due_at = now if self.immediate else self._ready_since + self._delay(now, chunks_done)
                if now < self._due_at:
                    break
                self._due_at = self._ready_since = None
                self._fire(self.pending.pop(0), chunks_done)
            for rec in self.records:
                if rec.nemesis is not None and not rec.evidence and not rec.timed:
                    rec.evidence = rec.nemesis.evidence()  # a killed worker's exit status, once it has exited
                if rec.recovered_s is not None or rec.note or rec.poisoned or rec.kind in MESSAGE_FAULTS:
                    continue
                if rec.timed:
                    if rec.healed_at is not None and chunks_done > rec.chunks_at_heal:
                        rec.recovered_s = max(0.0, now - rec.healed_at)  # healed on its timer thread, maybe after ``now``
                else:
                    later = [t for t in redelivered_at if t >= rec.fired_at]
                    if later:
                        rec.recovered_s = min(later) - rec.fired_at

    def _blockers(self, spec: FaultSpec) -> list[FaultRecord]:
        """The active faults ``spec`` must wait for, so that each fault's effect is its own to show.

        A fault on the broker or its path while the broker is killed or frozen would act on nothing and prove nothing
        (soak seed 3147: a partition during a broker kill). A broker fault while a partition or latency is on the
        path would leave that fault nothing to hold or delay (seed 9031: a pause during a latency) and its recovery
        would absorb the restart (seed 8192: a partition's recovery took 16 s). Blackholed traffic is not delayed, so
        a latency waits for a partition (seed 10030), and a partition for a latency until it has delayed something
        (seed 12041: a partition 40 ms after a latency on the same worker left the latency nothing to show).
        """
        kinds: tuple[str, ...] = ()
        if spec.kind in (*BROKER_FAULTS, *PROXY_FAULTS, *MESSAGE_FAULTS):
            kinds += BROKER_FAULTS
        if spec.kind in BROKER_FAULTS:
            kinds += PROXY_FAULTS
        if spec.kind == "latency":
            kinds += ("partition-broker",)
        if spec.kind == "partition-broker":
            kinds += ("latency",)
        return [r for r in self.records if r.kind in kinds and r.fired_at != float("inf") and r.healed_at is None]

    def _may_fire(self, spec: FaultSpec) -> bool:
        """No active fault holds ``spec`` up, or those that do are partitions or latencies that have shown their effect:
        they are healed early. On a short sweep a fault that waits for a 2 s latency to run its course may find the sweep
        over (soak seeds 10076, 10101); one that has shown its effect has proved what it can. Broker faults are never
        cut short: their heal is a restart, which the collector's thread must not wait for."""
        blockers = self._blockers(spec)
        if any(r.kind in BROKER_FAULTS for r in blockers):
            return False
        active = [(n, r) for _, n, r in self._active if any(r is b for b in blockers)]
        if len(active) < len(blockers) or not all(n.evidence() for n, _ in active):
            return False  # one is being healed already (not in _active), or has shown nothing yet
        for nemesis, rec in active:
            log.info("healing %s early: %s is due and it has shown its effect", rec.kind, spec.kind)
            self._heal(nemesis, rec)
        return True

    def _delay(self, now: float, chunks_done: int) -> float:
        """Half a chunk, by the recent pace (capped at 1 s), and never so long that the sweep ends first: after a long
        stall the whole-run average says a chunk takes seconds while the rest may finish in a fraction of one (soak
        seed 8192: a partition at 69% never fired, the last third of the sweep took less than its wait)."""
        (t0, c0), (t1, c1) = self._progress[0], self._progress[-1]
        recent = c1 > c0 and t1 - t0 >= MIN_RATE_SPAN_S
        rate = (c1 - c0) / (t1 - t0) if recent else max(1, chunks_done) / max(1e-3, now - self.started)
        left_s = max(0, self.chunks - chunks_done) / rate
        return min(1.0, self._ready_workers / rate / 2, left_s / 3)

    def _fire(self, spec: FaultSpec, chunks_done: int) -> None:
        now = time.monotonic()
        try:
            hit = {w for r in self.records if isinstance(r.nemesis, SignalWorker) for w in r.nemesis.targets}
            ctx = FaultContext(self.runtime, self.last_result, self.server, self.proxies, self.rng, self.run, hit, self.own_process)
            nemesis = nemesis_for(spec, ctx)
            nemesis.inject()
        except (FaultNotInjected, BrokerError) as e:  # BrokerError: a message fault's publish found no broker
            self.records.append(FaultRecord(spec.kind, "", now - self.started, chunks_done, note=f"not injected: {e}", spec=spec))
            self._fired.notify_all()
            return
        duration = spec.duration
        rec = FaultRecord(spec.kind, nemesis.target, now - self.started, chunks_done, fired_at=now, timed=duration is not None, nemesis=nemesis, spec=spec)
        self.records.append(rec)
        self._fired.notify_all()
        if duration is not None:
            # On its own timer: the collector may be stuck in a call to the very broker this fault froze.
            timer = threading.Timer(duration, self._heal, args=(nemesis, rec))
            timer.daemon = True
            self._active.append((timer, nemesis, rec))
            timer.start()

    def _heal(self, nemesis: Nemesis, rec: FaultRecord) -> None:
        with self._lock:  # only to claim the heal: it is done once, by whoever comes first
            mine = [a for a in self._active if a[1] is nemesis]
            if not mine:
                return  # healed already, or being healed
            self._active = [a for a in self._active if a[1] is not nemesis]
            mine[0][0].cancel()
            self._healing += 1
        # Outside the lock: a broker restart takes seconds (~6 s for a RabbitMQ node), and meanwhile another fault's
        # heal timer and the collector's poll must keep their own clocks, or a 2 s partition lasts the restart too.
        try:
            nemesis.heal()
        finally:
            with self._lock:
                rec.healed_at = time.monotonic()
                rec.healed_s = rec.healed_at - self.started
                rec.chunks_at_heal = self._chunks_done
                rec.evidence = nemesis.evidence()  # after the heal: a restarted broker's pid is known by then
                self._healing -= 1
                self._fired.notify_all()

    @property
    def chunks_done(self) -> int:
        return self._chunks_done

    def wait_s(self, default: float) -> float:
        """How long the collector may block before the next due fault needs it."""
        if self._due_at is None:
            return default
        return max(0.0, min(default, self._due_at - time.monotonic()))

    def active(self) -> list[FaultRecord]:
        """The faults injected and not healed yet."""
        with self._lock:
            return [rec for _, _, rec in self._active]

    def heal_all(self, wait_s: float = 120.0) -> None:
        """Heal every active fault now (normal end, error, timeout or signal), and wait for heals under way on their
        timers (a broker restart): no broker is left dead, frozen or half up when the run goes on to judge."""
        for _, nemesis, rec in list(self._active):
            self._heal(nemesis, rec)
        with self._fired:
            self._fired.wait_for(lambda: self._healing == 0, timeout=wait_s)

    def finish(self, dead_letter_ids: Collection[int] = ()) -> None:
        """Heal what is still active, then say, for each fault, what became of it."""
        self.heal_all()
        with self._lock:
            for spec in self.pending:
                note = "not injected: the sweep ended before its progress point"
                self.records.append(FaultRecord(spec.kind, "", 0.0, self._chunks_done, note=note, spec=spec))
            self.pending.clear()
            self._fired.notify_all()
            for rec in self.records:
                if rec.nemesis is not None and (not rec.evidence or rec.kind in MESSAGE_FAULTS):
                    rec.evidence = rec.nemesis.evidence()  # a message fault's count of rejections grows until the end
                if rec.nemesis is not None and not rec.evidence:
                    # Pausing a broker that another fault had killed, a partition while no traffic flowed: the fault
                    # did nothing this run can show, so nothing was recovered from it either.
                    rec.recovered_s = None
                    rec.note = f"not injected: no evidence that {rec.kind} took effect (it overlapped another fault, or found nothing to hit)"
                elif rec.kind in MESSAGE_FAULTS:
                    rec.note = "rejected on purpose: nothing to recover"
                elif rec.poisoned:
                    dead = [c for c in rec.poisoned if c in dead_letter_ids]
                    rec.evidence = f"{len(dead)} of {len(rec.poisoned)} poisoned chunk(s) dead-lettered" if dead else ""
                    rec.note = "poisoned on purpose: dead-lettered, not recovered"
                elif rec.recovered_s is None and not rec.note:
                    rec.note = self._why_not_recovered(rec)

    def _why_not_recovered(self, rec: FaultRecord) -> str:
        if rec.at_chunks >= self.chunks:
            return "fired after every chunk was done: nothing to recover (use a larger sweep or --cost-us)"
        if rec.timed:
            return "no chunk completed after the fault healed"
        return "no redelivered chunk seen after the fault (the worker held none, or its chunks were never recovered)"
