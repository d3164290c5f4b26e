"""The names and labels of a run's objects on a cluster: the templates, the runtime, the launcher and teardown all
take them from here."""

from __future__ import annotations

MANAGED = "app.kubernetes.io/managed-by=ttg"
RUN_LABEL = "ttg.dev/run-id"
COMPONENT = "app.kubernetes.io/component"


def coordinator_job(run_id: str) -> str:
    return f"ttg-coordinator-{run_id}"


def worker_job(run_id: str) -> str:
    return f"ttg-workers-{run_id}"


def record_configmap(run_id: str) -> str:
    return f"ttg-record-{run_id}"


def selector(run_id: str, component: str) -> str:
    """The label selector of one component's objects (worker, coordinator, broker) of one run."""
    return f"{COMPONENT}={component},{RUN_LABEL}={run_id}"


def labels(run_id: str, component: str) -> dict[str, str]:
    """The labels of an object TTG creates at run time (the templates' ``labels`` macro, for the same objects)."""
    from ttg import __version__

    return {
        "app.kubernetes.io/name": "ttg",
        "app.kubernetes.io/part-of": "ttg",
        "app.kubernetes.io/managed-by": "ttg",
        "app.kubernetes.io/version": __version__,
        COMPONENT: component,
        "app.kubernetes.io/instance": f"ttg-{run_id}",
        RUN_LABEL: run_id,
    }
