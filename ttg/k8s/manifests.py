"""Render a run's Kubernetes manifests (``ttg k8s render``) from the package's Jinja2 templates."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2

from ttg import __version__, backends
from ttg.argv import coordinator_argv, worker_argv
from ttg.config import RunConfig
from ttg.errors import ConfigError
from ttg.k8s import names
from ttg.k8s.rbac import COORDINATOR_RULES, Rule
from ttg.k8s.runtime import WORKER_PID_FILE

IMAGE = f"ttg-worker:{__version__}"
REDIS_IMAGE = "redis:7.2.5"
RABBITMQ_IMAGE = "rabbitmq:3.13.7-management"
TEMPLATES = ("namespace.yaml.j2", "secret.yaml.j2", "{broker}", "networkpolicy.yaml.j2", "coordinator.yaml.j2", "workers.yaml.j2")


@dataclass(frozen=True)
class ManifestSettings:
    """What the templates need, derived from a RunConfig plus the cluster-side choices."""

    run_id: str
    cfg: RunConfig
    namespace: str = "ttg"
    image: str = IMAGE
    redis_image: str = REDIS_IMAGE
    rabbitmq_image: str = RABBITMQ_IMAGE
    broker_password: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    broker_storage: str = "2Gi"
    results_storage: str = "2Gi"
    broker_cpu: str = "250m"
    broker_memory: str = "1Gi"
    coordinator_cpu: str = "250m"
    coordinator_memory: str = "1Gi"
    # Requests, not limits, for CPU: what the scheduler must find free. Kept small so a laptop's Kind node (2-4 CPUs)
    # schedules four workers beside the broker and coordinator; with no CPU limit each worker uses what is idle.
    worker_cpu: str = "250m"
    worker_memory: str = "512Mi"
    consumer_timeout_ms: int = 3_600_000  # RabbitMQ: one task message may stay with a worker this long
    ttl_seconds: int = 3_600  # a finished coordinator Job is kept an hour, and with it (its owned objects) the whole run
    grace_seconds: int = 60  # a SIGTERMed worker finishes its chunk within this
    broker_wait_s: float = 300.0  # pods start beside a broker StatefulSet that may still be pulling its image
    startup_allowance_s: int = 1_800  # on top of the run's --timeout: scheduling, image pulls, broker start

    def label_lines(self, component: str) -> str:
        """The labels of the component's objects as YAML lines (the templates' ``labels`` macro)."""
        return "\n".join(f"{k}: {json.dumps(v)}" for k, v in names.labels(self.run_id, component).items())

    @property
    def coordinator_job(self) -> str:
        return names.coordinator_job(self.run_id)

    @property
    def worker_job(self) -> str:
        return names.worker_job(self.run_id)

    @property
    def coordinator_rules(self) -> tuple[Rule, ...]:
        return COORDINATOR_RULES

    @property
    def deadline_seconds(self) -> int:
        """``activeDeadlineSeconds`` of both Jobs: a run's lifetime is bounded even if nothing ever ends it."""
        return int(self.cfg.timeout_s) + self.startup_allowance_s

    # -- derived values the templates use ------------------------------------------------
    @property
    def version(self) -> str:
        return __version__

    @property
    def backend(self) -> str:
        return self.cfg.sweep.backend

    @property
    def mode(self) -> str:
        return self.cfg.mode

    @property
    def workers(self) -> int:
        return self.cfg.workers

    @property
    def broker_user(self) -> str:
        return "ttg"

    @property
    def broker_host(self) -> str:
        return f"ttg-{self.backend}-{self.run_id}"

    @property
    def broker_ports(self) -> list[int]:
        return list(backends.backend(self.backend).k8s_ports)

    @property
    def broker_url(self) -> str:
        host = f"{self.broker_host}-0.{self.broker_host}.{self.namespace}.svc"
        return backends.backend(self.backend).k8s_url.format(user=self.broker_user, password=self.broker_password, host=host)

    @property
    def backoff_limit(self) -> int:
        # Crashes that are not disruptions (OOM, a broker outage beyond --broker-wait) get a few retries per worker.
        return max(6, 2 * self.workers)

    @property
    def worker_args(self) -> list[str]:
        # The same codec as local workers (ttg.argv): every setting reaches the pods, the poison-chunk fault included.
        # JSON logs: one event per line for `kubectl logs` and a log collector.
        cfg = replace(self.cfg, sweep=replace(self.cfg.sweep, log_format="json"))
        static = f"$(JOB_INDEX)/{self.workers}" if self.mode == "static" else None
        argv = worker_argv(cfg, self.run_id, "$(POD_NAME)", static=static, broker_wait_s=self.broker_wait_s, pid_file=WORKER_PID_FILE)
        return ["worker", *argv]

    @property
    def coordinator_args(self) -> list[str]:
        # --resume: a replacement of a disrupted coordinator pod continues the run from the ledger on the PVC.
        cfg = replace(self.cfg, out=Path("/results"), runtime="kubernetes", namespace=self.namespace, image=self.image)
        cfg = replace(cfg, broker_wait_s=max(cfg.broker_wait_s, self.broker_wait_s))
        return ["run", *coordinator_argv(cfg, self.run_id, resume=True), "--in-cluster", "--json"]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ttg.k8s", "templates"),
        undefined=jinja2.StrictUndefined,  # a typo in a template is an error, not an empty field
        keep_trailing_newline=True,
        autoescape=False,  # YAML, not HTML; every free-text value goes through |tojson or is generated
    )
    return env


def render(settings: ManifestSettings) -> str:
    """All of the run's manifests as one multi-document YAML stream, in the order they must be applied."""
    if settings.cfg.sweep.broker_url:
        raise ConfigError("ttg k8s render deploys the run's own broker; drop --broker-url (TTG_BROKER_URL)")
    env = _environment()
    docs = []
    for name in TEMPLATES:
        text = env.get_template(name.format(broker=backends.backend(settings.backend).k8s_template)).render(s=settings)
        docs.append(text.strip() + "\n")
    return "---\n".join(docs)


def documents(settings: ManifestSettings) -> list[dict[str, Any]]:
    """The rendered manifests as objects (for the API client and the tests)."""
    import yaml

    return [d for d in yaml.safe_load_all(render(settings)) if d]
