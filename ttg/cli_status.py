"""``ttg status``: the runs on a broker, once or as a live view (a part of :mod:`ttg.cli`, which registers it)."""

from __future__ import annotations

import json
import logging
import time
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
@click.option("--watch", is_flag=True, help="Keep a live view with throughput and ETA until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(0.2, 60), default=1.0, show_default=True, help="Seconds between refreshes with --watch.")
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON on stdout.")
def status(run_id: str | None, management_url: str | None, watch: bool, interval: float, as_json: bool, **options: Any) -> int:
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
    with Live(console=err, auto_refresh=False) as live:
        try:
            while True:
                runs = read_status(settings.broker_url, run_id=run_id, management_url=management_url)
                for r in runs:
                    rates.setdefault(r.run_id, Rate()).update(r)
                live.update(status_table(runs, rates, settings.broker_url), refresh=True)
                time.sleep(interval)
        except KeyboardInterrupt:
            return 0


def status_table(runs: list[Any], rates: dict[str, Any], url: str) -> Table:
    table = Table(title=f"TTG runs on {redact_url(url)}")
    for col in ("run", "state", "unit", "planned", "completed", "queued", "in flight", "consumers", "dead-lettered", "rejected", "rate /s", "ETA"):
        table.add_column(col, justify="left" if col in ("run", "state", "unit") else "right")
    if not runs:
        table.caption = "no TTG runs on this broker"
    for r in runs:
        rate = rates.get(r.run_id)
        per_s = f"{rate.per_s:,.1f}" if rate is not None and rate.per_s is not None else "-"
        eta = rate.eta_s(r) if rate is not None else None
        state = "[yellow]ended" if r.ended else ("[green]running" if r.consumers else "waiting")
        table.add_row(
            r.run_id,
            state,
            r.unit,
            "-" if r.planned is None else f"{r.planned:,}",
            "-" if r.completed is None else f"{r.completed:,}",
            f"{r.queued:,}",
            f"{r.inflight:,}",
            str(r.consumers),
            f"[red]{r.dead_lettered:,}" if r.dead_lettered else "0",
            f"{r.rejected:,}",
            per_s,
            "-" if eta is None else f"{eta:,.0f} s",
        )
    return table
