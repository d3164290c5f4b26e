"""``ttg report`` from real inputs made in this session: sweeps on a private broker, a chaos journal, a benchmark."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import docx
import pytest

from ttg.config import load_run_config
from ttg.report.inputs import ReportError
from ttg.report.render import make_report
from ttg.run import execute
from ttg.testing.plugin import BrokerHandle

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def inputs(redis_broker: BrokerHandle, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """Real run records (a queue run with a kill, a static run that loses chunks, a poisoned chunk), a journal, a benchmark."""
    d = tmp_path_factory.mktemp("inputs")
    base = {"backend": "redis", "broker_url": redis_broker.url, "params": 40_000, "chunk": 1_000, "workers": 2, "cost_us": 20, "out": d}
    runs = [
        {**base, "faults": ["kill-worker@30%"], "reclaim_after_s": 1.0},
        {**base, "mode": "static", "faults": ["kill-worker@30%"]},
        {**base, "faults": ["poison-chunk@50%"], "max_deliveries": 2, "reclaim_after_s": 1.0},
        {**base, "params": 20_000},
    ]
    records = [execute(load_run_config(settings, env={})).to_dict() for settings in runs]
    chaos = Path(sys.executable).parent / "chaos"
    env = {"TTG_OUT": str(d / "chaos-runs"), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "HOME": str(d)}
    journal = d / "kill-worker.journal.json"
    subprocess.run([str(chaos), "--no-log-file", "run", str(ROOT / "experiments/kill-worker.json"), "--journal-path", str(journal)], env=env, timeout=120)
    bench = d / "benchmarks.json"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "scenarios/test_benchmarks.py"), "-k", "redis and chunk10k"]
    subprocess.run([*cmd, "--benchmark-json", str(bench)], cwd=ROOT, timeout=300, capture_output=True)
    assert journal.exists() and bench.exists()
    return d, records


@pytest.fixture(scope="module")
def report(inputs: tuple[Path, list[dict[str, Any]]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    _, written = make_report(inputs[0], out, ("md", "docx", "html"), "Session results")
    assert [p.name for p in written] == ["report.md", "report.docx", "report.html"]
    return out


def test_the_markdown_holds_the_records_numbers_and_links_its_figures(inputs: tuple[Path, list[dict[str, Any]]], report: Path) -> None:
    md = (report / "report.md").read_text()
    for rec in inputs[1]:
        assert f"`{rec['run_id']}`" in md and f"| {rec['params']:,} |" in md and f"{rec['wall_s']:.2f}" in md
    static = next(r for r in inputs[1] if r["mode"] == "static")
    assert "## Failures" not in md  # only failures nobody set up go there; these runs failed on purpose
    expected = md.split("## Expected failures", 1)[1].split("## What ran", 1)[0]
    assert static["run_id"] in expected and ", ".join(map(str, static["verdict"]["lost_chunk_ids"][:20])) in expected  # with its lost ids
    assert "static mode loses a killed worker's block" in expected
    summary = md.split("## Summary", 1)[1].split("##", 1)[0]
    assert "| sweeps | 6 | 4 | 2 | 0 |" in summary and "| chunks lost where none was expected | 0 |" in summary, summary
    assert "A worker SIGKILLed mid-sweep loses no chunk" in md  # the journal
    assert "ratio" in md and "## Milestone parity" in md and "| static |" in md and "| queue |" in md
    for name in ("panels-redis", "throughput", "benchmark", "recovery"):
        assert f"(img/{name}.png)" in md and (report / "img" / f"{name}.png").stat().st_size > 1000


def test_the_docx_opens_and_its_tables_hold_the_numbers_with_the_failure_in_red(inputs: tuple[Path, list[dict[str, Any]]], report: Path) -> None:
    document = docx.Document(str(report / "report.docx"))
    cells = [c.text for t in document.tables for row in t.rows for c in row.cells]
    for rec in inputs[1]:
        assert rec["run_id"] in cells and f"{rec['params']:,}" in cells and str(rec["verdict"]["lost"]) in cells
    assert len(document.inline_shapes) == 4
    static = next(r for r in inputs[1] if r["mode"] == "static")
    # the summary first, then the failures set up on purpose (there are no others here)
    failures = {row.cells[0].text: row for row in document.tables[1].rows[1:]}
    assert static["run_id"] in failures and "w:fill" in failures[static["run_id"]]._tr.xml  # shaded, so it stands out on paper
    runs = next(t for t in document.tables if t.rows[0].cells[0].text == "run" and len(t.columns) == 16)
    shaded = {row.cells[0].text for row in runs.rows[1:] if "w:fill" in row._tr.xml}
    assert shaded == {r["run_id"] for r in inputs[1] if not r["verdict"]["ok"]}
    # rendered through the committed docxtpl template: landscape for the wide tables, a contents field Word fills in
    from docx.enum.section import WD_ORIENT

    assert document.sections[0].orientation == WD_ORIENT.LANDSCAPE
    assert not [p.text for p in document.paragraphs if "{%" in p.text or "{{" in p.text]  # every tag rendered
    assert 'TOC \\o "1-2"' in document.element.xml and "w:updateFields" in document.settings.element.xml


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.failing_rows = 0
        self.headers: list[list[str]] = []  # each table's header cells
        self.tables: list[list[list[str]]] = []  # each table's rows of cells, header included
        self.titles: list[str] = []  # the sections' headings
        self._in_th = False
        self._in_cell = self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag not in ("img", "meta", "br", "input"):  # void elements: no end tag
            self.stack.append(tag)
        if tag == "img":
            self.images.append(a.get("src") or "")
        if tag == "tr" and a.get("class") in ("fail", "expected"):
            self.failing_rows += 1
        if tag == "table":
            self.headers.append([])
            self.tables.append([])
        if tag == "tr":
            self.tables[-1].append([])
        if tag == "th":
            self._in_th = True
            self.headers[-1].append("")
        if tag in ("th", "td"):
            self._in_cell = True
            self.tables[-1][-1].append("")
        if tag == "h2":
            self._in_h2 = True
            self.titles.append("")

    def handle_data(self, data: str) -> None:
        if self._in_th:
            self.headers[-1][-1] += data
        if self._in_cell:
            self.tables[-1][-1][-1] += data
        if self._in_h2:
            self.titles[-1] += data

    def handle_endtag(self, tag: str) -> None:
        self._in_th = self._in_th and tag != "th"
        self._in_cell = self._in_cell and tag not in ("th", "td")
        self._in_h2 = self._in_h2 and tag != "h2"
        assert self.stack and self.stack.pop() == tag, f"</{tag}> does not close the open <{self.stack[-1] if self.stack else ''}>"


def test_the_html_is_well_formed_and_embeds_its_figures(report: Path) -> None:
    page = _Page()
    page.feed((report / "report.html").read_text())
    page.close()
    assert page.stack == []
    assert len(page.images) == 4 and all(src.startswith("data:image/png;base64,") and len(src) > 2000 for src in page.images)
    assert page.failing_rows >= 2  # in the failures table and in the runs table


def test_a_directory_without_inputs_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ReportError, match="no run records, benchmark results or chaos journals under"):
        make_report(tmp_path, tmp_path / "out", ("md",), "t")
    with pytest.raises(ReportError, match="unknown report format"):
        make_report(tmp_path, tmp_path / "out", ("pdf",), "t")
    proc = subprocess.run([sys.executable, "-m", "ttg", "report", str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "is not a directory" in proc.stderr and "Traceback" not in proc.stderr


def _md_tables(text: str) -> list[list[list[str]]]:
    """Each Markdown table's rows of cells (the separator row left out), unescaped as a reader sees them."""
    tables: list[list[list[str]]] = []
    previous = ""
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            if not previous.startswith("|"):
                tables.append([])
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            cells = [re.sub(r"\[([^]]+)\]\([^)]+\)", r"\1", c) for c in cells]  # a linked file: its label
            tables[-1].append([c[1:-1] if len(c) > 1 and c[0] == c[-1] == "`" else c for c in cells])
        previous = line
    return tables


