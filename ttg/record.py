"""The run record: the one JSON document other tools and reports read. Keep the field names stable.

In memory the record is typed (:class:`~ttg.verdict.Verdict`, :class:`FaultOutcome`); on disk it is the same JSON
it always was, and :meth:`RunRecord.from_dict` loads records written by any earlier version (a field added since
takes its default; a field it does not know is ignored).
"""

from __future__ import annotations

import dataclasses
import json
import resource
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ttg import __version__
from ttg.config import redact_url
from ttg.environment import describe
from ttg.verdict import Verdict

if TYPE_CHECKING:
    from ttg.run import Run

RECORD_VERSION = 1
D = TypeVar("D")


def known_fields(cls: type[D], doc: dict[str, Any]) -> D:
    """``cls(**doc)`` with the keys ``cls`` does not declare left out: a newer writer's extra fields do not break a reader."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in doc.items() if k in names})


@dataclass(frozen=True)
class FaultOutcome:
    """One injected fault as the run recorded it: where it hit, when, whether and when the run recovered."""

    kind: str
    target: str
    at_s: float  # since the plan was published
    at_chunks: int  # chunks recorded when it fired
    healed_s: float | None = None  # timed faults: when it was healed
    recovered_s: float | None = None  # from the fault (or its heal) to the run's recovery; None: not recovered
    note: str = ""  # why not recovered, or "not injected: ..."
    evidence: str = ""  # what shows the fault happened: a run without chaos cannot show it
    poisoned_chunk_ids: list[int] = field(default_factory=list)  # poison-chunk: the chunks made to fail

    @property
    def injected(self) -> bool:
        return not self.note.startswith("not injected")

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        if not self.poisoned_chunk_ids:
            del doc["poisoned_chunk_ids"]  # the schema has carried it only for poison-chunk faults
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> FaultOutcome:
        return known_fields(cls, doc)


@dataclass
class RunRecord:
    run_id: str
    ttg_version: str
    backend: str
    runtime: str
    mode: str
    params: int
    chunk_size: int
    chunks: int
    workers: int
    algorithm: str
    cost_us: float
    started_at: str
    finished_at: str
    wall_s: float  # publishing the plan to the last result, workers already started
    params_per_s: float
    verdict: Verdict
    faults: list[FaultOutcome] = field(default_factory=list)
    timeline: list[list[float]] = field(default_factory=list)
    startup_s: float = 0.0  # private broker and workers, until every worker is connected
    broker_startup_s: float | None = None
    verify_s: float = 0.0
    total_s: float = 0.0  # end to end, start-up and verification included
    broker_url: str | None = None
    persistence: bool = False  # the private broker logged every write (AOF) so a restart loses nothing
    grid: list[str] = field(default_factory=list)  # --grid axes, when the sweep is a grid
    run_dir: str = ""
    worker_exit_codes: dict[str, int | None] = field(default_factory=dict)
    broker_stats: dict[str, int] = field(default_factory=dict)
    coordinator_peak_rss_mb: float = 0.0
    # Peak resident memory of the coordinator, anonymous (its heap: flat in N) and file-backed (mapped results pages)
    coordinator_memory_mb: dict[str, float] = field(default_factory=dict)
    coordinator_cpu_s: float = 0.0  # CPU time of the coordinator process (all its threads) while it collected results
    recording_lag_s: dict[str, float] = field(default_factory=dict)  # p50/p99/max from a worker's values to their recording
    results_via: str = "broker"  # "file": values in the run's staging directory, receipts through the broker (claim check)
    resumed_at_chunks: int | None = None  # --resume: chunks a previous coordinator had recorded (None: not resumed)
    environment: dict[str, str] = field(default_factory=dict)  # the machine that ran it (ttg.environment.describe)
    record_version: int = RECORD_VERSION

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    def to_dict(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        doc["verdict"] = self.verdict.to_dict()
        doc["faults"] = [f.to_dict() for f in self.faults]
        plain: dict[str, Any] = json.loads(json.dumps(doc))  # a deep copy in plain JSON types: the caller may change it freely
        return plain

    @classmethod
    def from_run(cls, run: Run, verdict: Verdict) -> RunRecord:
        """The record of ``run``, once :meth:`~ttg.run.Run.finish` has judged it as ``verdict``."""
        cfg, collector = run.cfg, run._collector()
        wall_s, startup_s = run.wall_s, run.given.startup_s
        return cls(
            run_id=run.run_id,
            ttg_version=__version__,
            backend=cfg.sweep.backend,
            runtime=run.runtime.name,
            mode=cfg.mode,
            params=cfg.params,
            chunk_size=cfg.chunk,
            chunks=run.plan.chunks,
            workers=cfg.workers,
            algorithm=cfg.sweep.algorithm,
            cost_us=cfg.sweep.cost_us,
            started_at=run.started_at.isoformat(timespec="seconds"),
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
            wall_s=round(wall_s, 4),
            params_per_s=round(cfg.params / wall_s, 1) if wall_s > 0 else 0.0,
            verdict=verdict,
            faults=[f.outcome() for f in collector.faults.records],
            timeline=collector.tracker.timeline,
            startup_s=round(run.startup_s, 3),
            broker_startup_s=None if startup_s is None else round(startup_s, 3),
            verify_s=verdict.verify_s,
            total_s=round(time.monotonic() - run.t_start, 3),
            broker_url=redact_url(run.given.url),
            run_dir=str(run.run_dir),
            grid=list(cfg.sweep.grid),
            environment=describe(cfg.sweep.backend, private_broker=run.given.server is not None),
            persistence=run.persistent,
            worker_exit_codes=run.runtime.exit_codes(),
            broker_stats=asdict(run.stats) if run.stats is not None else {},
            coordinator_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
            coordinator_cpu_s=round(collector.cpu_s, 3),
            coordinator_memory_mb=collector.memory.to_dict(),
            recording_lag_s=collector.tracker.lag_summary(),
            results_via="broker" if run.staging is None else "file",
            resumed_at_chunks=run.resumed_at,
        )

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RunRecord:
        """A record as :meth:`to_dict` (or ``record.json`` of any earlier version) gives it."""
        doc = {**doc, "verdict": Verdict.from_dict(doc["verdict"]), "faults": [FaultOutcome.from_dict(f) for f in doc.get("faults", [])]}
        return known_fields(cls, doc)

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        return cls.from_dict(json.loads(path.read_text()))

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)
