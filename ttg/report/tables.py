"""The report's content, defined once: its sections in order, each a title and blocks (a paragraph, a table, a
figure, a list); every table with its columns, its cells as text, and how each row stands.

The Markdown and HTML templates and the .docx writer only lay sections out, generically, so the three formats cannot
drift apart (the .docx once lacked the runs' scenario and checksum columns, and the failures' checksum). A new section
is one function here, listed in :func:`sections`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ttg.faults import KINDS
from ttg.report.model import Report, RunRow, probes, seconds

FINE, EXPECTED, FAILED = "", "expected", "fail"  # how a row stands: nothing to see, a failure set up on purpose, a failure


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: Sequence[tuple[tuple[str, ...], str]]  # cell texts, and how the row stands (FINE, EXPECTED, FAILED)
    code: frozenset[int] = frozenset()  # columns that hold identifiers (run ids): shown as code
    # The column whose cell names files ("record logs journal"), and per row the (label, path under the inputs
    # directory) of each: Markdown and HTML link them, the .docx shows the names.
    link_col: int | None = None
    links: Sequence[Sequence[tuple[str, str]]] = ()

    def __post_init__(self) -> None:
        # Input files are JSON written by other versions: a null or a number where text belongs is shown, not a crash.
        object.__setattr__(self, "rows", [(tuple("-" if c is None else str(c) for c in cells), state) for cells, state in self.rows])


def _state(run: RunRow) -> str:
    return FINE if run.fine else (EXPECTED if run.expected_failure else FAILED)


def _failure_rows(runs: list[RunRow], note: bool) -> list[tuple[tuple[str, ...], str]]:
    return [
        ((x.run_id, x.scenario, x.backend, x.mode, x.scale, str(x.lost), ", ".join(map(str, x.lost_ids)) or "-", str(x.dead_lettered), x.checksum_text,
          x.why_expected if note else "unexpected"), _state(x))
        for x in runs
    ]  # fmt: skip


FAILURE_HEADER = ("run", "scenario", "backend", "mode", "scale", "lost", "lost chunk ids", "dead-lettered", "checksum", "why")


def failures(r: Report) -> Table:
    """Failures nobody set up: runs whose verdict or scenario failed, experiments that did not hold, fuzz seeds."""
    rows = _failure_rows([x for x in r.failing_runs if not x.expected_failure], note=False)
    rows += [(("experiment", j["title"], "", "", "", "", "", "", "", f"status {j['status']}, deviated {j['deviated']}"), FAILED) for j in r.failing_journals]
    for f in r.failing_fuzz:
        rows.append((("fuzz", f"seed {f['seed']}", str(f.get("backend")), "", "", str(f["lost"]), "", "", "", str(f.get("error", ""))), FAILED))
    return Table(FAILURE_HEADER, rows, frozenset({0}))


def expected_failures(r: Report) -> Table:
    """Runs that failed as they were set up to (static mode's loss, poisoned chunks), each with why."""
    return Table(FAILURE_HEADER, _failure_rows([x for x in r.failing_runs if x.expected_failure], note=True), frozenset({0}))


def summary(r: Report) -> Table:
    """The verdict in counts: what ran, what held, what failed on purpose, what failed."""
    expected = sum(1 for x in r.failing_runs if x.expected_failure)
    unexpected = len(r.failing_runs) - expected
    held = len(r.journals) - len(r.failing_journals)
    fuzz_ok = sum(1 for f in r.fuzz if f.get("ok"))
    lost = sum(x.unexpected_lost for x in r.runs)
    rows = [
        (("sweeps", str(len(r.runs)), str(len(r.runs) - len(r.failing_runs)), str(expected), str(unexpected)), FAILED if unexpected else FINE),
        (("chaos experiments", str(len(r.journals)), str(held), "-", str(len(r.journals) - held)), FAILED if held < len(r.journals) else FINE),
        (("fuzz runs", str(len(r.fuzz)), str(fuzz_ok), "-", str(len(r.fuzz) - fuzz_ok)), FAILED if fuzz_ok < len(r.fuzz) else FINE),
        (("faults injected", str(len(r.faults)), "-", "-", "-"), FINE),
        (("chunks lost where none was expected", str(lost), "-", "-", "-"), FAILED if lost else FINE),
    ]
    return Table(("what", "count", "held", "failed as set up", "failed"), rows)


def comparison(r: Report) -> Table:
    """This report against its baseline, metric by metric (ttg report --baseline)."""

    def number(x: float | None) -> str:
        return "-" if x is None else f"{x:,.3f}" if abs(x) < 100 else f"{x:,.0f}"

    rows = [
        ((d.metric, d.key, number(d.baseline), number(d.current), "-" if d.change is None else f"{100 * d.change:+.1f} %",
          "REGRESSION" if d.regression else ("only in one" if d.change is None and d.baseline != d.current else "")), FAILED if d.regression else FINE)
        for d in r.comparison
    ]  # fmt: skip
    return Table(("metric", "of", "baseline", "this report", "change", "flag"), rows)


def environment(r: Report) -> Table:
    return Table(("what", "version or value"), [((k, v), FINE) for k, v in r.environment.items()])


def runs(r: Report) -> Table:
    header: tuple[str, ...] = ("run", "scenario", "backend", "mode", "params", "workers", "µs/param", "wall s", "params/s", "chunks", "lost", "dup", "dead")
    header += ("checksum", "faults (recovery)", "files")
    rows = [
        ((x.run_id, x.scenario, x.backend, x.mode, f"{x.params:,}", str(x.workers), f"{x.cost_us:g}", f"{x.wall_s:.2f}", f"{x.params_per_s:,.0f}",
          f"{x.completed} / {x.expected}", str(x.lost), str(x.duplicates), str(x.dead_lettered), x.checksum_text, x.fault_text,
          " ".join(label for label, _ in x.files) or "-"), _state(x))
        for x in r.runs
    ]  # fmt: skip
    return Table(header, rows, frozenset({0}), link_col=len(header) - 1, links=[x.files for x in r.runs])


def faults(r: Report) -> Table:
    rows = [
        ((f["run_id"], f["backend"], f["kind"], str(f.get("target", "")), f"{f['at_s']:.2f}", seconds(f.get("healed_s")), seconds(f.get("recovered_s")),
          str(f.get("evidence") or f.get("note", ""))), FINE)
        for f in r.faults
    ]  # fmt: skip
    return Table(("run", "backend", "kind", "target", "at s", "healed s", "recovered s", "evidence"), rows, frozenset({0}))


def benchmarks(r: Report) -> Table:
    rows = [
        ((str(b.get("name", "-")), str(b.get("backend")), f"{b.get('params', 0):,}", f"{b.get('chunk', 0):,}", f"{b.get('cost_us', 0):g}",
          str(b.get("workers")),
          f"{b.get('params_per_s', 0):,.0f}", f"{b.get('pool_params_per_s', 0):,.0f}", f"{b['ratio_to_pool']:.3f}"), FINE)
        for b in r.benchmarks
    ]  # fmt: skip
    return Table(("benchmark", "backend", "params", "chunk", "µs/param", "workers", "TTG params/s", "Pool params/s", "ratio"), rows)


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def shared_ceiling(end_to_end: dict[str, Any], drain: dict[str, Any]) -> float:
    """The chunks per second a run's shared parts sustain when the workers have cores of their own: the lower of the
    coordinator's drain (bench/scale: it records a backlog with the workers idle) and the broker's limit at the CPU it
    spent per chunk in the end-to-end run (a whole run's CPU over its chunks: an upper bound on the cost)."""
    broker_limit = 1000 / end_to_end["broker_cpu_ms_per_chunk"] if end_to_end.get("broker_cpu_ms_per_chunk") else float("inf")
    return float(min(drain["chunks_per_s"], broker_limit))


def ceilings(r: Report) -> Table:
    """Per backend: the broker's raw ceiling for a chunk's operations, TTG's end to end on this machine, the
    coordinator's drain with the workers idle, and the shared parts' ceiling, each with its fraction of the raw one."""
    rows = []
    for backend in sorted({x["backend"] for x in r.scale}):
        raw, top, drain = (next((x for x in r.scale if x["backend"] == backend and x["kind"] == kind), None) for kind in ("ceiling", "ttg-ceiling", "drain"))
        raw_rate = raw["chunks_per_s"] if raw else None
        shared = shared_ceiling(top, drain) if top and drain else None
        cells = [backend, str(raw.get("how", "-")) if raw else "-", _num(raw_rate, ",.0f"), _num(top and top["chunks_per_s"], ",.0f")]
        cells += [_num(top["chunks_per_s"] / raw_rate if top and raw_rate else None, ".2f"), _num(drain and drain["chunks_per_s"], ",.0f")]
        rows.append(((*cells, _num(shared, ",.0f"), _num(shared / raw_rate if shared and raw_rate else None, ".2f")), FINE))
    header = ("backend", "raw ceiling measured with", "raw chunks/s", "TTG end to end (2 workers, no work)", "fraction")
    return Table((*header, "coordinator's drain, workers idle", "shared parts' ceiling", "fraction"), rows)


def scale(r: Report) -> Table:
    rows = [
        ((x["backend"], str(x["workers"]), f"{x['chunk_ms']:g} ms", _num(x.get("offered_chunks_per_s"), ",.0f"), _num(x["chunks_per_s"], ",.0f"),
          _num(x.get("of_offered"), ".2f"), f"{_num(x.get('lag_p50_s'), '.3f')} / {_num(x.get('lag_p99_s'), '.3f')}",
          _num(x.get("coordinator_cpu_ms_per_chunk"), ".3f"), _num(x.get("broker_cpu_ms_per_chunk"), ".3f"), _num(x.get("broker_rss_mb"), ".0f"),
          "ok" if x.get("ok") else f"FAILED (lost {x.get('lost')})"), FINE if x.get("ok") else FAILED)
        for x in r.scale if x["kind"] == "ttg"
    ]  # fmt: skip
    header = ("backend", "workers", "chunk", "offered chunks/s", "achieved", "of offered", "lag p50 / p99 s", "coordinator ms/chunk", "broker ms/chunk")
    return Table((*header, "broker MB", "verdict"), rows)


def journals(r: Report) -> Table:
    failing = {id(j) for j in r.failing_journals}
    rows = [
        ((j["title"], j["status"], f"{j['deviated']}{' (expected)' if j['expected_deviation'] else ''}", probes(j["before"]), probes(j["after"]),
          ", ".join(a["name"] for a in j["actions"])), FAILED if id(j) in failing else FINE)
        for j in r.journals
    ]  # fmt: skip
    return Table(("experiment", "status", "deviated", "steady state before", "steady state after", "actions"), rows)


def fuzz(r: Report) -> Table:
    rows = [
        ((str(f.get("backend")), str(f["seed"]), " ".join(f["faults"]), str(f["lost"]), str(f["duplicates"]), f"{f['dead_lettered']} / {f['expected_dead']}",
          ", ".join(seconds(x) for x in f["recovered_s"]) if f["recovered_s"] else "-", f"{f['wall_s']:.2f}",
          "ok" if f["ok"] else f"FAILED {f.get('error', '')}"), FINE if f["ok"] else FAILED)
        for f in r.fuzz
    ]  # fmt: skip
    return Table(("backend", "seed", "faults", "lost", "dup", "dead / expected", "recovery s", "wall s", "verdict"), rows)


def worker_kill(r: Report) -> Table:
    wk: dict[str, Any] = r.parity["worker_kill"]
    rows = [((mode, str(m["runs"]), str(m["ok"]), str(m["lost"]), f"{100 * m['lost_share']:.1f} %"), FINE) for mode, m in wk.items()]
    return Table(("mode", "runs", "runs ok", "chunks lost", "share lost"), rows)


def throughput(r: Report) -> Table:
    names = list(r.parity["backends"])
    rows = [((scale, *(f"{per[b]:,.0f}" if b in per else "-" for b in names)), FINE) for scale, per in r.parity["throughput"].items()]
    return Table(("scale", *names), rows)


@dataclass(frozen=True)
class Block:
    """One piece of a section: a paragraph, a table, a figure (a name in ``Report.images``) or a bulleted list."""

    text: str = ""
    table: Table | None = None
    image: str = ""
    bullets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]


