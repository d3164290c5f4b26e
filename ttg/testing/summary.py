"""What each scenario proved: one row per sweep a test ran through ``run_sweep``, printed at the end of the session
and attached to the test's JUnit XML properties (``record_property``), so CI systems show the figures, not only
pass or fail."""

from __future__ import annotations

import io
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ttg.record import RunRecord
from ttg.report.model import scale_name


@dataclass
class Row:
    scenario: str
    record: RunRecord
    test_passed: bool | None = None  # None until the test's call phase has reported


def _test_name(nodeid: str) -> Text:
    """``matrix_cell[redis-small-kill-worker]``: plain text (rich would take ``[...]`` for markup and drop it)."""
    return Text(nodeid.split("::", 1)[-1].removeprefix("test_"))


def recovery_text(record: RunRecord) -> str:
    """Each fault's recovery: "kill-worker 1.93 s", or why there is none ("poison-chunk -")."""
    parts = [f"{f.kind} {f.recovered_s:.2f} s" if f.recovered_s is not None else f"{f.kind} -" for f in record.faults]
    return ", ".join(parts) or "-"


def verdict_text(row: Row) -> str:
    v = row.record.verdict
    if v.ok:
        return "ok"
    # A failed verdict the test asserted (static mode's loss, a poisoned chunk) is the scenario's point, not a failure.
    return "FAILED (asserted)" if row.test_passed else "FAILED"


def properties(record: RunRecord) -> list[tuple[str, object]]:
    """The figures as JUnit XML properties of the test that ran the sweep (several sweeps: several of each)."""
    v = record.verdict
    return [
        ("ttg_run_id", record.run_id),
        ("ttg_backend", record.backend),
        ("ttg_params", record.params),
        ("ttg_chunk", record.chunk_size),
        ("ttg_faults", ",".join(f.kind for f in record.faults) or "none"),
        ("ttg_lost", v.lost),
        ("ttg_duplicates", v.duplicates),
        ("ttg_dead_lettered", v.dead_lettered),
        ("ttg_recovery", recovery_text(record)),
        ("ttg_params_per_s", round(record.params_per_s)),
        ("ttg_verdict", "ok" if v.ok else "failed"),
    ]


def table(rows: list[Row], width: int = 160) -> str:
    """The session's sweeps as a table, rendered for a terminal ``width`` columns wide."""
    t = Table(title=f"TTG sweeps: what {len(rows)} scenario run(s) proved", title_justify="left", expand=False)
    t.add_column("scenario", no_wrap=True, overflow="ellipsis", max_width=64)
    for col, justify in (("backend", "left"), ("params/chunk", "right"), ("faults", "left"), ("lost", "right"), ("dup", "right"),
                         ("dead-lettered", "right"), ("recovery", "left"), ("params/s", "right"), ("verdict", "left")):  # fmt: skip
        t.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in rows:
        r, v = row.record, row.record.verdict
        t.add_row(
            _test_name(row.scenario),
            r.backend,
            f"{scale_name(r.params)}/{scale_name(r.chunk_size)}",
            ", ".join(f.kind for f in r.faults) or "none",
            str(v.lost),
            str(v.duplicates),
            str(v.dead_lettered),
            recovery_text(r),
            f"{r.params_per_s:,.0f}",
            verdict_text(row),
        )
    lost = sum(row.record.verdict.lost for row in rows if not row.test_passed)
    faults = sum(len(row.record.faults) for row in rows)
    unexpected = sum(1 for row in rows if not row.record.verdict.ok and not row.test_passed)
    t.caption = f"{faults} fault(s) injected; {unexpected} unexpected failed verdict(s); chunks lost where none was expected: {lost}"
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, soft_wrap=False).print(t)
    return buf.getvalue()


@dataclass(frozen=True)
class PoolRatio:
    """One benchmark's comparison with ``multiprocessing.Pool``, measured side by side in the same test."""

    benchmark: str
    backend: str
    params: int
    chunk: int
    cost_us: float
    ttg_s: float
    pool_s: float

    @property
    def ratio(self) -> float:
        """Throughput TTG / Pool: above 1, TTG is faster."""
        return self.pool_s / self.ttg_s


def pool_table(rows: list[PoolRatio], width: int = 160) -> str:
    """The session's benchmarks as their ratio to Pool, the figure pytest-benchmark's own table does not show."""
    t = Table(title="TTG against multiprocessing.Pool (same sweep, same test; median sweep times)", title_justify="left", expand=False)
    for col in ("benchmark", "backend", "params/chunk", "cost/param", "TTG s", "Pool s", "TTG/Pool"):
        t.add_column(col, justify="left" if col in ("benchmark", "backend") else "right", overflow="fold")
    for r in rows:
        size, cost = f"{scale_name(r.params)}/{scale_name(r.chunk)}", f"{r.cost_us:g} µs"
        t.add_row(_test_name(r.benchmark), r.backend, size, cost, f"{r.ttg_s:.3f}", f"{r.pool_s:.3f}", f"{r.ratio:.2f}")
    t.caption = "TTG/Pool is throughput: above 1.00 TTG is faster. Speed is recorded, never asserted: a shared host is noisy."
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, soft_wrap=False).print(t)
    return buf.getvalue()