def test_the_three_formats_carry_the_same_sections_and_the_same_cells(report: Path) -> None:
    # The report's sections and tables are defined once (ttg/report/tables.py) and laid out generically; written three
    # times, the .docx had lost the runs' scenario and checksum columns and the failures' checksum.
    document = docx.Document(str(report / "report.docx"))
    in_docx = [[[c.text for c in row.cells] for row in t.rows] for t in document.tables]
    md = (report / "report.md").read_text()
    page = _Page()
    page.feed((report / "report.html").read_text())
    assert len(in_docx) >= 7 and _md_tables(md) == in_docx and page.tables == in_docx
    headers = [t[0] for t in in_docx]
    # summary, expected failures, what ran, runs
    assert headers[0][0] == "what" and headers[3][:2] == ["run", "scenario"] and "checksum" in headers[1] and "checksum" in headers[3]
    titles = [p.text for p in document.paragraphs if p.style is not None and p.style.name == "Heading 1"]
    assert titles == [line[3:] for line in md.splitlines() if line.startswith("## ")] == page.titles and "Faults and recovery" in titles
    captions = [p.text for p in document.paragraphs if p.style is not None and p.style.name == "Caption"]
    assert len(captions) == 4 and all(f"![{c}](img/" in md for c in captions)  # each figure, captioned alike