def _figures(r: Report, *named: tuple[str, str]) -> list[Block]:
    """The figures among ``named`` (image name, caption) that were drawn: each is drawn only when its data exists."""
    return [Block(text=caption, image=name) for name, caption in named if name in r.images]


def _recovery_meanings(r: Report) -> Block:
    kinds = sorted({f["kind"] for f in r.faults if f.get("recovered_s") is not None and f["kind"] in KINDS})
    return Block(bullets=tuple(f"{k}: recovered {KINDS[k].recovery_means}." for k in kinds))


def sections(r: Report) -> list[Section]:
    """Every section of the report, in order; a section with nothing to show is left out."""
    t = all_tables(r)
    out = [Section("Summary", (Block(table=t["summary"]),))]
    if r.baseline:
        how = f"Against {r.baseline}: like with like only (same backend, scale and cost; same benchmark; same fault kind)."
        out.append(Section("Compared with the baseline", (Block(text=how), Block(table=t["comparison"]))))
    if t["failures"].rows:
        out.append(Section("Failures", (Block(text="Failures nobody set up, to look at first."), Block(table=t["failures"]))))
    if t["expected_failures"].rows:
        why = "Runs that failed as they were set up to, each with why; every value they did return matched the serial reference."
        out.append(Section("Expected failures", (Block(text=why), Block(table=t["expected_failures"]))))
    ran = f"{len(r.runs)} sweep(s), {len(r.benchmarks)} benchmark(s), {len(r.journals)} chaos experiment(s)."
    if r.skipped:
        ran += f" Skipped {len(r.skipped)} file(s) that were not inputs: {', '.join(r.skipped[:5])}"
    out.append(Section("What ran, on what", (Block(table=t["environment"]), Block(text=ran))))
    out.append(Section("Runs", (Block(table=t["runs"]), *_figures(r, ("throughput", "Throughput of fault-free runs, by scale and cost per parameter")))))
    if r.faults:
        panels = sorted(name for name in r.images if name.startswith("panels-"))
        figures = _figures(r, *((name, f"Progress of each run with a fault on {name.removeprefix('panels-')}") for name in panels))
        figures += _figures(r, ("recovery", "Recovery time by fault kind and backend"))
        out.append(Section("Faults and recovery", (*figures, _recovery_meanings(r), Block(table=t["faults"]))))
    if r.benchmarks:
        what = "Each benchmark runs the same sweep through TTG and multiprocessing.Pool in the same test; the ratio is throughput TTG / Pool."
        blocks = (Block(text=what), Block(table=t["benchmarks"]), *_figures(r, ("benchmark", "Ratio to Pool")))
        out.append(Section("Benchmark against multiprocessing.Pool", blocks))
    if r.scale:
        out.append(_scale(r, t))
    if r.journals:
        out.append(Section("Chaos experiments", (Block(table=t["journals"]),)))
    if r.fuzz:
        replay = "Each row is one sweep under a random fault schedule drawn from its seed; ttg chaos fuzz --backend B --seed S --runs 1 replays it."
        out.append(Section("Fuzz (ttg chaos fuzz)", (Block(text=replay), Block(table=t["fuzz"]))))
    out.append(_parity(r, t))
    return out


