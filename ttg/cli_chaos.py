"""``ttg chaos``: the chaos commands of the command line (a part of :mod:`ttg.cli`, which registers them)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ttg import backends, logs

err = Console(stderr=True)
if not err.is_terminal:
    err.width = max(err.width, 160)  # a fuzz table in a CI log or a file: keep its rows on one line each


@click.group()
def chaos() -> None:
    """Chaos testing: random fault schedules (the experiments themselves run with `chaos run experiments/…`)."""


@chaos.command()
@click.option("--backend", type=click.Choice(backends.NAMES), default=backends.DEFAULT, show_default=True, help="Broker backend.")
@click.option("--broker-url", default=None, help="Use this broker (no broker faults are drawn then) instead of a private one.")
@click.option("--runs", type=click.IntRange(1, 10_000), default=20, show_default=True, help="Sweeps to run, each with its own schedule.")
@click.option("--seed", type=click.IntRange(0, 2**31), default=0, show_default=True, help="Run i uses seed SEED+i; replay a row with --seed S --runs 1.")
@click.option("--params", type=click.IntRange(1), default=200_000, show_default=True, help="Parameters per sweep.")
@click.option("--chunk", type=click.IntRange(1), default=2_000, show_default=True, help="Parameters per chunk.")
@click.option("--workers", type=click.IntRange(2, 64), default=3, show_default=True, help="Workers per sweep (worker faults always leave one).")
@click.option("--cost-us", type=click.FloatRange(0), default=20.0, show_default=True, help="Simulated work per parameter, so faults land mid-sweep.")
@click.option("--max-faults", type=click.IntRange(1, 10), default=3, show_default=True, help="Faults per schedule, at most.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/fuzz"), show_default=True, help="Directory for the run directories.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON on stdout.")
def fuzz(as_json: bool, **options: Any) -> int:
    """Run sweeps under seeded random fault schedules; any loss is printed with the seed that replays it."""
    from ttg.chaos.fuzz import FuzzRow, FuzzSettings, summarise
    from ttg.chaos.fuzz import fuzz as run_fuzz

    settings = FuzzSettings(**options)
    logs.setup("text", logging.ERROR)  # the broker faults make the coordinator retry on purpose: no warning per retry

    def show(row: FuzzRow) -> None:
        rec = ", ".join("-" if r is None else f"{r:.2f}" for r in row.recovered_s) or "-"
        verdict = "[green]ok" if row.ok else f"[red]FAILED[/red] {row.why}"
        err.print(f"seed {row.seed}: {' '.join(row.faults)} -> lost {row.lost}, dup {row.duplicates}, dead {row.dead_lettered}, recovery {rec} s: {verdict}")

    rows = run_fuzz(settings, on_row=show)
    err.print(fuzz_table(rows, settings.backend))
    for table in summary_tables(summarise(rows), settings.backend):
        err.print(table)
    failed = [r for r in rows if not r.ok]
    for r in failed:
        err.print(f"[red]seed {r.seed} failed[/red]; replay: ttg chaos fuzz --backend {settings.backend} --seed {r.seed} --runs 1")
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
    return 1 if failed else 0


def fuzz_table(rows: list[Any], backend: str) -> Table:
    table = Table(title=f"ttg chaos fuzz: {len(rows)} runs on {backend}, {sum(r.ok for r in rows)} ok")
    for col in ("seed", "faults", "lost", "duplicates", "dead-lettered", "recovery s", "wall s", "verdict"):
        table.add_column(col, justify="left" if col in ("faults", "verdict") else "right")
    for r in rows:
        table.add_row(
            str(r.seed),
            "\n".join(r.faults),
            f"[red]{r.lost}" if r.lost else "0",
            str(r.duplicates),
            f"{r.dead_lettered}/{r.expected_dead}",
            ", ".join("-" if x is None else f"{x:.2f}" for x in r.recovered_s) or "-",
            f"{r.wall_s:.2f}",
            "[green]ok" if r.ok else f"[red]FAILED {r.why}"[:80],
        )
    return table


def summary_tables(summary: dict[str, Any], backend: str) -> list[Table]:
    """The soak's two tables: the runs' verdicts in one row, and recovery per fault kind."""
    head = Table(title=f"fuzz summary on {backend}")
    for col in ("runs", "ok", "lost", "duplicates", "dead-lettered / expected", "not injected", "wall s"):
        head.add_column(col, justify="right")
    head.add_row(
        str(summary["runs"]),
        str(summary["ok"]),
        str(summary["lost"]),
        str(summary["duplicates"]),
        f"{summary['dead_lettered']} / {summary['expected_dead']}",
        str(summary["not_injected"]),
        f"{summary['wall_s']:.0f}",
    )
    kinds = Table(title=f"recovery per fault kind on {backend} (seconds)")
    for col in ("fault", "drawn", "recoverable", "not recovered", "p50", "p95", "max"):
        kinds.add_column(col, justify="left" if col == "fault" else "right")
    for kind, drawn in summary["faults_drawn"].items():
        rec = summary["recovery"].get(kind)

        def s_(x: float | None) -> str:
            return "-" if x is None else f"{x:.2f}"

        if rec is None:
            kinds.add_row(kind, str(drawn), "-", "-", "-", "-", "-")
        else:
            kinds.add_row(kind, str(drawn), str(rec["faults"]), str(rec["not_recovered"]), s_(rec["p50_s"]), s_(rec["p95_s"]), s_(rec["max_s"]))
    return [head, kinds]
