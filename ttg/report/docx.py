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
from ttg.report.tables import EXPECTED, FAILED, Table, sections

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


def write(report: Report, img_dir: Path, path: Path) -> None:
    doc = Document()
    doc.add_heading(report.title, 0)
    doc.add_paragraph(f"Generated {report.generated_at} by ttg report.")
    verdict = doc.add_paragraph().add_run(f"Verdict: {report.verdict}")
    verdict.bold = True
    verdict.font.color.rgb = RGBColor(0x99, 0, 0) if report.unexpected_failures else RGBColor(0, 0x66, 0)
    for section in sections(report):
        doc.add_heading(section.title, 1)
        for block in section.blocks:
            if block.table is not None:
                _lay_out(doc, block.table)
            elif block.image:
                doc.add_picture(str(img_dir / report.images[block.image]), width=Inches(6.0))
                doc.add_paragraph(block.text, style="Caption")
            elif block.bullets:
                for item in block.bullets:
                    doc.add_paragraph(item, style="List Bullet")
            else:
                doc.add_paragraph(block.text)
    doc.save(str(path))