def _scale(r: Report, t: dict[str, Table]) -> Section:
    how = (
        "Many workers, one broker, one coordinator (bench/scale): workers run --algorithm sleep, so a hundred processes load the "
        "broker and the coordinator as a hundred machines would. Lag is from a worker having a chunk's values to the coordinator "
        "recording them. The raw ceiling is the broker driven by a minimal client doing one chunk's operations. End to end, "
        "TTG's workers share this machine's cores with the coordinator and the broker; the shared parts' ceiling is what those two "
        "sustain when the workers have cores of their own: the lower of the coordinator's drain of a backlog (its workers idle) and "
        "the broker's limit at the CPU it spent per chunk end to end, measured apart, not together."
    )
    commands = sorted({str(x.get("source", "")) for x in r.scale})
    blocks = [Block(text=how), Block(table=t["ceilings"]), *_figures(r, ("scale", "Chunks per second achieved and recording lag, by fleet size"))]
    blocks += [Block(table=t["scale"]), Block(text=f"From {', '.join(commands)}.")]
    return Section("Scale: many workers, one broker", tuple(blocks))


def _parity(r: Report, t: dict[str, Table]) -> Section:
    blocks = [Block(text="Static mode vs queue mode under a worker kill (the earlier system's Milestone 1 vs 2):")]
    blocks.append(Block(table=t["worker_kill"]) if r.parity["worker_kill"] else Block(text="No runs with a worker kill in these inputs."))
    blocks.append(Block(text="Redis vs RabbitMQ (Milestone 3): median parameters/s of fault-free queue runs, and runs ok per backend."))
    if r.parity["throughput"]:
        blocks.append(Block(table=t["throughput"]))
    blocks.append(Block(bullets=tuple(f"{b}: {m['ok']} of {m['runs']} runs ok" for b, m in r.parity["backends"].items())))
    return Section("Milestone parity", tuple(blocks))


def all_tables(r: Report) -> dict[str, Table]:
    """Every table, by the name the templates and the .docx writer place it under."""
    tables = (summary, comparison, failures, expected_failures, environment, runs, faults, benchmarks, ceilings, scale, journals, fuzz, worker_kill, throughput)
    return {f.__name__: f(r) for f in tables}
