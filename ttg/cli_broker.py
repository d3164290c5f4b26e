"""``ttg broker up|down|url``: a warm private broker that runs reuse (a part of :mod:`ttg.cli`, which registers it).

``ttg run`` without ``--broker-url`` starts a private broker for the run and stops it after (a RabbitMQ node boots in
seconds); a warm one is started once and every run given its URL starts sweeping at once.
"""

from __future__ import annotations

import logging
import time

import click
from rich.console import Console

from ttg import backends, logs

err = Console(stderr=True)

_BACKEND = click.option(
    "--backend", type=click.Choice(backends.NAMES), default=backends.DEFAULT, show_default=True, help="Which broker. [env TTG_BACKEND]", envvar="TTG_BACKEND"
)


@click.group()
def broker() -> None:
    """A warm private broker for many runs: `export TTG_BROKER_URL=$(ttg broker up)`, then `ttg run ...`."""


@broker.command()
@_BACKEND
@click.option(
    "--management/--no-management", default=True, show_default=True, help="RabbitMQ's management plugin (ttg status reads it; the node boots faster without)."
)
def up(backend: str, management: bool) -> int:
    """Start this backend's warm private broker (or find it running) and print its URL on stdout.

    Private: it listens on 127.0.0.1 only and requires a generated password, which the URL carries (keep it to
    yourself: it is also in a 0600 file under $TTG_STATE_DIR, default ~/.local/state/ttg). It outlives this command;
    `ttg broker down` stops it and removes its data."""
    from ttg.servers.warm import up as start

    logs.setup("text", logging.WARNING)
    t0 = time.monotonic()
    warm, started = start(backend, management=management)
    if started:
        err.print(f"{backend} broker up in {time.monotonic() - t0:.2f} s (pid {warm.pid}); stop it with: ttg broker down --backend {backend}")
    else:
        err.print(f"{backend} broker already up (pid {warm.pid})")
    click.echo(warm.url)
    return 0


@broker.command()
@_BACKEND
def down(backend: str) -> int:
    """Stop this backend's warm private broker and remove its data (every run on it goes with it)."""
    from ttg.servers.warm import down as stop

    err.print(f"{backend} broker stopped" if stop(backend) else f"no {backend} broker was up")
    return 0


@broker.command()
@_BACKEND
@click.option("--management", is_flag=True, help="The management API's URL instead (RabbitMQ): for ttg status --management-url.")
def url(backend: str, management: bool) -> int:
    """Print the URL of this backend's warm broker; exit 3 when none is up."""
    from ttg.errors import ServerStartError
    from ttg.servers.warm import WarmBroker

    warm = WarmBroker.load(backend)
    if warm is None:
        raise ServerStartError(f"no warm {backend} broker is up; start one with: ttg broker up --backend {backend}")
    if management:
        if warm.management_url is None:
            raise ServerStartError(f"the warm {backend} broker has no management API (started with --no-management, or {backend} has none)")
        click.echo(warm.management_url)
        return 0
    click.echo(warm.url)
    return 0
