"""The run record: the one JSON document other tools and reports read. Keep the field names stable."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RECORD_VERSION = 1


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
    verdict: dict[str, Any]
    faults: list[dict[str, Any]] = field(default_factory=list)
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
    resumed_at_chunks: int | None = None  # --resume: chunks a previous coordinator had recorded (None: not resumed)
    record_version: int = RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)