def test_a_cell_of_any_input_stays_one_markdown_cell() -> None:
    # Records and journals are JSON from other versions and tools: a pipe, a CRLF or a null must not break a table.
    from ttg.report.render import md_cell
    from ttg.report.tables import Table

    assert md_cell("a|b\r\nc") == "a\\|b c" and md_cell("run1", code=True) == "`run1`" and md_cell(7) == "7"
    assert Table(("run", "scenario"), [(("r1", None), "")]).rows == [(("r1", "-"), "")]  # type: ignore[list-item]


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Injected into a copy of the page: once it has laid out, measure the page's width against the window's, sort the runs
# table by wall time with a click as a reader would, and leave what was seen in an attribute the dumped DOM carries.
PROBE = """<script>window.addEventListener("load", () => {
  const runs = [...document.querySelectorAll("table.sortable")].find(t => t.tHead.rows[0].cells[0].textContent === "run"
    && [...t.tHead.rows[0].cells].some(c => c.textContent === "wall s"));
  const col = [...runs.tHead.rows[0].cells].findIndex(c => c.textContent === "wall s");
  runs.tHead.rows[0].cells[col].click();
  const walls = [...runs.tBodies[0].rows].map(tr => parseFloat(tr.cells[col].textContent));
  const html = document.documentElement;
  document.body.dataset.probe = JSON.stringify({page: html.scrollWidth, window: html.clientWidth, walls: walls});
});</script>"""


