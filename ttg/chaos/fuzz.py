"""``ttg chaos fuzz``: seeded random fault schedules, each run as a real sweep and judged.

Run ``i`` of ``--seed S`` uses seed ``S + i`` for everything random in it (fault
kinds, progress points, durations, targets, the random worker choice), so a
failing row replays exactly with ``--seed <its seed> --runs 1``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttg import backends
from ttg.collector import Progress
from ttg.config import RunConfig, load_run_config, worker_ids
from ttg.faults import BROKER_FAULTS, COORDINATOR_FAULTS, DEFAULT_DURATION_S, FUZZ_FAULTS, KINDS, PROXY_FAULTS, WORKER_FAULTS, FaultSpec
from ttg.plan import ChunkPlan
from ttg.record import RunRecord
from ttg.run import BrokerAccess, execute, new_run_id, private_or_given_broker

# A coordinator fault leaves the rest of the run to `ttg run --resume`, which starts after the dead coordinator's workers
# may have finished the sweep: a fault meant for the successor could find nothing left to hit. It is drawn with a
# poison (in place from the start, in both lives) and nothing else.
_WITH_COORDINATOR_FAULTS = ("poison-chunk",)
_EXIT_STATUS = {"kill-coordinator": -signal.SIGKILL, "terminate-coordinator": 143}  # ttg run unwinds on SIGTERM as on Ctrl-C, and exits 128 + 15


@dataclass(frozen=True)
class FuzzSettings:
    backend: str = backends.DEFAULT
    runs: int = 20
    seed: int = 0
    params: int = 200_000
    chunk: int = 2_000
    workers: int = 3
    cost_us: float = 20.0
    max_faults: int = 3
    out: Path = Path("runs/fuzz")
    broker_url: str | None = None  # a shared broker takes no broker faults: they are left out of the draw


@dataclass
class FuzzRow:
    seed: int
    faults: list[str]
    run_id: str = ""
    lost: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    expected_dead: int = 0
    mismatches: int | None = 0
    wall_s: float = 0.0
    error: str = ""
    not_injected: list[str] = field(default_factory=list)  # faults that never took effect: the row proved less than it says
    recovery: list[tuple[str, float | None]] = field(default_factory=list)  # (fault kind, recovered_s) per recoverable fault

    @property
    def recovered_s(self) -> list[float | None]:
        return [r for _, r in self.recovery]

    @property
    def ok(self) -> bool:
        return not self.error and not self.not_injected and self.lost == 0 and self.dead_lettered == self.expected_dead and not self.mismatches

    @property
    def why(self) -> str:
        """Why the row failed, in a few words ("" when it is ok)."""
        if self.error:
            return self.error
        if self.not_injected:
            return "; ".join(self.not_injected)
        if self.lost or self.mismatches:
            return f"lost {self.lost}, mismatches {self.mismatches}"
        if self.dead_lettered != self.expected_dead:
            return f"{self.dead_lettered} dead-lettered, {self.expected_dead} expected"
        return ""

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "recovered_s": self.recovered_s, "ok": self.ok}


def draw_schedule(seed: int, workers: int, max_faults: int = 3, kinds: tuple[str, ...] = FUZZ_FAULTS) -> tuple[FaultSpec, ...]:
    """A random but reproducible fault schedule that always leaves at least one worker running."""
    rng = random.Random(seed)
    stoppable = workers - 1  # worker faults may stop at most this many workers in all
    specs: list[FaultSpec] = []
    for _ in range(rng.randint(1, max_faults)):
        # One broker-process fault per schedule: a second one lands while the first's restart (seconds on RabbitMQ)
        # is under way, waits for it, and in a sweep of a few seconds may never fire (soak seed 3026).
        broker_taken = any(f.kind in BROKER_FAULTS for f in specs)
        coordinator_taken = any(f.kind in COORDINATOR_FAULTS for f in specs)
        others_taken = any(f.kind not in _WITH_COORDINATOR_FAULTS for f in specs)
        choices = [
            k
            for k in kinds
            if (k not in WORKER_FAULTS or stoppable > 0)
            and not (broker_taken and k in BROKER_FAULTS)
            and not (coordinator_taken and k not in _WITH_COORDINATOR_FAULTS)
            and not (others_taken and k in COORDINATOR_FAULTS)
        ]
        kind = rng.choice(choices)
        at = round(rng.uniform(0.05, 0.8), 2)
        duration = round(rng.uniform(0.5, 3.0), 1) if kind in DEFAULT_DURATION_S else None
        target: str | None = None
        if kind in WORKER_FAULTS:
            count = rng.randint(1, stoppable)
            target = rng.choice([str(count), "random", "one"]) if count == 1 else str(count)
            stoppable -= count
        elif kind in PROXY_FAULTS:
            target = rng.choice(["all", "one", rng.choice(worker_ids(workers))])
        specs.append(FaultSpec(kind, at, duration, target))
    if any(f.kind in WORKER_FAULTS for f in specs):
        # A worker named by a network fault may be the one a worker fault stopped: the fault would find nobody to
        # cut and prove nothing. Pick among the live ones instead.
        specs = [dataclasses.replace(f, target="one") if f.kind in PROXY_FAULTS and f.target not in ("all", "one") else f for f in specs]
    return tuple(specs)


def _config(s: FuzzSettings, seed: int, faults: tuple[FaultSpec, ...]) -> RunConfig:
    given = {
        "backend": s.backend,
        "broker_url": s.broker_url,
        "params": s.params,
        "chunk": s.chunk,
        "workers": s.workers,
        "cost_us": s.cost_us,
        "out": s.out,
        "seed": seed,
        "faults": faults,
        "persistence": True,  # a fuzzed kill-broker must find the run on disk
        "timeout_s": 600,
    }
    return load_run_config({k: v for k, v in given.items() if v is not None})


def fuzz(s: FuzzSettings, on_row: Callable[[FuzzRow], None] | None = None) -> list[FuzzRow]:
    kinds = tuple(k for k in FUZZ_FAULTS if not (s.broker_url and k in BROKER_FAULTS))
    rows = []
    # One broker for every run: private (started once, with persistence) unless ``broker_url`` is given.
    with private_or_given_broker(_config(s, s.seed, ())) as access:
        for seed in range(s.seed, s.seed + s.runs):
            faults = draw_schedule(seed, s.workers, s.max_faults, kinds)
            row = FuzzRow(seed, [str(f) for f in faults])
            row.expected_dead = len({c for f in faults if f.kind == "poison-chunk" for c in f.poisoned_chunks(ChunkPlan(s.params, s.chunk).chunks)})
            try:
                if any(f.kind in COORDINATOR_FAULTS for f in faults):
                    _coordinator_run(s, seed, faults, access, row)
                else:
                    _judge(row, execute(_config(s, seed, faults), access=access))
            except Exception as e:  # a run that cannot finish is a finding too: report it with its seed
                row.error = f"{type(e).__name__}: {e}"
            rows.append(row)
            if on_row is not None:
                on_row(row)
    # The table as JSON next to the runs' records, so `ttg report` shows it.
    s.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "ttg_fuzz": 1,
        "backend": s.backend,
        "seed": s.seed,
        "runs": s.runs,
        "summary": summarise(rows),
        "rows": [{**r.to_dict(), "backend": s.backend} for r in rows],
    }
    (s.out / f"fuzz-{s.backend}-seed{s.seed}-runs{s.runs}.json").write_text(json.dumps(doc, indent=1))
    return rows


def _judge(row: FuzzRow, record: RunRecord) -> None:
    """Fill ``row`` from a run record."""
    v = record.verdict
    row.run_id, row.lost, row.duplicates, row.dead_lettered = record.run_id, v.lost, v.duplicates, v.dead_lettered
    row.mismatches, row.wall_s = v.mismatches, record.wall_s
    row.recovery += [(f.kind, f.recovered_s) for f in record.faults if KINDS[f.kind].recoverable]
    row.not_injected += [f"{f.kind}: {f.note}" for f in record.faults if not f.injected]


def _coordinator_run(s: FuzzSettings, seed: int, faults: tuple[FaultSpec, ...], access: BrokerAccess, row: FuzzRow) -> None:
    """A coordinator fault: ``ttg run`` as a process of its own signals itself at its progress point, and then
    ``ttg run --resume`` (here, in-process) must finish the run from what it left, losing nothing.

    The first coordinator reaches the broker by ``--broker-url``, as a user's resumable run does: its workers outlive
    it and serve the run for a while, beside the successor's. Recovery: from the first coordinator's death to the
    successor's first newly recorded chunk.
    """
    fault = next(f for f in faults if f.kind in COORDINATOR_FAULTS)
    run_id = f"fuzz{seed}-{new_run_id()[:6]}"
    args = ["--backend", s.backend, "--run-id", run_id, "--out", str(s.out), "--params", str(s.params), "--chunk", str(s.chunk)]
    args += ["--workers", str(s.workers), "--cost-us", repr(s.cost_us), "--seed", str(seed), "--timeout", "600", "--json"]
    args += [part for f in faults for part in ("--fault", str(f))]
    env = {**os.environ, "TTG_BROKER_URL": access.url}  # the URL holds the private broker's password: never in argv
    started = time.monotonic()
    first = subprocess.run([sys.executable, "-m", "ttg", "run", *args], env=env, capture_output=True, text=True, timeout=660, check=False)
    died_at = time.monotonic()
    if first.returncode in (0, 1) and first.stdout.strip():  # 1: finished, with a poison dead-lettered (by design)
        row.not_injected.append(f"{fault.kind}: not injected: the first coordinator finished the sweep before its progress point")
        _judge(row, RunRecord.from_dict(json.loads(first.stdout)))
        return
    if first.returncode != _EXIT_STATUS[fault.kind]:
        tail = first.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"the first coordinator exited with status {first.returncode}, not {_EXIT_STATUS[fault.kind]}: {tail[0]}")
    progress: list[tuple[float, int]] = []

    def on_progress(p: Progress) -> None:
        if not progress or p.chunks_done != progress[-1][1]:
            progress.append((time.monotonic(), p.chunks_done))

    rest = tuple(f for f in faults if f.kind not in COORDINATOR_FAULTS)
    record = execute(_config(s, seed, rest), access=access, run_id=run_id, resume=True, on_progress=on_progress)
    _judge(row, record)
    row.wall_s = round(died_at - started + record.wall_s, 4)  # both lives
    resumed = record.resumed_at_chunks or 0
    recovered = next((t - died_at for t, done in progress if done > resumed), None)
    row.recovery.insert(0, (fault.kind, None if recovered is None else round(recovered, 3)))


def summarise(rows: list[FuzzRow]) -> dict[str, Any]:
    """The soak's headline: runs ok, losses, duplicates, dead letters against the poison drawn, recovery per fault
    kind (count, median, p95, max, and how many never recovered) and wall time."""
    by_kind: dict[str, list[float | None]] = {}
    for r in rows:
        for kind, rec in r.recovery:
            by_kind.setdefault(kind, []).append(rec)
    recovery = {}
    for kind, values in sorted(by_kind.items()):
        done = sorted(v for v in values if v is not None)
        recovery[kind] = {
            "faults": len(values),
            "not_recovered": len(values) - len(done),
            "p50_s": round(statistics.median(done), 3) if done else None,
            "p95_s": round(done[min(len(done) - 1, math.ceil(0.95 * len(done)) - 1)], 3) if done else None,
            "max_s": round(done[-1], 3) if done else None,
        }
    kinds = Counter(f.split("@")[0] for r in rows for f in r.faults)
    return {
        "runs": len(rows),
        "ok": sum(r.ok for r in rows),
        "failed_seeds": [r.seed for r in rows if not r.ok],
        "lost": sum(r.lost for r in rows),
        "duplicates": sum(r.duplicates for r in rows),
        "dead_lettered": sum(r.dead_lettered for r in rows),
        "expected_dead": sum(r.expected_dead for r in rows),
        "not_injected": sum(len(r.not_injected) for r in rows),
        "faults_drawn": dict(sorted(kinds.items())),
        "recovery": recovery,
        "wall_s": round(sum(r.wall_s for r in rows), 1),
    }
