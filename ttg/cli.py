"""The ``ttg`` command line. The only module that prints.

Exit status: 0 the verdict is ok; 1 it is not; 2 a usage or configuration error
(one line, no traceback); 3 the broker or workers could not be run;
4 an internal error (a bug: the traceback is printed).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ttg import __version__, backends, logs
from ttg.cli_broker import broker
from ttg.cli_chaos import chaos
from ttg.cli_k8s import k8s
from ttg.cli_runs import runs
from ttg.cli_status import status
from ttg.cli_types import Setting
from ttg.config import RunConfig, check_run_id, load_run_config, passed_options, redact_url
from ttg.errors import ConfigError, TTGError
from ttg.faults import KNOWN_FAULTS
from ttg.record import RunRecord

if TYPE_CHECKING:
    from ttg.collector import ProgressFn  # the run machinery is imported only by the commands that run sweeps

err = Console(stderr=True)
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERNAL = 4


def _sweep_options(fn: Any) -> Any:
    for opt in reversed(
        [
            click.option("--backend", type=Setting("backend"), help=f"Broker backend. [env TTG_BACKEND; default {backends.DEFAULT}]"),
            click.option(
                "--broker-url",
                help="Use this broker instead of starting a private one (redis://HOST:PORT/DB or amqp://USER:PASS@HOST:PORT/VHOST). [env TTG_BROKER_URL]",
            ),
            click.option(
                "--algorithm",
                help="'demo', 'sleep' (the demo's values, --cost-us slept, not spun: many workers on few cores) or package.module:function. "
                "[env TTG_ALGORITHM; default demo]",
            ),
            click.option("--cost-us", type=Setting("cost_us"), help="Simulated CPU work per parameter, in microseconds. [env TTG_COST_US; default 0]"),
            click.option(
                "--max-deliveries", type=Setting("max_deliveries"), help="Deliveries before a chunk is dead-lettered. [env TTG_MAX_DELIVERIES; default 3]"
            ),
            click.option(
                "--reclaim-after",
                "reclaim_after_s",
                type=Setting("reclaim_after_s"),
                help="Seconds within which a crashed worker's chunk is taken over. [env TTG_RECLAIM_AFTER_S; default 3]",
            ),
            click.option(
                "--prefetch",
                type=Setting("prefetch"),
                help="Task messages (RabbitMQ, default 2) or chunks (Redis, default 64) a worker may hold ahead. [env TTG_PREFETCH]",
            ),
            click.option(
                "--grid", multiple=True, help="Grid axis NAME=v1,v2,... or NAME=start:stop:count; repeatable; the product sets N. [env TTG_GRID, ';'-separated]"
            ),
            click.option("--log-format", type=Setting("log_format"), help="Worker log format. [env TTG_LOG_FORMAT; default text]"),
            click.option(
                "--log-level",
                type=Setting("log_level"),
                help="Worker log level; per-chunk events (taken, finished) are debug. [env TTG_LOG_LEVEL; default info]",
            ),
        ]
    ):
        fn = opt(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="ttg")
def cli() -> None:
    """Run parameter sweeps across workers through a broker, and prove nothing was lost."""


@cli.command()
@_sweep_options
@click.option("--params", type=Setting("params"), help="Number of parameters N (indices 0..N-1). [env TTG_PARAMS; default 1,000,000]")
@click.option("--chunk", type=Setting("chunk"), help="Parameters per chunk. [env TTG_CHUNK; default 10,000]")
@click.option("--workers", type=Setting("workers"), help="Worker processes. [env TTG_WORKERS; default 2]")
@click.option("--mode", type=Setting("mode"), help="queue (default) or static (fixed ranges, no queue: shows what a crash loses). [env TTG_MODE]")
@click.option(
    "--fault",
    "faults",
    multiple=True,
    help=(
        f"Fault KIND@P%[:Ds][/TARGET], e.g. kill-worker@30%, pause-broker@30%:5s, partition-broker@30%:3s/w1. KIND: {', '.join(KNOWN_FAULTS)} "
        "(coordinator faults need --broker-url; then --resume). TARGET: one, N, P%, random, all or a worker id. Repeatable."
    ),
)
# (typed PATH in --help, not checked by click: preflight's one-line error names what is wrong with it)
@click.option("--out", type=click.Path(path_type=Path), help="Directory for run directories. [env TTG_OUT; default runs]")
@click.option("--verify", type=Setting("verify", "[full|off|sample:N]"), help="full, sample:N or off. [env TTG_VERIFY; default full]")
@click.option("--persistence/--no-persistence", default=None, help="Private Redis with AOF (fsync always). [env TTG_PERSISTENCE]")
@click.option("--timeout", "timeout_s", type=Setting("timeout_s"), help="Give up collecting after this many seconds. [env TTG_TIMEOUT_S; default 3600]")
@click.option("--seed", type=Setting("seed"), help="Seed of the verification sample. [env TTG_SEED; default 0]")
@click.option(
    "--runtime", type=Setting("runtime"), help="local (worker processes) or kubernetes (a worker Job; the coordinator runs in the cluster). [env TTG_RUNTIME]"
)
@click.option("--namespace", help="Kubernetes namespace of the run. [env TTG_NAMESPACE; default ttg]")
@click.option("--image", help="Kubernetes: the TTG image (make image). [env TTG_IMAGE; default ttg-worker:<version>]")
@click.option(
    "--broker-wait",
    "broker_wait_s",
    type=Setting("broker_wait_s"),
    help="Seconds to keep retrying a given broker unreachable at the start. [env TTG_BROKER_WAIT_S; default 0]",
)
@click.option(
    "--results-via",
    type=Setting("results_via"),
    help=(
        "How result values reach the coordinator: file (a staging file beside the run, receipts through the broker), broker, "
        "or auto (file for local workers, broker for pods). [env TTG_RESULTS_VIA]"
    ),
)
@click.option("--in-cluster", is_flag=True, hidden=True, help="This process is the in-cluster coordinator of a Kubernetes run (the manifests pass it).")
@click.option("--run-id", "run_id", default=None, help="The run's id (default: a new random one).")
@click.option(
    "--resume", is_flag=True, help="Continue run --run-id from the ledger a killed coordinator left in --out (start it if there is none); needs --broker-url."
)
@click.option("--json", "as_json", is_flag=True, help="Print the run record as JSON on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Log the coordinator's steps to stderr.")
def run(as_json: bool, verbose: bool, run_id: str | None, resume: bool, in_cluster: bool, **options: Any) -> int:
    """Run one sweep and end with a verdict."""
    from ttg.collector import Progress as RunProgress
    from ttg.run import PROGRESS_LINE_EVERY_S, new_run_id, preflight

    if in_cluster and options.get("runtime") != "kubernetes":
        raise ConfigError("--in-cluster is for the coordinator pod of a Kubernetes run; it needs --runtime kubernetes")
    # In a pod, a line every second: the launcher and the chaos experiments follow the run through them.
    line_every_s = 1.0 if in_cluster else PROGRESS_LINE_EVERY_S

    cfg = load_run_config(passed_options(**options))
    if resume and not (run_id and cfg.sweep.broker_url):
        raise ConfigError("--resume continues a run on the broker that holds it: pass --run-id and --broker-url (a private broker dies with its coordinator)")
    run_id = check_run_id(run_id) if run_id is not None else new_run_id()
    if cfg.runtime == "local":  # on Kubernetes the algorithm and --out live in the image and the pod
        preflight(cfg, run_id)
    logs.setup("text", logging.INFO if verbose else logging.WARNING)
    columns = [
        TextColumn("[bold]sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks"),
        TextColumn("{task.fields[rate]:>14} params/s"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=err, transient=False, disable=not err.is_terminal and as_json) as bar:
        task = bar.add_task("sweep", total=None, rate="-")

        last_line = [0.0]

        def on_progress(p: RunProgress) -> None:
            rate = f"{p.params_done / p.elapsed_s:,.0f}" if p.elapsed_s > 0 else "-"
            bar.update(task, total=p.chunks_total, completed=p.chunks_done, rate=rate)
            if not err.is_terminal and (p.elapsed_s - last_line[0] >= line_every_s or p.chunks_done == p.chunks_total):
                # No live bar in a log (a pod, CI): a plain line every few seconds, which `--runtime kubernetes` streams back.
                last_line[0] = p.elapsed_s
                err.print(f"progress {p.chunks_done}/{p.chunks_total} chunks, {rate} params/s, {p.elapsed_s:.1f} s", highlight=False)

        record = _run_somewhere(cfg, run_id, on_progress, resume, in_cluster)
    err.print(summary_table(record))
    if as_json:
        click.echo(json.dumps(record.to_dict(), indent=2))
    else:
        err.print(f"run record: {record.run_dir}/record.json")
    return 0 if record.verdict.ok else 1


@cli.command()
@click.argument("inputs", type=click.Path(path_type=Path))
@click.option("--format", "formats", default="md,docx,html", show_default=True, help="Comma-separated: md, docx, html.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/out"), show_default=True, help="Directory for report.* and img/.")
@click.option("--title", default="TTG results", show_default=True, help="The report's title.")
@click.option(
    "--baseline",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Inputs of an earlier report to compare with: per-metric changes, regressions flagged.",
)
@click.option(
    "--max-regression",
    type=click.FloatRange(0, 1000),
    default=10.0,
    show_default=True,
    help="Percent a metric may move the wrong way before it is a regression (chunks lost: any).",
)
def report(inputs: Path, formats: str, out: Path, title: str, baseline: Path | None, max_regression: float) -> int:
    """Render a results report from run records, benchmark JSON and chaos journals found under INPUTS.

    Exit status 1 when the report's verdict is FAILED (a run, experiment or fuzz run failed unexpectedly, or a
    regression against --baseline); the report is written either way."""
    from ttg.report.render import make_report

    logs.setup("text", logging.WARNING)
    chosen = tuple(f.strip() for f in formats.split(",") if f.strip())
    made, written = make_report(inputs, out, chosen, title, baseline=baseline, max_regression=max_regression / 100)
    for path in written:
        click.echo(str(path))
    if made.unexpected_failures:
        err.print(f"Verdict: {made.verdict}")
        return 1
    return 0


def _run_somewhere(cfg: RunConfig, run_id: str, on_progress: ProgressFn, resume: bool = False, in_cluster: bool = False) -> RunRecord:
    """Locally; as the in-cluster coordinator of a Kubernetes run (the manifests say so with --in-cluster, not the
    environment: a user's own pod may run ``ttg run --runtime kubernetes`` to launch one); or by deploying one."""
    from ttg.run import execute

    if cfg.runtime == "local":
        return execute(cfg, on_progress=on_progress, run_id=run_id, resume=resume, own_process=True)
    if in_cluster:
        from ttg.k8s.cluster import connect
        from ttg.k8s.records import save_record
        from ttg.k8s.runtime import KubernetesRuntime

        api = connect(in_cluster=True)
        runtime = KubernetesRuntime(api, cfg.namespace, run_id)
        record = execute(cfg, on_progress=on_progress, run_id=run_id, runtime=runtime, resume=resume, own_process=True)
        save_record(api, cfg.namespace, record)  # durable: the launcher reads it after the fact, whatever became of the log
        return record
    from ttg.k8s.launch import launch

    err.print(f"deploying run {run_id} to namespace {cfg.namespace}; the coordinator runs in the cluster and its log follows")
    return launch(cfg, run_id, on_line=lambda line: err.print(f"[dim]coordinator[/dim] {line}", highlight=False))


def summary_table(record: RunRecord) -> Table:
    v = record.verdict
    table = Table(title=f"TTG run {record.run_id} — {'[green]OK' if v.ok else '[red]FAILED'}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("backend / mode", f"{record.backend} / {record.mode}, {record.workers} workers ({record.runtime})"),
        ("parameters", f"{record.params:,} in {record.chunks:,} chunks of {record.chunk_size:,}"),
        ("chunks completed", f"{v.chunks_completed:,} / {v.chunks_expected:,}"),
        ("lost", f"{v.lost}" + (f"  (first ids: {v.lost_chunk_ids[:10]})" if v.lost else "")),
        ("duplicates", str(v.duplicates)),
        ("dead-lettered", str(v.dead_lettered) + (f"  ({v.dead_letter_reasons[0][:80]})" if v.dead_letter_reasons else "")),
        ("checksum", f"{v.checksum_actual} ({v.checksum_text}, verify {v.verify})"),
        ("sweep time", f"{record.wall_s:.2f} s  ({record.params_per_s:,.0f} params/s)"),
        ("start-up / verify", f"{record.startup_s:.2f} s / {record.verify_s:.2f} s"),
    ]
    rows += [
        (
            f"fault {f.kind}",
            f"{f.target} at {f.at_s:.2f} s, recovered in " + (f"{f.recovered_s:.2f} s" if f.recovered_s is not None else f"- ({f.note})"),
        )
        for f in record.faults
    ]
    for k, val in rows:
        table.add_row(k, val)
    return table


@cli.command()
@_sweep_options
@click.option("--run-id", required=True, help="The run this worker serves.")
@click.option("--worker-id", default=None, help="This worker's name (consumer name). [default HOST-PID]")
@click.option("--static", "static", default=None, metavar="I/W", help="Static mode: evaluate block I of W blocks of chunks, no queue.")
@click.option("--params", type=int, default=None, help="The run's parameter count (as given to ttg run): every task is checked against the plan.")
@click.option("--chunk", type=int, default=None, help="The run's chunk size (as given to ttg run).")
@click.option("--broker-wait", type=float, default=60.0, show_default=True, help="Seconds to keep retrying an unreachable broker.")
@click.option("--poison-chunks", default="", metavar="ID,...", help="Fault injection (the poison-chunk fault): these chunk ids fail on every delivery.")
@click.option("--coordinator-pid", type=int, default=None, help="Exit once this process (the local coordinator, this worker's parent) is gone.")
@click.option("--pid-file", default=None, metavar="PATH", help="Write this process's pid to PATH (on Kubernetes the kill-pod fault signals it).")
@click.option(
    "--staging",
    default=None,
    metavar="DIR",
    help="The run's staging directory, on a disk shared with the coordinator: values go there, receipts through the broker.",
)
@click.option(
    "--successor-wait", type=click.FloatRange(0), default=30.0, show_default=True, help="With --coordinator-pid: seconds to wait for a successor, then exit."
)
def worker(**options: Any) -> int:
    """Serve one run until its sweep is drained (burst mode).

    Exit status: 0 once the coordinator has ended the run; 143 when SIGTERM stopped it first (it finishes its chunk and
    gives back what it prefetched); 3 when the broker stayed unreachable; 2 for a usage error."""
    from ttg.argv import decode_worker
    from ttg.broker import open_broker
    from ttg.claimcheck import Staging
    from ttg.worker import Worker, WorkerSpec

    args = decode_worker(options)
    settings = args.sweep
    if not settings.broker_url:
        raise ConfigError("ttg worker needs a broker; pass --broker-url or set TTG_BROKER_URL")
    worker_id = args.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    logs.setup(settings.log_format, getattr(logging, settings.log_level.upper()), run_id=args.run_id, worker_id=worker_id)
    broker = open_broker(
        settings.broker_url,
        args.run_id,
        # Unique per process: a successor coordinator's w0 must never share a consumer with its dead predecessor's w0,
        # still serving the run while it waits for that successor (giving back its chunks, it deletes its consumer).
        consumer=f"{worker_id}.{os.getpid()}",
        max_deliveries=settings.max_deliveries,
        reclaim_after_s=settings.reclaim_after_s,
        prefetch=settings.prefetch,
    )
    spec = WorkerSpec(
        args.run_id,
        worker_id,
        args.plan,
        settings.algorithm,
        settings.cost_us,
        broker_wait_s=args.broker_wait_s,
        static=args.static,
        grid=settings.grid,
        poisoned=args.poisoned,
        coordinator_pid=args.coordinator_pid,
        successor_wait_s=args.successor_wait_s,
        staging=None if args.staging is None else Staging.open(Path(args.staging)),
    )
    w = Worker(broker, spec)
    if args.pid_file:
        Path(args.pid_file).write_text(f"{os.getpid()}\n")
    w.install_signal_handlers()
    w.watch_coordinator()
    return w.run()


@cli.command()
@_sweep_options
@click.option("--params", type=Setting("params"), help="Parameters per sweep. [default 10,000,000]")
@click.option("--chunk", type=Setting("chunk"), help="Parameters per chunk. [default 10,000]")
@click.option("--workers", type=Setting("workers"), help="Workers (and Pool processes). [default 2]")
@click.option("--results-via", type=Setting("results_via"), help="auto, file or broker, as for ttg run. [default auto]")
@click.option("--repeat", type=click.IntRange(1, 50), default=3, show_default=True, help="Interleaved rounds of TTG and Pool.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON on stdout.")
def bench(repeat: int, as_json: bool, **options: Any) -> int:
    """Throughput of TTG against multiprocessing.Pool over the same chunks, measured side by side."""
    from ttg.bench import run_bench

    given = passed_options(**options)
    given.setdefault("params", 10_000_000)
    cfg = load_run_config({**given, "verify": "off", "out": given.get("out")})
    logs.setup("text", logging.WARNING)
    result = run_bench(cfg, repeat=repeat, on_round=lambda line: err.print(line))
    title = f"ttg bench: {cfg.params:,} params, chunk {cfg.chunk:,}, {cfg.workers} workers, cost {cfg.sweep.cost_us:g} µs, {cfg.sweep.backend}"
    table = Table(title=f"{title}, values via {result['results_via']}")
    for col in ("", "median s", "params/s", "ratio"):
        table.add_column(col)
    table.add_row("multiprocessing.Pool", f"{result['pool_s']:.3f}", f"{result['pool_params_per_s']:,.0f}", "1.00")
    table.add_row("TTG", f"{result['ttg_s']:.3f}", f"{result['ttg_params_per_s']:,.0f}", f"{result['ratio']:.3f}")
    err.print(table)
    trips = result["round_trips_per_chunk"]
    err.print(
        (f"broker round trips per chunk: {trips:.2f}; " if trips is not None else "")
        + f"private broker start-up: {result['broker_startup_s'] or 0:.2f} s; TTG end-to-end with start-up: {result['ttg_total_s']:.2f} s; "
        f"coordinator peak RSS {result['coordinator_peak_rss_mb']:.0f} MB"
    )
    if as_json:
        click.echo(json.dumps(result, indent=2))
    return 0


cli.add_command(broker)
cli.add_command(chaos)
cli.add_command(k8s)
cli.add_command(runs)
cli.add_command(status)


_TERMINATED: list[int] = []  # set once SIGTERM arrived: the process then exits 143, not Ctrl-C's 130
EXIT_TERMINATED = 128 + signal.SIGTERM


def _interrupt_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so workers and private brokers are stopped, never orphaned, and the process exits
    143 (a Kubernetes coordinator Job replaces a pod that exits so, without spending its backoff).

    ``ttg worker`` installs its own handler (finish the chunk, then exit 0 or 143: see :mod:`ttg.worker`).
    """

    def handler(signum: int, _frame: object) -> None:
        _TERMINATED.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _hide_secrets_from_ps() -> None:
    """A broker URL given on the command line carries its password into ``ps`` for every local user to read.

    Rewrite this process's title (what ``/proc/PID/cmdline`` shows) with every URL redacted, as database clients
    do with a password argument. Better still: pass the URL in TTG_BROKER_URL, which only the owner can read.
    """
    shown = [redact_url(a) or a if "://" in a else a for a in sys.argv]
    shown = [f"{a.split('=', 1)[0]}={redact_url(a.split('=', 1)[1])}" if a.startswith("--") and "=" in a and "://" in a else a for a in shown]
    if shown != sys.argv:
        import setproctitle

        setproctitle.setproctitle(" ".join([sys.executable, *shown]))


def main() -> None:
    _hide_secrets_from_ps()
    _interrupt_on_sigterm()
    try:
        rv = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err.print("terminated (SIGTERM)" if _TERMINATED else "aborted")
        sys.exit(EXIT_TERMINATED if _TERMINATED else 130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except ConfigError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)  # a message's [x] is text
        sys.exit(EXIT_USAGE)
    except TTGError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)  # a message's [x] is text
        sys.exit(EXIT_ENVIRONMENT)
    except Exception:  # process boundary: a bug must not pass for a failed verdict (exit 1)
        err.print_exception()
        err.print("[red]internal error[/red]: this is a bug in TTG; please report it with the traceback above", highlight=False)
        sys.exit(EXIT_INTERNAL)
    sys.exit(rv if isinstance(rv, int) else 0)
