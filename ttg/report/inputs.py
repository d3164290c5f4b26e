"""Find a report's inputs under a directory: run records, pytest-benchmark results, Chaos Toolkit journals and
``ttg chaos fuzz`` tables."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttg.errors import ConfigError


class ReportError(ConfigError):
    """The report cannot be made (no inputs, an unknown format, an unwritable output directory); the message says what to do."""


@dataclass
class Inputs:
    runs: list[dict[str, Any]] = field(default_factory=list)
    benchmarks: list[dict[str, Any]] = field(default_factory=list)
    journals: list[dict[str, Any]] = field(default_factory=list)
    fuzz: list[dict[str, Any]] = field(default_factory=list)  # rows of `ttg chaos fuzz` tables
    scale: list[dict[str, Any]] = field(default_factory=list)  # rows of bench/scale (many workers, one broker)
    skipped: list[str] = field(default_factory=list)  # files that were not JSON or not one of the three kinds

    @property
    def empty(self) -> bool:
        return not (self.runs or self.benchmarks or self.journals or self.fuzz or self.scale)


def _benchmarks(doc: dict[str, Any], source: str) -> list[dict[str, Any]]:
    out = []
    for b in doc.get("benchmarks", []):
        info = b.get("extra_info") or {}
        if "ratio_to_pool" not in info:
            continue  # not one of TTG's side-by-side benchmarks
        out.append({"name": b.get("name", ""), "source": source, **info})
    return out


SCALE_KINDS = ("ceiling", "ttg-ceiling", "drain", "ttg")


def _is_scale(doc: Any) -> bool:
    """A bench/scale document (marked ``ttg_scale`` since it was; the first one is known by its command)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        return False
    return "ttg_scale" in doc or str(doc.get("command", "")).startswith("bench/scale")


def _journal(doc: dict[str, Any], source: str) -> dict[str, Any]:
    exp = doc.get("experiment") or {}
    states = doc.get("steady_states") or {}

    def probes(phase: str) -> list[dict[str, Any]]:
        state = states.get(phase) or {}
        return [{"name": p["activity"]["name"], "met": p.get("tolerance_met"), "output": p.get("output")} for p in state.get("probes", [])]

    return {
        "source": source,
        "title": exp.get("title", Path(source).stem),
        "tags": exp.get("tags", []),
        "status": doc.get("status", "?"),
        "deviated": bool(doc.get("deviated")),
        "expected_deviation": "expected-deviation" in exp.get("tags", []),
        "before": probes("before"),
        "after": probes("after"),
        "actions": [{"name": r["activity"]["name"], "status": r.get("status"), "type": r["activity"].get("type")} for r in doc.get("run", [])],
        "rollbacks": [{"name": r["activity"]["name"], "status": r.get("status")} for r in doc.get("rollbacks", [])],
        "duration_s": doc.get("duration"),
        "run_ids": sorted(_run_ids(doc.get("run", [])) | _run_ids(states)),
    }


def _logs(directory: Path, record: Path) -> str:
    """The run's worker logs beside its record, relative to ``directory`` ("" when there are none): ``<run>/logs/``
    beside a run directory's ``record.json``, ``<name>.logs/`` beside a ``--ttg-results`` copy."""
    logs = record.parent / "logs" if record.name == "record.json" else record.with_suffix(".logs")
    return str(logs.relative_to(directory)) if logs.is_dir() else ""


def _run_ids(doc: Any) -> set[str]:
    """Every ``run_id`` value anywhere in a journal (the probes and actions report the runs they acted on)."""
    if isinstance(doc, dict):
        found = {doc["run_id"]} if isinstance(doc.get("run_id"), str) else set()
        return found.union(*(_run_ids(v) for v in doc.values()))
    if isinstance(doc, list):
        return set().union(*(_run_ids(v) for v in doc))
    return set()


def load(directory: Path) -> Inputs:
    """Every input under ``directory`` (recursively). A run found twice (record.json and a --ttg-results copy) counts once."""
    if not directory.is_dir():
        raise ReportError(f"{directory} is not a directory; pass the directory given to `pytest scenarios --ttg-results` or `ttg run --out`")
    inputs = Inputs()
    runs: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.rglob("*.json")):
        source = str(path.relative_to(directory))
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            inputs.skipped.append(source)
            continue
        if isinstance(doc, dict) and "run_id" in doc and isinstance(doc.get("verdict"), dict):
            prior = runs.get(doc["run_id"], {})
            logs = prior.get("logs") or _logs(directory, path)
            runs[doc["run_id"]] = {**doc, **prior, "source": prior.get("source", source), "logs": logs}  # keep the scenario name if either has it
        elif isinstance(doc, dict) and isinstance(doc.get("benchmarks"), list):
            inputs.benchmarks += _benchmarks(doc, source)
        elif isinstance(doc, dict) and "experiment" in doc and "deviated" in doc:
            inputs.journals.append(_journal(doc, source))
        elif isinstance(doc, dict) and "ttg_fuzz" in doc and isinstance(doc.get("rows"), list):
            inputs.fuzz += [{**row, "source": source} for row in doc["rows"]]
        elif _is_scale(doc):
            inputs.scale += [{**row, "source": source} for row in doc["rows"] if isinstance(row, dict) and row.get("kind") in SCALE_KINDS]
        else:
            inputs.skipped.append(source)
    inputs.runs = list(runs.values())
    if inputs.empty:
        raise ReportError(
            f"no run records, benchmark results or chaos journals under {directory}: run `pytest scenarios --ttg-results {directory}`, "
            f"`ttg run --out {directory}` or `chaos run … --journal-path {directory}/NAME.journal.json` first"
        )
    return inputs
