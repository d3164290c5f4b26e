"""``ttg runs``: what to do with a run that exists (a part of :mod:`ttg.cli`, which registers it).

A run id is a lease: ``ttg run`` refuses one whose state exists, so discarding a run is an
explicit command, never a side effect of starting another.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import click
from rich.console import Console

from ttg import logs
from ttg.config import check_run_id, load_sweep_settings, passed_options, redact_url

err = Console(stderr=True)


@click.group()
def runs() -> None:
    """Runs that exist: discard one (`ttg run --resume` continues one)."""


@runs.command()
@click.argument("run_id")
@click.option("--broker-url", help="The broker that holds the run (redis://… or amqp://…). [env TTG_BROKER_URL]")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Where its run directory is. [env TTG_OUT; default runs]")
def delete(run_id: str, broker_url: str | None, out: Path | None) -> int:
    """Discard run RUN_ID: its keys or queues on the broker and its run directory (results included).

    Refused while a coordinator is running it.
    """
    from ttg.broker import open_broker
    from ttg.config import load_run_config
    from ttg.lease import new_owner

    logs.setup("text", logging.WARNING)
    run_id = check_run_id(run_id)
    settings = load_sweep_settings(passed_options(broker_url=broker_url))
    run_dir = load_run_config(passed_options(out=out)).out / run_id
    removed: list[str] = []
    if settings.broker_url:
        broker = open_broker(settings.broker_url, run_id)
        try:
            broker.claim(new_owner())  # refused (exit 2) while a live coordinator holds the run
            if broker.has_state():
                broker.delete_run()
                removed.append(f"its state on {redact_url(settings.broker_url)}")
        finally:
            broker.close()
    if run_dir.exists():
        shutil.rmtree(run_dir)
        removed.append(str(run_dir))
    if removed:
        err.print(f"run {run_id} deleted: {', '.join(removed)}", highlight=False)
    else:
        where = [str(run_dir)] + ([redact_url(settings.broker_url) or ""] if settings.broker_url else [])
        err.print(f"run {run_id}: nothing to delete in {' or on '.join(where)}", highlight=False)
    return 0
