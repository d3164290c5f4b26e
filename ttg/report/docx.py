"""The Word report: ``templates/report.docx`` rendered through docxtpl (Jinja2 tags in a .docx), so a team restyles
the committed template in Word (styles, page, cover, logo) without touching code. The template lays out the sections
(:mod:`ttg.report.tables`) in a loop: headings, paragraphs, bullets, each figure with its caption, and each table as a
sub-document, with failing rows shaded red and expected failures amber so they stand out on paper.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from docx.oxml import OxmlElement
from docx.oxml.ns import qn
from docx.shared import Cm
from docxtpl import DocxTemplate, InlineImage

from ttg.report.model import Report
from ttg.report.tables import EXPECTED, FAILED, Table, sections

RED = "F8D0D0"
AMBER = "FFF1CC"
FIGURE_WIDTH = Cm(24)  # of the landscape page's 26 cm between margins
TEMPLATE = "report.docx"


def _shade(row: Any, fill: str) -> None:
    for cell in row.cells:
        props = cell._tc.get_or_add_tcPr()
        shading = OxmlElement("w:shd")
        shading.set(qn("w:val"), "clear")
        shading.set(qn("w:fill"), fill)
        props.append(shading)


def _table(tpl: DocxTemplate, table: Table) -> Any:
    """``table`` as a sub-document the template places with ``{{p b.table }}``."""
    fills = {EXPECTED: AMBER, FAILED: RED}
    sub = tpl.new_subdoc()
    out = sub.add_table(rows=1, cols=len(table.header))
    out.style = "Light Grid Accent 1"
    for cell, text in zip(out.rows[0].cells, table.header, strict=True):
        cell.text = text
    for cells, state in table.rows:
        row = out.add_row()
        for cell, text in zip(row.cells, cells, strict=True):
            cell.text = text
        if state in fills:
            _shade(row, fills[state])
    return sub


def write(report: Report, img_dir: Path, path: Path) -> None:
    with resources.as_file(resources.files("ttg.report") / "templates" / TEMPLATE) as template:
        tpl = DocxTemplate(str(template))
        context = {
            "title": report.title,
            "generated_at": report.generated_at,
            "verdict": report.verdict,
            "sections": [
                {
                    "title": section.title,
                    "blocks": [
                        {
                            "image": InlineImage(tpl, str(img_dir / report.images[b.image]), width=FIGURE_WIDTH) if b.image else None,
                            "caption": b.text if b.image else "",
                            "table": _table(tpl, b.table) if b.table is not None else None,
                            "bullets": list(b.bullets),
                            "text": "" if b.image else b.text,
                        }
                        for b in section.blocks
                    ],
                }
                for section in sections(report)
            ],
        }
        tpl.render(context, autoescape=True)
        tpl.save(str(path))
