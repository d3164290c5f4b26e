"""Write the report: Markdown (figures linked), HTML (figures embedded) via Jinja2, and .docx via :mod:`ttg.report.docx`."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import jinja2

from ttg.report import docx as docx_writer
from ttg.report import plots
from ttg.report.compare import compare
from ttg.report.inputs import ReportError, load
from ttg.report.model import Report, build, probes, seconds
from ttg.report.tables import sections

FORMATS = ("md", "docx", "html")


def md_cell(value: object, code: bool = False) -> str:
    """A Markdown table cell: a pipe or a line break in the text would end the cell or the row."""
    text = " ".join(str(value).splitlines()).replace("|", "\\|")
    return f"`{text}`" if code and text else text


HELPERS = {"seconds": seconds, "probes": probes, "md_cell": md_cell}


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("ttg.report", "templates"), undefined=jinja2.StrictUndefined, autoescape=autoescape)
    env.globals.update(HELPERS)
    env.filters["seconds"] = seconds
    env.filters["md_bullet"] = lambda item: f"- {md_cell(item)}"
    return env


def markdown(report: Report, img: str = "img") -> str:
    return _environment(False).get_template("report.md.j2").render(r=report, sections=sections(report), img=img) + "\n"


def html(report: Report, img_dir: Path) -> str:
    images = {name: "data:image/png;base64," + base64.b64encode((img_dir / file).read_bytes()).decode() for name, file in report.images.items()}
    return _environment(True).get_template("report.html.j2").render(r=report, sections=sections(report), images=images)


def make_report(
    inputs_dir: Path, out: Path, formats: tuple[str, ...], title: str, baseline: Path | None = None, max_regression: float = 0.10
) -> tuple[Report, list[Path]]:
    """Read ``inputs_dir`` (and ``baseline``'s inputs, to compare with), write ``report.<format>`` for each format (and
    ``img/``) into ``out``; returns the report and the files."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ReportError(f"unknown report format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}, for example --format md,docx")
    report = build(load(inputs_dir), title)
    report.inputs_from_out = os.path.relpath(inputs_dir.resolve(), out.resolve())
    if baseline is not None:
        report.baseline = str(baseline)
        report.comparison = compare(report, build(load(baseline), "baseline"), max_regression)
    try:
        out.mkdir(parents=True, exist_ok=True)
        img_dir = out / "img"
        report.images = plots.draw_all(report, img_dir)
    except OSError as e:
        raise ReportError(f"cannot write the report into {out}: {e}") from None
    written = []
    for fmt in formats:
        path = out / f"report.{fmt}"
        if fmt == "md":
            path.write_text(markdown(report))
        elif fmt == "html":
            path.write_text(html(report, img_dir))
        else:
            docx_writer.write(report, img_dir, path)
        written.append(path)
    return report, written
