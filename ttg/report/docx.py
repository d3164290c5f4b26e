"""The Word report, built with python-docx on its default template: headings, tables, the figures embedded,
and failing runs shaded red so they stand out on paper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from docx import Document
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.shared import Inches, RGBColor

from ttg.report.model import Report, probes, seconds

Row = tuple[list[str], str | None]  # cell texts, background fill (None: none)
RED = "F8D0D0"
AMBER = "FFF1CC"


def _shade(row: Any, fill: str) -> None:
    for cell in row.cells:
        props = cell._tc.get_or_add_tcPr()
        shading = OxmlElement("w:shd")
        shading.set(qn("w:val"), "clear")
        shading.set(qn("w:fill"), fill)
        props.append(shading)


def _table(doc: Any, header: list[str], rows: list[Row]) -> None:
    table = doc.add_table(rows=1, cols=len(header))
    table.style = "Light Grid Accent 1"
    for cell, text in zip(table.rows[0].cells, header, strict=True):
        cell.text = text
    for values, fill in rows:
        row = table.add_row()
        for cell, text in zip(row.cells, values, strict=True):
            cell.text = text
        if fill:
            _shade(row, fill)


def _picture(doc: Any, img_dir: Path, report: Report, name: str) -> None:
    if name in report.images:
        doc.add_picture(str(img_dir / report.images[name]), width=Inches(6.0))


def write(report: Report, img_dir: Path, path: Path) -> None:
    rows: list[Row]
    doc = Document()
    doc.add_heading(report.title, 0)
    doc.add_paragraph(f"Generated {report.generated_at} by ttg report.")
    verdict = doc.add_paragraph().add_run(f"Verdict: {report.verdict}")
    verdict.bold = True
    verdict.font.color.rgb = RGBColor(0x99, 0, 0) if report.unexpected_failures else RGBColor(0, 0x66, 0)

    if report.failing_runs or report.failing_journals:
        doc.add_heading("Failures", 1)
        rows = [
            ([r.run_id, r.backend, r.mode, r.scale, str(r.lost), ", ".join(map(str, r.lost_ids)) or "-", str(r.dead_lettered),
              f"expected: {r.why_expected}" if r.expected_failure else "unexpected"], AMBER if r.expected_failure else RED)
            for r in report.failing_runs
        ]  # fmt: skip
        rows += [([j["title"], "", "", "", "", "", "", f"status {j['status']}, deviated {j['deviated']}"], RED) for j in report.failing_journals]
        _table(doc, ["run", "backend", "mode", "scale", "lost", "lost chunk ids", "dead-lettered", "note"], rows)

    doc.add_heading("What ran, on what", 1)
    _table(doc, ["", ""], [([k, v], None) for k, v in report.environment.items()])

    doc.add_heading("Runs", 1)
    header = ["run", "backend", "mode", "scale", "workers", "params", "wall s", "params/s", "chunks", "lost", "dup", "dead", "checksum", "faults"]
    rows = [
        ([r.run_id, r.backend, r.mode, r.scale, str(r.workers), f"{r.params:,}", f"{r.wall_s:.2f}", f"{r.params_per_s:,.0f}", f"{r.completed}/{r.expected}",
          str(r.lost), str(r.duplicates), str(r.dead_lettered), r.checksum_text, r.fault_text],
         None if r.ok else (AMBER if r.expected_failure else RED))
        for r in report.runs
    ]  # fmt: skip
    _table(doc, header, rows)
    _picture(doc, img_dir, report, "timeline")
    _picture(doc, img_dir, report, "throughput")

    if report.faults:
        doc.add_heading("Faults and recovery", 1)
        rows = [
            ([f["run_id"], f["backend"], f["kind"], str(f.get("target", "")), f"{f['at_s']:.2f}", seconds(f.get("healed_s")), seconds(f.get("recovered_s")),
              str(f.get("evidence") or f.get("note", ""))], None)
            for f in report.faults
        ]  # fmt: skip
        _table(doc, ["run", "backend", "kind", "target", "at s", "healed s", "recovered s", "evidence"], rows)
        _picture(doc, img_dir, report, "recovery")

    if report.benchmarks:
        doc.add_heading("Benchmark against multiprocessing.Pool", 1)
        rows = [
            ([str(b.get("backend")), f"{b.get('params', 0):,}", f"{b.get('chunk', 0):,}", str(b.get("workers")), f"{b.get('params_per_s', 0):,.0f}",
              f"{b.get('pool_params_per_s', 0):,.0f}", f"{b['ratio_to_pool']:.3f}"], None)
            for b in report.benchmarks
        ]  # fmt: skip
        _table(doc, ["backend", "params", "chunk", "workers", "TTG params/s", "Pool params/s", "ratio"], rows)
        _picture(doc, img_dir, report, "benchmark")

    if report.journals:
        doc.add_heading("Chaos experiments", 1)
        rows = [
            ([j["title"], j["status"], f"{j['deviated']}{' (expected)' if j['expected_deviation'] else ''}", probes(j["before"]), probes(j["after"]),
              ", ".join(a["name"] for a in j["actions"])], RED if (j["deviated"] != j["expected_deviation"] or j["status"] != "completed") else None)
            for j in report.journals
        ]  # fmt: skip
        _table(doc, ["experiment", "status", "deviated", "steady state before", "steady state after", "actions"], rows)

    if report.fuzz:
        doc.add_heading("Fuzz (ttg chaos fuzz)", 1)
        doc.add_paragraph("Each row is one sweep under a random fault schedule drawn from its seed; ttg chaos fuzz --backend B --seed S --runs 1 replays it.")
        rows = [
            ([str(f.get("backend")), str(f["seed"]), " ".join(f["faults"]), str(f["lost"]), str(f["duplicates"]),
              f"{f['dead_lettered']} / {f['expected_dead']}", ", ".join(seconds(x) for x in f["recovered_s"]) or "-", f"{f['wall_s']:.2f}",
              "ok" if f["ok"] else f"FAILED {f.get('error', '')}"],
             None if f["ok"] else RED)
            for f in report.fuzz
        ]  # fmt: skip
        _table(doc, ["backend", "seed", "faults", "lost", "dup", "dead / expected", "recovery s", "wall s", "verdict"], rows)

    doc.add_heading("Milestone parity", 1)
    doc.add_paragraph("Static mode vs queue mode under a worker kill (the earlier system's Milestone 1 vs 2):")
    wk = report.parity["worker_kill"]
    if wk:
        rows = [([mode, str(m["runs"]), str(m["ok"]), str(m["lost"]), f"{100 * m['lost_share']:.1f} %"], None) for mode, m in wk.items()]
        _table(doc, ["mode", "runs", "runs ok", "chunks lost", "share lost"], rows)
    else:
        doc.add_paragraph("No runs with a worker kill in these inputs.")
    doc.add_paragraph("Redis vs RabbitMQ (Milestone 3): median parameters/s of fault-free queue runs.")
    backends = list(report.parity["backends"])
    if report.parity["throughput"]:
        rows = [([scale, *(f"{per[b]:,.0f}" if b in per else "-" for b in backends)], None) for scale, per in report.parity["throughput"].items()]
        _table(doc, ["scale", *backends], rows)
    for b, m in report.parity["backends"].items():
        doc.add_paragraph(f"{b}: {m['ok']} of {m['runs']} runs ok", style="List Bullet")
    doc.save(str(path))
