"""``ttg k8s``: render a run's manifests, and list or remove TTG's objects on a cluster (a part of :mod:`ttg.cli`)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ttg import backends
from ttg.cli_types import Setting
from ttg.errors import ConfigError

err = Console(stderr=True)


@click.group()
def k8s() -> None:
    """Kubernetes: manifests for kubectl or GitOps, and TTG's objects on a cluster (only TTG-labelled ones are touched)."""


@k8s.command()
@click.option("--backend", type=Setting("backend"), help=f"{' or '.join(backends.NAMES)}. [env TTG_BACKEND; default {backends.DEFAULT}]")
@click.option("--mode", type=Setting("mode"), help="queue (a work-queue Job) or static (an Indexed Job). [env TTG_MODE; default queue]")
@click.option("--workers", type=Setting("workers"), help="Worker pods. [env TTG_WORKERS; default 2]")
@click.option("--params", type=Setting("params"), help="Parameters N. [env TTG_PARAMS; default 1,000,000]")
@click.option("--chunk", type=Setting("chunk"), help="Parameters per chunk. [env TTG_CHUNK; default 10,000]")
@click.option("--algorithm", help="'demo' or package.module:function (importable in the image). [env TTG_ALGORITHM]")
@click.option("--cost-us", type=Setting("cost_us"), help="Simulated work per parameter, µs. [env TTG_COST_US; default 0]")
@click.option("--fault", "faults", multiple=True, help="Fault for the coordinator to inject: kill-pod@30%, terminate-worker@50%. Repeatable.")
@click.option("--namespace", help="Namespace. [env TTG_NAMESPACE; default ttg]")
@click.option("--image", help="The TTG image. [env TTG_IMAGE; default ttg-worker:<version>]")
@click.option("--run-id", "run_id", default=None, help="The run's id (default: a new random one).")
def render(run_id: str | None, **options: Any) -> int:
    """Print a run's manifests as YAML: namespace, Secret, broker, NetworkPolicy, coordinator, workers."""
    from ttg.config import load_run_config, passed_options
    from ttg.k8s.manifests import IMAGE, ManifestSettings
    from ttg.k8s.manifests import render as render_manifests
    from ttg.run import new_run_id

    cfg = load_run_config({**passed_options(**options), "runtime": "kubernetes"})
    # A render for GitOps must be reproducible: the same password on every render, from the environment (never argv).
    password = os.environ.get("TTG_BROKER_PASSWORD")
    if password is not None and not re.fullmatch(r"[A-Za-z0-9_-]{16,}", password):
        raise ConfigError("TTG_BROKER_PASSWORD must be at least 16 characters of A-Z a-z 0-9 _ - (it goes into a URL unescaped)")
    settings = ManifestSettings(run_id or new_run_id(), cfg, namespace=cfg.namespace, image=cfg.image or IMAGE)
    if password:
        settings = dataclasses.replace(settings, broker_password=password)
    click.echo(render_manifests(settings), nl=False)
    source = "TTG_BROKER_PASSWORD" if password else "a generated password (set TTG_BROKER_PASSWORD for the same one on every render)"
    err.print(f"run {settings.run_id}: {cfg.workers} {cfg.sweep.backend} workers in namespace {cfg.namespace}; the Secret holds {source}")
    return 0


@k8s.command()
@click.option("--namespace", default="ttg", show_default=True)
@click.option("--context", default=None, help="kubeconfig context. [default: the current one]")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON on stdout.")
def status(namespace: str, context: str | None, as_json: bool) -> int:
    """TTG runs in the namespace: coordinator state, worker pods, objects."""
    from dataclasses import asdict

    from ttg.k8s.cluster import Cluster, connect

    runs = Cluster(connect(context), namespace).runs()
    if as_json:
        click.echo(json.dumps([{**asdict(r), "finished": r.finished} for r in runs], indent=2))
        return 0
    table = Table(title=f"TTG runs in namespace {namespace}")
    for col in ("run", "coordinator", "workers active", "succeeded", "failed", "pods", "objects"):
        table.add_column(col)
    for r in runs:
        pods = ", ".join(f"{n} {phase}" for phase, n in sorted(r.pods.items())) or "-"
        table.add_row(r.run_id, r.coordinator, str(r.workers_active), str(r.workers_succeeded), str(r.workers_failed), pods, str(r.resources))
    if not runs:
        table.caption = "no TTG objects in this namespace"
    err.print(table)
    return 0


@k8s.command()
@click.argument("run_id")
@click.option("--namespace", default="ttg", show_default=True)
@click.option("--context", default=None, help="kubeconfig context. [default: the current one]")
def down(run_id: str, namespace: str, context: str | None) -> int:
    """Delete every TTG-labelled object of one run (its results volume included)."""
    from ttg.k8s.cluster import Cluster, connect

    deleted = Cluster(connect(context), namespace).down(run_id)
    err.print(f"deleted {len(deleted)} object(s) of run {run_id}" if deleted else f"no objects of run {run_id} in namespace {namespace}")
    for name in deleted:
        click.echo(name)
    return 0


@k8s.command()
@click.option("--namespace", default="ttg", show_default=True)
@click.option("--context", default=None, help="kubeconfig context. [default: the current one]")
@click.option("--all", "include_running", is_flag=True, help="Also runs whose coordinator is still running.")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
def cleanup(namespace: str, context: str | None, include_running: bool, dry_run: bool) -> int:
    """Delete the TTG-labelled objects of finished runs (nothing without TTG's labels is ever touched)."""
    from ttg.k8s.cluster import Cluster, connect

    cluster = Cluster(connect(context), namespace)
    runs = cluster.finished_runs(include_running)
    listed = [f"{r.kind}/{r.name}" for r in cluster.resources() if r.run_id in runs] if dry_run else []
    doomed = listed if dry_run else [name for run_id in runs for name in cluster.down(run_id)]
    for name in doomed:
        click.echo(f"{'would delete' if dry_run else 'deleted'} {name}")
    err.print(f"{len(doomed)} object(s) of {len(runs)} run(s) {'would be ' if dry_run else ''}deleted in namespace {namespace}")
    return 0