@pytest.mark.parametrize("width", [1280, 800])
def test_the_html_fits_the_window_in_a_real_browser_and_its_tables_sort(report: Path, tmp_path: Path, width: int) -> None:
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless Chromium on PATH (make install installs it with apt: scripts/ensure-broker chromium chromium)")
    page = tmp_path / "report.html"
    page.write_text((report / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    argv = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},900", "--dump-dom", page.as_uri()]
    dom = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[-2000:]
    probe = json.loads(found[1].replace("&quot;", '"'))
    assert probe["page"] <= probe["window"], f"the page is {probe['page']} px wide in a {probe['window']} px window: a table overflows"
    assert len(probe["walls"]) == 6 and probe["walls"] == sorted(probe["walls"]), probe  # one click sorts by wall time
    shot = tmp_path / "report.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},900", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.stat().st_size > 10_000  # a page was drawn, not a blank one


def _slowed(inputs: Path, into: Path, factor: float) -> Path:
    """A copy of ``inputs`` whose fault-free runs are ``factor`` times as fast: a regression made to order."""
    shutil.copytree(inputs, into, ignore=shutil.ignore_patterns("*.npy"))
    for path in into.rglob("*.json"):
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and "verdict" in doc and not doc.get("faults") and doc.get("mode") == "queue":
            doc["params_per_s"] *= factor
            path.write_text(json.dumps(doc))
    return into


def test_a_report_against_its_baseline_shows_each_change_and_fails_on_a_regression(inputs: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    def ttg_report(current: Path, *more: str) -> tuple[int, str]:
        out = tmp_path / f"out-{current.name}-{len(more)}"
        argv = [sys.executable, "-m", "ttg", "report", str(current), "--baseline", str(inputs[0]), "--format", "md", "--out", str(out), *more]
        ran = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        return ran.returncode, (out / "report.md").read_text()

    status, same = ttg_report(inputs[0])
    assert status == 0 and "## Compared with the baseline" in same and "REGRESSION" not in same
    assert "| ratio to Pool |" in same and "| +0.0 % |" in same  # the same inputs: nothing moved
    status, slower = ttg_report(_slowed(inputs[0], tmp_path / "slower", 0.5))
    assert status == 1 and "regression(s) against the baseline" in slower
    flagged = [line for line in slower.splitlines() if "REGRESSION" in line]
    assert flagged and all("| throughput (params/s, median) |" in line and "| -50.0 % |" in line for line in flagged), flagged
    status, tolerated = ttg_report(tmp_path / "slower", "--max-regression", "60")
    assert status == 0 and "REGRESSION" not in tolerated


def test_the_scale_benchmark_gets_its_section_table_and_figure_in_every_format(tmp_path: Path) -> None:
    """From the committed bench/scale measurement (reports/benchmarks/scale.json), the only input here."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    doc = json.loads((ROOT / "reports/benchmarks/scale.json").read_text())
    shutil.copy(ROOT / "reports/benchmarks/scale.json", inputs / "scale.json")
    _, written = make_report(inputs, tmp_path / "out", ("md", "docx", "html"), "Scale")
    md = written[0].read_text()
    section = md.split("## Scale: many workers, one broker", 1)[1].split("\n## ", 1)[0]
    fleets = [r for r in doc["rows"] if r["kind"] == "ttg"]
    assert fleets and section.count("| ok |") == len(fleets), section
    for r in fleets:
        assert f"| {r['backend']} | {r['workers']} | {r['chunk_ms']:g} ms | {r['offered_chunks_per_s']:,.0f} | {r['chunks_per_s']:,.0f} |" in section
    raw = {r["backend"]: r["chunks_per_s"] for r in doc["rows"] if r["kind"] == "ceiling"}
    top = {r["backend"]: r["chunks_per_s"] for r in doc["rows"] if r["kind"] == "ttg-ceiling"}
    for backend in raw:
        assert f"| {raw[backend]:,.0f} | {top[backend]:,.0f} | {top[backend] / raw[backend]:.2f} |" in section
        # the shared parts' ceiling: the coordinator's drain, or the broker's limit at its CPU per chunk, whichever is lower
        end_to_end = next(r for r in doc["rows"] if r["backend"] == backend and r["kind"] == "ttg-ceiling")
        drain = next(r for r in doc["rows"] if r["backend"] == backend and r["kind"] == "drain")["chunks_per_s"]
        shared = min(drain, 1000 / end_to_end["broker_cpu_ms_per_chunk"])
        assert f"| {drain:,.0f} | {shared:,.0f} | {shared / raw[backend]:.2f} |" in section
    assert "(img/scale.png)" in section and (tmp_path / "out" / "img" / "scale.png").stat().st_size > 1000
    document = docx.Document(str(written[1]))
    cells = {c.text for t in document.tables for row in t.rows for c in row.cells}
    assert {"raw chunks/s", "lag p50 / p99 s"} <= cells and len(document.inline_shapes) == 1
    html = written[2].read_text()
    assert "Scale: many workers, one broker" in html and html.count("data:image/png;base64,") == 1  # the HTML carries its figure
