"""Fault specifications: what to inject, when, and into which targets, as written on the command line.

``KIND@P%[:Ds][/TARGET]``:

- ``kill-worker@30%`` SIGKILLs one worker once 30 % of the chunks are done (``kill-pod@30%`` says the same
  for a pod: the Kubernetes runtime deletes it with no grace period);
  ``terminate-worker@50%`` sends SIGTERM instead (a graceful stop).
- ``kill-broker@30%:2s`` SIGKILLs the private broker and restarts it on its data 2 s later;
  ``pause-broker@30%:5s`` freezes it (SIGSTOP) for 5 s.
- ``partition-broker@30%:3s`` cuts the workers' traffic to the broker for 3 s;
  ``latency@30%:5s`` adds 50 ms to every piece of that traffic for 5 s.
- ``poison-chunk@50%`` makes the chunk at 50 % of the plan fail on every delivery: it must end
  dead-lettered and reported, never lost and never looping.
- ``junk-messages@30%`` puts 10 messages in the task queue that are not tasks of the run (bad msgpack,
  wrong shapes, another run's task), each naming a real chunk id; ``forged-task@30%`` puts well-formed
  tasks of the run there whose range is another chunk's. Every one must be rejected and counted, and
  change nothing else. ``/N`` sets how many.
- ``kill-coordinator@40%`` SIGKILLs ``ttg run`` itself once 40 % of the chunks are recorded, and
  ``terminate-coordinator@40%`` sends it SIGTERM: the run is left on the broker for
  ``ttg run --resume`` to finish, losing nothing (only a ``ttg run`` process of its own takes them).

``/TARGET`` picks the workers: ``one`` (the default of worker faults: the one longest
without a result, so surely mid-chunk), ``N``, ``P%`` of them, ``random`` (seeded by
``--seed``), ``all`` (the default of network faults), or a worker id such as ``w1``.
For ``poison-chunk`` it is the number of consecutive chunks poisoned (default 1).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ttg.errors import ConfigError


@dataclass(frozen=True)
class FaultKind:
    """What TTG knows about one kind of fault; every other module asks this table instead of listing kinds.

    A new kind is one row here and one :class:`~ttg.nemesis.base.Nemesis` subclass that lists it in ``kinds``
    (a launch-time fault instead travels to the workers in their settings, as poison-chunk does); the CLI help, the
    admissibility checks in :mod:`ttg.config`, the fuzzer's pool and the report's colours follow from the row.
    """

    name: str
    family: str  # worker, broker, proxy, message, coordinator or launch: what it acts on, and what it needs
    what: str  # one line, for help and docs
    duration_s: float | None = None  # a timed fault heals after this by default; None: nothing to heal
    on_kubernetes: bool = False  # offered by the Kubernetes runtime
    recoverable: bool = True  # the run recovers from it (and recovery is measured); a poison or junk is not recovered
    at_launch: bool = False  # in place from the workers' start, not injected into a running sweep
    crash: bool = False  # its target dies without a chance to finish what it holds (SIGKILL)
    fuzz: bool = True  # ttg chaos fuzz draws it (kill-pod is kill-worker under its Kubernetes name)
    colour: str = "#999999"  # its band in the report's figures (Okabe-Ito: told apart by colour-blind readers too)

    @property
    def recovery_means(self) -> str:
        """What "recovered in X s" measures for this kind (the report prints it beside the figures)."""
        if self.duration_s is not None:
            return "from the heal to the next chunk recorded"
        return "from the fault to the first completion of a chunk the stopped process had held"


# The order is the fuzzer's: a seed replays the same schedule only while the fuzzable kinds keep their order.
KINDS: dict[str, FaultKind] = {
    k.name: k
    for k in (
        FaultKind("kill-worker", "worker", "SIGKILL the target worker(s): survivors take their chunks over", on_kubernetes=True, crash=True, colour="#D55E00"),
        FaultKind("terminate-worker", "worker", "SIGTERM: the worker finishes its chunk and exits", on_kubernetes=True, colour="#E69F00"),
        FaultKind(
            "kill-pod",
            "worker",
            "SIGKILL the worker process in its pod (exec): the pod fails",
            on_kubernetes=True,
            crash=True,
            fuzz=False,
            colour="#D55E00",
        ),
        FaultKind("terminate-pod", "worker", "delete the worker's pod with grace: SIGTERM, it drains", on_kubernetes=True, fuzz=False, colour="#E69F00"),
        FaultKind("kill-broker", "broker", "SIGKILL the private broker; restart it on its data after D s", duration_s=1.0, crash=True, colour="#CC79A7"),
        FaultKind("pause-broker", "broker", "SIGSTOP the private broker for D s", duration_s=3.0, colour="#0072B2"),
        FaultKind("partition-broker", "proxy", "blackhole the target workers' broker traffic for D s", duration_s=3.0, colour="#000000"),
        FaultKind("latency", "proxy", "+50 ms on the target workers' broker traffic for D s", duration_s=5.0, colour="#56B4E9"),
        FaultKind("poison-chunk", "launch", "the chunk(s) at P% fail on every delivery: dead-lettered", on_kubernetes=True, recoverable=False, at_launch=True),
        FaultKind("junk-messages", "message", "publish messages that are not tasks of the run, naming real chunk ids", recoverable=False),
        FaultKind("forged-task", "message", "publish well-formed tasks of the run whose range is another chunk's", recoverable=False),
        FaultKind("kill-coordinator", "coordinator", "SIGKILL ttg run itself; ttg run --resume finishes the run", crash=True, colour="#F0E442"),
        FaultKind("terminate-coordinator", "coordinator", "SIGTERM ttg run itself; ttg run --resume finishes the run", colour="#009E73"),
    )
}


def _family(family: str) -> tuple[str, ...]:
    return tuple(k.name for k in KINDS.values() if k.family == family)


WORKER_FAULTS = _family("worker")  # signal workers (kill-pod: kill-worker by its Kubernetes name)
BROKER_FAULTS = _family("broker")  # need the private broker's process
PROXY_FAULTS = _family("proxy")  # need the fault proxies between workers and broker
MESSAGE_FAULTS = _family("message")  # published through the run's own broker connection
COORDINATOR_FAULTS = _family("coordinator")  # signal the `ttg run` process itself
KNOWN_FAULTS = tuple(KINDS)
KUBERNETES_FAULTS = tuple(k.name for k in KINDS.values() if k.on_kubernetes)
FUZZ_FAULTS = tuple(k.name for k in KINDS.values() if k.fuzz)  # ttg chaos fuzz's pool
WORKER_CRASHES = tuple(k.name for k in KINDS.values() if k.family == "worker" and k.crash)  # a worker dies holding chunks
# How long a timed fault lasts when the spec gives no ``:Ds``.
DEFAULT_DURATION_S = {k.name: k.duration_s for k in KINDS.values() if k.duration_s is not None}

_FAULT_RE = re.compile(r"(?P<kind>[a-z][a-z-]*)@(?P<pct>\d+(?:\.\d+)?)%(?::(?P<dur>\d+(?:\.\d+)?)s)?(?:/(?P<target>[A-Za-z0-9_.%-]+))?")
_TARGET_RE = re.compile(r"one|all|random|\d+|\d+(?:\.\d+)?%|[A-Za-z][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    at_fraction: float
    duration_s: float | None = None
    target: str | None = None  # None: the kind's default (one worker; all workers for network faults; one chunk)

    def __str__(self) -> str:
        text = f"{self.kind}@{self.at_fraction * 100:g}%"
        text += f":{self.duration_s:g}s" if self.duration_s is not None else ""
        return text + (f"/{self.target}" if self.target is not None else "")

    @property
    def info(self) -> FaultKind:
        return KINDS[self.kind]

    @property
    def timed(self) -> bool:
        return self.kind in DEFAULT_DURATION_S

    @property
    def duration(self) -> float | None:
        """How long the fault lasts before it heals (None: a kill or a poison, nothing to heal)."""
        return self.duration_s if self.duration_s is not None else DEFAULT_DURATION_S.get(self.kind)

    def poisoned_chunks(self, chunks: int) -> list[int]:
        """The chunk ids a poison-chunk fault poisons in a plan of ``chunks`` chunks."""
        first = min(chunks - 1, int(self.at_fraction * chunks))
        return list(range(first, min(chunks, first + int(self.target or 1))))


def targets_count(target: str | None, workers: int) -> int | None:
    """How many of ``workers`` workers ``target`` selects (None: a named worker)."""
    if target in (None, "one", "random"):
        return 1
    if target == "all":
        return workers
    if target.isdigit():
        return int(target)
    if target.endswith("%"):
        return max(1, math.ceil(float(target[:-1]) / 100.0 * workers))
    return None


def parse_fault(text: str) -> FaultSpec:
    m = _FAULT_RE.fullmatch(text.strip())
    if not m:
        raise ConfigError(f"fault must look like KIND@P%[:Ds][/TARGET] (for example kill-worker@30% or pause-broker@30%:5s) (got {text!r}); pass --fault")
    kind = m.group("kind")
    if kind not in KNOWN_FAULTS:
        raise ConfigError(f"unknown fault kind {kind!r}; known kinds: {', '.join(KNOWN_FAULTS)}")
    pct = float(m.group("pct"))
    if not 0 <= pct < 100:
        raise ConfigError(f"fault progress point must be in 0..99% (got {pct:g}%) in {text!r}")
    dur, target = m.group("dur"), m.group("target")
    if dur is not None and kind not in DEFAULT_DURATION_S:
        raise ConfigError(f"{kind} takes no duration (it is not healed, its targets' work is taken over); drop ':{dur}s' from {text!r}")
    if target is not None:
        if kind in BROKER_FAULTS:
            raise ConfigError(f"{kind} hits the one private broker and takes no /TARGET; drop '/{target}' from {text!r}")
        if kind in COORDINATOR_FAULTS:
            raise ConfigError(f"{kind} hits this coordinator and takes no /TARGET; drop '/{target}' from {text!r}")
        if kind == "poison-chunk" and not (target.isdigit() and int(target) >= 1):
            raise ConfigError(f"poison-chunk's /TARGET is the number of chunks to poison, 1 or more (got {target!r}) in {text!r}")
        if kind in MESSAGE_FAULTS and not (target.isdigit() and 1 <= int(target) <= 10_000):
            raise ConfigError(f"{kind}'s /TARGET is the number of messages to publish, 1 to 10,000 (got {target!r}) in {text!r}")
        if not _TARGET_RE.fullmatch(target) or (target.endswith("%") and not 0 < float(target[:-1]) <= 100) or target == "0":
            raise ConfigError(f"fault target must be one, all, random, N, P% (0 < P <= 100) or a worker id such as w1 (got {target!r}) in {text!r}")
    return FaultSpec(kind, pct / 100.0, float(dur) if dur else None, target)
