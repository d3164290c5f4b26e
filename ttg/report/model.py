"""The report's content: environment, per-run rows (failures first), faults, benchmarks, journals, milestone parity."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from ttg import __version__
from ttg.faults import WORKER_CRASHES
from ttg.report.inputs import SCALE_KINDS, Inputs
from ttg.verdict import checksum_words

T = TypeVar("T")

if TYPE_CHECKING:
    from ttg.report.compare import Delta  # compare reads reports: imported for the annotation only


def scale_name(params: int) -> str:
    for size, suffix in ((1_000_000, "M"), (1_000, "K")):
        if params >= size:
            return f"{params / size:g}{suffix}"
    return str(params)


# Cell texts shared by the Jinja2 templates and the .docx writer.
def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def probes(items: list[dict[str, Any]]) -> str:
    return ", ".join(f"{p['name']} {'met' if p['met'] else 'NOT met'}" for p in items) or "-"


@dataclass
class RunRow:
    run_id: str
    scenario: str
    backend: str
    mode: str
    runtime: str
    scale: str
    workers: int
    params: int
    cost_us: float  # per parameter: throughput is compared only between runs of the same cost and scale
    wall_s: float
    params_per_s: float
    completed: int
    expected: int
    lost: int
    lost_ids: list[int]
    duplicates: int
    dead_lettered: int
    checksum_ok: bool | None
    mismatches: int | None
    dead_ids: list[int]
    ok: bool
    scenario_passed: bool | None  # the pytest scenario that made the run passed (None: not from a scenario)
    faults: list[dict[str, Any]]
    timeline: list[list[float]]
    files: list[tuple[str, str]] = field(default_factory=list)  # (record / logs / journal, path under the inputs directory)

    @property
    def fault_free(self) -> bool:
        """A queue-mode run without faults that held: the only runs whose speed the report compares."""
        return self.mode == "queue" and self.ok and not self.faults and self.params_per_s > 0

    @property
    def unexpected_lost(self) -> int:
        """Chunks lost where none was expected (static mode's loss under a worker kill is expected)."""
        return 0 if self.expected_failure else self.lost

    @property
    def fine(self) -> bool:
        return self.ok and self.scenario_passed is not False

    @property
    def expected_failure(self) -> bool:
        """A failure the run was set up to show: static mode under a worker kill loses chunks; a poisoned chunk is
        dead-lettered. Either way, every value that came back must still be right."""
        if self.ok or self.mismatches or self.scenario_passed is False:
            return False
        if self.scenario_passed:
            return True  # its scenario asserted this very failure and passed
        if self.mode == "static" and any(f["kind"] in WORKER_CRASHES for f in self.faults):
            return True
        poisoned = {c for f in self.faults for c in f.get("poisoned_chunk_ids", [])}
        return bool(poisoned) and self.lost == 0 and set(self.dead_ids) == poisoned

    @property
    def why_expected(self) -> str:
        if self.mode == "static":
            return "static mode loses a killed worker's block"
        if self.dead_lettered and not self.lost:
            return "the poisoned chunk(s) were dead-lettered, as they must be"
        return "its scenario asserted this outcome and passed"

    @property
    def checksum_text(self) -> str:
        return checksum_words(self.checksum_ok, self.mismatches, self.lost, self.dead_lettered)

    @property
    def fault_text(self) -> str:
        parts = []
        for f in self.faults:
            rec = f.get("recovered_s")
            parts.append(f"{f['kind']} at {f['at_s']:.2f} s" + (f", recovered {rec:.2f} s" if rec is not None else ""))
        return "; ".join(parts) or "-"


@dataclass
class Report:
    title: str
    generated_at: str
    environment: dict[str, str]
    runs: list[RunRow]
    benchmarks: list[dict[str, Any]]
    journals: list[dict[str, Any]]
    faults: list[dict[str, Any]]
    parity: dict[str, Any]
    fuzz: list[dict[str, Any]] = field(default_factory=list)
    scale: list[dict[str, Any]] = field(default_factory=list)  # bench/scale rows: ceilings, then TTG at many workers
    skipped: list[str] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)  # plot name -> file name under img/
    inputs_from_out: str = ""  # the inputs directory, relative to the report's: where the runs' files are linked
    baseline: str = ""  # the directory compared against (ttg report --baseline), "" for none
    comparison: list[Delta] = field(default_factory=list)  # one per metric and key

    @property
    def regressions(self) -> int:
        return sum(1 for d in self.comparison if d.regression)

    def recoveries(self) -> dict[tuple[str, str], list[float]]:
        """Recovery times of the faults that recovered, by (backend, fault kind)."""
        out: dict[tuple[str, str], list[float]] = defaultdict(list)
        for f in self.faults:
            if f.get("recovered_s") is not None:
                out[(f["backend"], f["kind"])].append(float(f["recovered_s"]))
        return dict(out)

    @property
    def failing_runs(self) -> list[RunRow]:
        """Runs whose verdict failed, and runs whose scenario failed even though the verdict held."""
        return [r for r in self.runs if not r.fine]

    @property
    def failing_journals(self) -> list[dict[str, Any]]:
        return [j for j in self.journals if (j["deviated"] != j["expected_deviation"]) or j["status"] != "completed"]

    @property
    def failing_fuzz(self) -> list[dict[str, Any]]:
        return [f for f in self.fuzz if not f.get("ok")]

    @property
    def unexpected_failures(self) -> int:
        failed = sum(1 for r in self.failing_runs if not r.expected_failure) + len(self.failing_journals) + len(self.failing_fuzz)
        return failed + self.regressions

    @property
    def verdict(self) -> str:
        if self.unexpected_failures:
            failed = self.unexpected_failures - self.regressions
            parts = [f"{failed} run(s) or experiment(s) failed"] if failed else []
            parts += [f"{self.regressions} regression(s) against the baseline {self.baseline}"] if self.regressions else []
            return "FAILED: " + "; ".join(parts)
        expected = sum(1 for r in self.failing_runs if r.expected_failure)
        note = f" ({expected} run(s) failed as they were set up to: static mode's loss, poisoned chunks dead-lettered)" if expected else ""
        fuzz = f", {len(self.fuzz)} fuzz run(s)" if self.fuzz else ""
        return f"PASSED: {len(self.runs)} run(s), {len(self.benchmarks)} benchmark(s), {len(self.journals)} experiment(s){fuzz}{note}"


