"""The Word report, built with python-docx on its default template: headings, tables, the figures embedded,
and failing runs shaded red so they stand out on paper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from docx import Document
from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.shared import Inches, RGBColor

from ttg.report.model import Report
from ttg.report.tables import EXPECTED, FAILED, Table, all_tables

RED = "F8D0D0"
AMBER = "FFF1CC"


def _shade(row: Any, fill: str) -> None:
    for cell in row.cells:
        props = cell._tc.get_or_add_tcPr()
        shading = OxmlElement("w:shd")
        shading.set(qn("w:val"), "clear")
        shading.set(qn("w:fill"), fill)
        props.append(shading)


def _lay_out(doc: Any, table: Table) -> None:
    fills = {EXPECTED: AMBER, FAILED: RED}
    out = doc.add_table(rows=1, cols=len(table.header))
    out.style = "Light Grid Accent 1"
    for cell, text in zip(out.rows[0].cells, table.header, strict=True):
        cell.text = text
    for cells, state in table.rows:
        row = out.add_row()
        for cell, text in zip(row.cells, cells, strict=True):
            cell.text = text
        if state in fills:
            _shade(row, fills[state])


def _picture(doc: Any, img_dir: Path, report: Report, name: str) -> None:
    if name in report.images:
        doc.add_picture(str(img_dir / report.images[name]), width=Inches(6.0))


def write(report: Report, img_dir: Path, path: Path) -> None:
    tables = all_tables(report)
    doc = Document()
    doc.add_heading(report.title, 0)
    doc.add_paragraph(f"Generated {report.generated_at} by ttg report.")
    verdict = doc.add_paragraph().add_run(f"Verdict: {report.verdict}")
    verdict.bold = True
    verdict.font.color.rgb = RGBColor(0x99, 0, 0) if report.unexpected_failures else RGBColor(0, 0x66, 0)

    if report.failing_runs or report.failing_journals:
        doc.add_heading("Failures", 1)
        _lay_out(doc, tables["failures"])

    doc.add_heading("What ran, on what", 1)
    _lay_out(doc, tables["environment"])

    doc.add_heading("Runs", 1)
    _lay_out(doc, tables["runs"])
    _picture(doc, img_dir, report, "timeline")
    _picture(doc, img_dir, report, "throughput")

    if report.faults:
        doc.add_heading("Faults and recovery", 1)
        _lay_out(doc, tables["faults"])
        _picture(doc, img_dir, report, "recovery")

    if report.benchmarks:
        doc.add_heading("Benchmark against multiprocessing.Pool", 1)
        _lay_out(doc, tables["benchmarks"])
        _picture(doc, img_dir, report, "benchmark")

    if report.journals:
        doc.add_heading("Chaos experiments", 1)
        _lay_out(doc, tables["journals"])

    if report.fuzz:
        doc.add_heading("Fuzz (ttg chaos fuzz)", 1)
        doc.add_paragraph("Each row is one sweep under a random fault schedule drawn from its seed; ttg chaos fuzz --backend B --seed S --runs 1 replays it.")
        _lay_out(doc, tables["fuzz"])

    doc.add_heading("Milestone parity", 1)
    doc.add_paragraph("Static mode vs queue mode under a worker kill (the earlier system's Milestone 1 vs 2):")
    if report.parity["worker_kill"]:
        _lay_out(doc, tables["worker_kill"])
    else:
        doc.add_paragraph("No runs with a worker kill in these inputs.")
    doc.add_paragraph("Redis vs RabbitMQ (Milestone 3): median parameters/s of fault-free queue runs.")
    if report.parity["throughput"]:
        _lay_out(doc, tables["throughput"])
    for b, m in report.parity["backends"].items():
        doc.add_paragraph(f"{b}: {m['ok']} of {m['runs']} runs ok", style="List Bullet")
    doc.save(str(path))
