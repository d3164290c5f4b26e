"""``ttg status``: the runs on a broker, once or as a live view (a part of :mod:`ttg.cli`, which registers it)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ttg import backends, logs
from ttg.config import backend_for_url, load_management_url, load_sweep_settings, passed_options, redact_url
from ttg.errors import ConfigError

err = Console(stderr=True)


@click.command()
@click.option("--backend", help=f"{' or '.join(backends.NAMES)}; only checks --broker-url's scheme. [env TTG_BACKEND]")
@click.option("--broker-url", help="The broker to inspect (redis://… or amqp://…). [env TTG_BROKER_URL]")
@click.option("--run-id", help="Show only this run.")
@click.option("--management-url", help="RabbitMQ management API (default: the broker's host, port 15672, same user). [env TTG_MANAGEMENT_URL]")
@click.option("--watch", is_flag=True, help="Keep a live view with throughput and ETA until Ctrl-C; a run that ends stays on screen.")
@click.option("--interval", type=click.FloatRange(0.2, 60), default=1.0, show_default=True, help="Seconds between refreshes with --watch.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs"),
    show_default=True,
    help="Where ttg run writes run records (its --out): the verdict of a run that ended while watched is read there.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON on stdout.")
def status(run_id: str | None, management_url: str | None, watch: bool, interval: float, out: Path, as_json: bool, **options: Any) -> int:
    """Queue depth, in-flight, consumers and dead letters of the runs on a broker."""
    from dataclasses import asdict

    from rich.live import Live

    from ttg.status import Rate, read_status

    settings = load_sweep_settings(passed_options(**options))
    if not settings.broker_url:
        raise ConfigError("ttg status needs a broker; pass --broker-url or set TTG_BROKER_URL (a private broker lives only as long as its run)")
    if options.get("backend") and backend_for_url(settings.broker_url) != settings.backend:
        raise ConfigError(f"--broker-url {redact_url(settings.broker_url)} is not a {settings.backend} URL")
    management_url = load_management_url(management_url)
    logs.setup("text", logging.WARNING)
    if not watch:
        runs = read_status(settings.broker_url, run_id=run_id, management_url=management_url)
        if as_json:
            click.echo(json.dumps([asdict(r) for r in runs], indent=2))
        else:
            err.print(status_table(runs, {}, settings.broker_url))
        return 0
    rates: dict[str, Rate] = {}
    seen: dict[str, Any] = {}  # every run's last snapshot: one no longer on the broker stays on screen with its verdict
    verdicts: dict[str, str] = {}  # of runs gone whose record was found (read once)
    with Live(console=err, auto_refresh=False) as live:
        try:
            while True:
                runs = read_status(settings.broker_url, run_id=run_id, management_url=management_url)
                for r in runs:
                    rates.setdefault(r.run_id, Rate()).update(r)
                    verdicts.pop(r.run_id, None)  # (resumed)
                seen.update((r.run_id, r) for r in runs)
                on_broker = {r.run_id for r in runs}
                gone = [snapshot for k, snapshot in seen.items() if k not in on_broker]
                ended = {r.run_id: verdicts.get(r.run_id) or ended_verdict(out, r.run_id) for r in gone}
                verdicts.update((k, v) for k, v in ended.items() if not v.startswith("removed"))
                live.update(status_table([*runs, *gone], rates, settings.broker_url, ended), refresh=True)
                time.sleep(interval)
        except KeyboardInterrupt:
            return 0


def ended_verdict(out: Path, run_id: str) -> str:
    """The verdict of a run no longer on the broker, from its record under ``out`` (the broker keeps none: a run is
    removed once every chunk is accounted for)."""
    try:
        rec = json.loads((out / run_id / "record.json").read_text())
    except (OSError, ValueError):
        return f"removed; no record in {out}/"
    v = rec.get("verdict", {})
    return "ok" if v.get("ok") else f"FAILED: lost {v.get('lost', '?')}, dead {v.get('dead_lettered', '?')}"


def _n(x: int) -> str:
    """A count in at most six characters: 99,999 exactly, then 128K, 9.96M (80 columns hold ten columns)."""
    if x < 100_000:
        return f"{x:,}"
    for div, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "K")):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return str(x)


def _done(r: Any) -> tuple[str, str]:
    """% done and completed/planned (Redis counts chunks; RabbitMQ's broker counts neither: "-")."""
    if r.planned and r.completed is not None:
        return f"{100 * r.completed / r.planned:.0f}%", f"{_n(r.completed)}/{_n(r.planned)}"
    return "-", "-" if r.completed is None else _n(r.completed)


MOST_WORKER_ROWS = 16  # per run; the rest are summed in one row


def _worker_rows(table: Table, workers: list[Any]) -> None:
    """A row per worker under its run: chunks it completed, what it holds, and how long since the broker heard from it."""
    shown, rest = workers[:MOST_WORKER_ROWS], workers[MOST_WORKER_ROWS:]
    for w in shown:
        seen = "left" if w.idle_s is None else f"idle {w.idle_s:.0f}s"
        table.add_row(f" {w.name}", f"[dim]{seen}", "", "-" if w.done is None else _n(w.done), "", _n(w.inflight), "", "", "", "", style="dim")
    if rest:
        done = sum(w.done or 0 for w in rest)
        table.add_row(f" +{len(rest)} more", "", "", _n(done), "", _n(sum(w.inflight for w in rest)), "", "", "", "", style="dim")


def status_table(runs: list[Any], rates: dict[str, Any], url: str, ended: dict[str, str] | None = None) -> Table:
    """One row per run, laid out to fit 80 columns; ``ended``: verdicts of runs gone from the broker, by run id."""
    ended = ended or {}
    # No vertical rules and one space between columns: ten columns fit 80 without cutting a cell.
    table = Table(
        title=f"TTG runs on {redact_url(url)}", title_justify="left", caption_justify="left", box=None, padding=(0, 1, 0, 0), header_style="bold underline"
    )
    for col in ("run", "state", "done", "chunks", "queued", "flight", "wkrs", "dead", "rate/s", "ETA"):
        table.add_column(col, justify="left" if col in ("run", "state") else "right", no_wrap=True)
    notes = []
    if not runs:
        notes.append("no TTG runs on this broker")
    if any(r.unit != "chunks" for r in runs):
        notes.append("RabbitMQ counts task messages (up to 128 chunks each) in queued and flight")
    rejected = sum(r.rejected for r in runs)
    if rejected:
        notes.append(f"{rejected:,} message(s) rejected as not tasks of a run")
    for r in runs:
        rate = rates.get(r.run_id)
        per_s = _n(round(rate.per_s)) if rate is not None and rate.per_s is not None else "-"
        eta = rate.eta_s(r) if rate is not None else None
        if r.run_id in ended:
            verdict = ended[r.run_id]
            state = "[green]ok" if verdict == "ok" else "[red]FAILED" if verdict.startswith("FAILED") else "removed"
            if verdict != "ok":
                notes.append(f"{r.run_id}: {verdict}")
            per_s, eta = "-", None
        else:
            state = "[yellow]ended" if r.ended else ("[green]running" if r.consumers else "waiting")
        pct, chunks = _done(r)
        table.add_row(
            r.run_id,
            state,
            pct,
            chunks,
            _n(r.queued),
            _n(r.inflight),
            str(r.consumers),
            f"[red]{_n(r.dead_lettered)}" if r.dead_lettered else "0",
            per_s,
            "-" if eta is None else f"{eta:,.0f}s",
        )
        if r.run_id not in ended:
            _worker_rows(table, r.workers)
    table.caption = "; ".join(notes) or None
    return table
