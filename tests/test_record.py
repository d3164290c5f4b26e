"""The run record: typed in memory, the same JSON on disk, and records of earlier versions still load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ttg.record import FaultOutcome, RunRecord
from ttg.verdict import Verdict

# A record as TTG 0.1 wrote it: no resume, memory or rejection-reason fields yet, a fault without evidence.
OLD_RECORD = {
    "run_id": "a1b2c3d4e5f6",
    "ttg_version": "0.1.0",
    "backend": "redis",
    "runtime": "local",
    "mode": "queue",
    "params": 1000,
    "chunk_size": 100,
    "chunks": 10,
    "workers": 2,
    "algorithm": "demo",
    "cost_us": 0.0,
    "started_at": "2026-01-01T00:00:00+00:00",
    "finished_at": "2026-01-01T00:00:01+00:00",
    "wall_s": 0.5,
    "params_per_s": 2000.0,
    "verdict": {
        "ok": False,
        "chunks_expected": 10,
        "chunks_completed": 9,
        "lost": 1,
        "lost_chunk_ids": [4],
        "duplicates": 0,
        "dead_lettered": 0,
        "dead_letter_ids": [],
        "checksum_expected": "aa",
        "checksum_actual": "bb",
        "checksum_ok": False,
        "verify": "full",
        "mismatches": 0,
        "rejected_messages": 0,
        "verify_s": 0.01,
    },
    "faults": [{"kind": "kill-worker", "target": "w1", "at_s": 0.2, "at_chunks": 3, "recovered_s": None, "note": "static mode: no takeover"}],
    "timeline": [[0.0, 0], [0.5, 9]],
    "record_version": 1,
}


def test_a_record_of_an_earlier_version_loads_with_defaults_for_what_it_lacks() -> None:
    rec = RunRecord.from_dict(OLD_RECORD)
    assert isinstance(rec.verdict, Verdict) and rec.verdict.lost_chunk_ids == [4] and not rec.ok
    assert rec.verdict.rejected_reasons == [] and rec.verdict.ignored_dead_letters == 0
    (fault,) = rec.faults
    assert fault == FaultOutcome("kill-worker", "w1", 0.2, 3, note="static mode: no takeover") and fault.evidence == ""
    assert rec.resumed_at_chunks is None and rec.coordinator_peak_rss_mb == 0.0
    doc = rec.to_dict()
    for key, value in OLD_RECORD.items():  # what the old record said, the new one says the same way
        if key == "verdict":
            assert {k: doc["verdict"][k] for k in value} == value
        elif key == "faults":
            assert [{k: f[k] for k in old} for f, old in zip(doc["faults"], value, strict=True)] == value
        else:
            assert doc[key] == value, key


def test_a_record_survives_its_json_and_ignores_fields_a_newer_writer_added(tmp_path: Path) -> None:
    rec = RunRecord.from_dict(OLD_RECORD)
    rec.faults.append(FaultOutcome("poison-chunk", "chunk 7", 0.0, 0, evidence="1 of 1 poisoned chunk(s) dead-lettered", poisoned_chunk_ids=[7]))
    rec.write(tmp_path / "record.json")
    on_disk = json.loads((tmp_path / "record.json").read_text())
    assert RunRecord.load(tmp_path / "record.json") == rec
    assert RunRecord.from_dict({**on_disk, "a_future_field": 1, "verdict": {**on_disk["verdict"], "a_future_verdict_field": 2}}) == rec
    # poisoned_chunk_ids appears only on the faults that poison, as it always has
    assert "poisoned_chunk_ids" not in on_disk["faults"][0] and on_disk["faults"][1]["poisoned_chunk_ids"] == [7]


def test_to_dict_is_a_copy_a_caller_may_change() -> None:
    rec = RunRecord.from_dict(OLD_RECORD)
    doc = rec.to_dict()
    doc["verdict"]["lost_chunk_ids"].append(99)
    doc["timeline"].append([1.0, 10])
    assert rec.verdict.lost_chunk_ids == [4] and rec.timeline == [[0.0, 0], [0.5, 9]]


def test_a_static_mode_loss_reads_the_same_in_the_cli_the_chaos_probe_and_the_report(caplog: Any) -> None:
    import dataclasses
    import io
    import logging

    from rich.console import Console

    from ttg.chaos.probes import verdict_holds
    from ttg.cli import summary_table
    from ttg.report.model import RunRow

    record = RunRecord.from_dict(OLD_RECORD)  # static mode under a kill: 1 chunk lost, every value that came back right
    v = record.verdict
    words = "values ok, 1 chunk(s) missing"
    assert v.checksum_text == words and any(words in p for p in v.problems())
    buf = io.StringIO()
    Console(file=buf, width=200).print(summary_table(record))
    assert words in buf.getvalue()
    fields = {f.name: None for f in dataclasses.fields(RunRow)}
    row = RunRow(**{**fields, "checksum_ok": False, "mismatches": 0, "lost": 1, "dead_lettered": 0})  # type: ignore[arg-type]
    assert row.checksum_text == words
    with caplog.at_level(logging.WARNING, logger="ttg.chaos.probes"):
        probe = {
            "phase": "chaos",
            "run_id": record.run_id,
            **{k: getattr(v, k) for k in ("lost", "lost_chunk_ids", "dead_lettered", "dead_letter_ids", "mismatches", "checksum_ok")},
        }
        assert verdict_holds(probe, lost=0) is False
    assert words in caplog.text