def _row(rec: dict[str, Any]) -> RunRow:
    v = rec["verdict"]
    return RunRow(
        run_id=rec["run_id"],
        scenario=rec.get("scenario", "-"),
        backend=rec.get("backend", "?"),
        mode=rec.get("mode", "queue"),
        runtime=rec.get("runtime", "local"),
        scale=scale_name(int(rec.get("params", 0))),
        workers=int(rec.get("workers", 0)),
        params=int(rec.get("params", 0)),
        cost_us=float(rec.get("cost_us") or 0.0),
        wall_s=float(rec.get("wall_s", 0.0)),
        params_per_s=float(rec.get("params_per_s", 0.0)),
        completed=int(v.get("chunks_completed", 0)),
        expected=int(v.get("chunks_expected", 0)),
        lost=int(v.get("lost", 0)),
        lost_ids=list(v.get("lost_chunk_ids", []))[:20],
        duplicates=int(v.get("duplicates", 0)),
        dead_lettered=int(v.get("dead_lettered", 0)),
        checksum_ok=v.get("checksum_ok"),
        mismatches=v.get("mismatches"),
        dead_ids=list(v.get("dead_letter_ids", [])),
        ok=bool(v.get("ok")),
        scenario_passed=rec.get("scenario_passed"),
        faults=list(rec.get("faults", [])),
        timeline=list(rec.get("timeline", [])),
        files=[(label, rec[key]) for label, key in (("record", "source"), ("logs", "logs")) if rec.get(key)],
    )


def _parity(rows: list[RunRow]) -> dict[str, Any]:
    """Milestone 1 vs 2 (static vs queue under a worker kill) and Milestone 3 (Redis vs RabbitMQ), from the runs present."""
    killed = [r for r in rows if any(f["kind"] in WORKER_CRASHES for f in r.faults)]
    by_mode: dict[str, list[RunRow]] = defaultdict(list)
    for r in killed:
        by_mode[r.mode].append(r)
    modes = {}
    for mode, rs in sorted(by_mode.items()):
        lost = sum(r.lost for r in rs)
        modes[mode] = {"runs": len(rs), "lost": lost, "ok": sum(r.ok for r in rs), "lost_share": lost / max(1, sum(r.expected for r in rs))}
    clean = [r for r in rows if r.fault_free]
    speed: dict[str, dict[str, float]] = defaultdict(dict)
    for (scale, backend), rs in group(clean, lambda r: (r.scale, r.backend)).items():
        speed[scale][backend] = statistics.median(r.params_per_s for r in rs)
    backends = {b: {"runs": len(rs), "ok": sum(r.ok for r in rs)} for b, rs in sorted(group(rows, lambda r: r.backend).items())}
    return {"worker_kill": modes, "throughput": dict(speed), "backends": backends}


def group(rows: list[T], key: Any) -> dict[Any, list[T]]:
    """``rows`` by ``key(row)``, in their order."""
    out: dict[Any, list[T]] = defaultdict(list)
    for r in rows:
        out[key(r)].append(r)
    return out


def _environment(records: list[dict[str, Any]]) -> dict[str, str]:
    """Where the runs ran, from their records: each value with its number of runs when they differ."""
    values: dict[str, Counter[str]] = defaultdict(Counter)
    for rec in records:
        for key, value in (rec.get("environment") or {"recorded": "no (written before records kept where they ran)"}).items():
            values[key][str(value)] += 1
    out = {k: "; ".join(v if len(c) == 1 else f"{v} ({n} runs)" for v, n in c.most_common()) for k, c in values.items()}
    out["report rendered by ttg"] = __version__
    return out


def build(inputs: Inputs, title: str) -> Report:
    rows = sorted((_row(r) for r in inputs.runs), key=lambda r: (r.expected_failure or r.fine, r.ok, r.backend, r.params, r.scenario))
    for j in inputs.journals:  # a chaos experiment's journal names the runs it made
        for r in rows:
            if r.run_id in j.get("run_ids", []):
                r.files.append(("journal", j["source"]))
    faults = [{"run_id": r.run_id, "backend": r.backend, "mode": r.mode, **f} for r in rows for f in r.faults]
    env = _environment(inputs.runs)
    env["runtime"] = ", ".join(sorted({r.runtime for r in rows})) or "-"
    journals = sorted(inputs.journals, key=lambda j: (j["deviated"] == j["expected_deviation"] and j["status"] == "completed", j["title"]))
    return Report(
        title=title,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        environment=env,
        runs=rows,
        benchmarks=sorted(inputs.benchmarks, key=lambda b: (b.get("backend", ""), b.get("params", 0), b.get("chunk", 0))),
        journals=journals,
        faults=faults,
        parity=_parity(rows),
        fuzz=sorted(inputs.fuzz, key=lambda f: (bool(f.get("ok")), f.get("backend", ""), f.get("seed", 0))),
        scale=sorted(inputs.scale, key=lambda x: (x.get("backend", ""), SCALE_KINDS.index(x["kind"]), x.get("workers", 0), -x.get("chunk_ms", 0))),
        skipped=inputs.skipped,
    )
