"""TTG's resources on a cluster, through the official ``kubernetes`` client: apply, list, status, delete.

Only objects labelled ``app.kubernetes.io/managed-by=ttg`` are ever listed or
deleted, so ``ttg k8s down`` and ``cleanup`` cannot touch anything else in the
namespace. The namespace itself is never deleted: it may hold other things.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ttg.errors import TTGError
from ttg.k8s.names import COMPONENT, MANAGED, RUN_LABEL

log = logging.getLogger(__name__)


class ClusterError(TTGError):
    """The cluster cannot be reached or refused a request (the message says which and what to check)."""


@dataclass(frozen=True)
class Kind:
    """One namespaced resource kind: which client API class serves it, and its snake-case name in that API's methods."""

    kind: str
    api: str
    snake: str


# Deletion order: owners first (the Jobs and the StatefulSet, whose pods the garbage collector then removes), what
# the pods use last (Secret, volumes).
KINDS = (
    Kind("Job", "BatchV1Api", "job"),
    Kind("StatefulSet", "AppsV1Api", "stateful_set"),
    Kind("Pod", "CoreV1Api", "pod"),
    Kind("Service", "CoreV1Api", "service"),
    Kind("ConfigMap", "CoreV1Api", "config_map"),
    Kind("NetworkPolicy", "NetworkingV1Api", "network_policy"),
    Kind("RoleBinding", "RbacAuthorizationV1Api", "role_binding"),
    Kind("Role", "RbacAuthorizationV1Api", "role"),
    Kind("ServiceAccount", "CoreV1Api", "service_account"),
    Kind("PersistentVolumeClaim", "CoreV1Api", "persistent_volume_claim"),
    Kind("Secret", "CoreV1Api", "secret"),
)


@dataclass
class Resource:
    kind: str
    name: str
    run_id: str
    component: str
    obj: Any = field(repr=False, default=None)


@dataclass
class RunState:
    run_id: str
    coordinator: str = "absent"  # running, complete, failed, absent
    workers_active: int = 0
    workers_succeeded: int = 0
    workers_failed: int = 0
    pods: dict[str, int] = field(default_factory=dict)  # phase -> count
    resources: int = 0

    @property
    def finished(self) -> bool:
        return self.coordinator in ("complete", "failed", "absent")


def connect(context: str | None = None, *, in_cluster: bool = False) -> Any:
    """An API client from the kubeconfig (``context``: one of its contexts), or, for the coordinator pod (told so by
    its manifest, never guessed from the environment), from its service account."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise ClusterError("the kubernetes client is not installed: pip install 'ttg[k8s]' (make install has it)") from None
    try:
        if in_cluster:
            config.load_incluster_config()
        else:
            config.load_kube_config(context=context)
    except (config.ConfigException, OSError) as e:
        where = "the pod's service account" if in_cluster else "the kubeconfig"
        raise ClusterError(f"no cluster to talk to through {where}: {e}; set KUBECONFIG or create one with `kind create cluster --name ttg`") from None
    return client.ApiClient()


class Cluster:
    def __init__(self, api_client: Any, namespace: str = "ttg") -> None:
        from kubernetes import client

        self.api_client = api_client
        self.namespace = namespace
        self._apis = {name: getattr(client, name)(api_client) for name in {k.api for k in KINDS}}

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as e:
            raise ClusterError(f"{what} failed: {e.status} {e.reason}: {(e.body or '')[:200]}") from None
        except HTTPError as e:
            raise ClusterError(f"{what} failed, the API server is unreachable: {e}") from None

    # -- apply ----------------------------------------------------------------------------
    def apply(self, docs: Iterable[dict[str, Any]]) -> list[str]:
        """Create the rendered objects in order; an existing Namespace is reused. Returns 'Kind/name' of each."""
        from kubernetes import utils
        from kubernetes.utils import FailToCreateError

        created = []
        for doc in docs:
            name = f"{doc['kind']}/{doc['metadata']['name']}"
            try:
                utils.create_from_dict(self.api_client, doc, namespace=self.namespace)
            except FailToCreateError as e:
                if doc["kind"] == "Namespace" and all(getattr(x, "status", None) == 409 for x in e.api_exceptions):
                    continue
                raise ClusterError(f"creating {name} failed: {'; '.join(str(getattr(x, 'reason', x)) for x in e.api_exceptions)}") from None
            created.append(name)
        return created

    # -- read -----------------------------------------------------------------------------
    def resources(self, run_id: str | None = None) -> list[Resource]:
        selector = MANAGED + (f",{RUN_LABEL}={run_id}" if run_id else "")
        return [r for k in KINDS for r in self._listed(k, selector)]

    def runs(self) -> list[RunState]:
        states: dict[str, RunState] = {}
        for r in self.resources():
            st = states.setdefault(r.run_id, RunState(r.run_id))
            st.resources += 1
            if r.kind == "Job" and r.component == "coordinator":
                st.coordinator = job_state(r.obj)
            elif r.kind == "Job" and r.component == "worker" and r.obj.status is not None:
                s = r.obj.status
                st.workers_active, st.workers_succeeded, st.workers_failed = s.active or 0, s.succeeded or 0, s.failed or 0
            elif r.kind == "Pod":
                phase = (r.obj.status.phase if r.obj.status is not None else None) or "Unknown"
                st.pods[phase] = st.pods.get(phase, 0) + 1
        return sorted(states.values(), key=lambda s: s.run_id)

    # -- delete ---------------------------------------------------------------------------
    def down(self, run_id: str) -> list[str]:
        """Delete every TTG-labelled object of one run; returns 'Kind/name' of what was there. Idempotent.

        One DELETE per kind by label selector (a collection), owners first. An object already gone (404: the garbage
        collector took a Job's pods, a second ``down`` ran) is gone, not an error: the next kinds are still deleted."""
        selector = f"{MANAGED},{RUN_LABEL}={run_id}"
        gone = []
        for k in KINDS:
            names = [r.name for r in self._listed(k, selector)]
            if names:
                self._delete_collection(k, selector, names)
                gone += [f"{k.kind}/{n}" for n in names]
        return gone

    def _listed(self, k: Kind, selector: str) -> list[Resource]:
        fn = getattr(self._apis[k.api], f"list_namespaced_{k.snake}")
        items = self.call(f"listing {k.kind}s", fn, self.namespace, label_selector=selector).items
        labels = [o.metadata.labels or {} for o in items]
        return [Resource(k.kind, o.metadata.name, lb.get(RUN_LABEL, ""), lb.get(COMPONENT, ""), o) for o, lb in zip(items, labels, strict=True)]

    def _delete_collection(self, k: Kind, selector: str, names: list[str]) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        api = self._apis[k.api]
        body = client.V1DeleteOptions(propagation_policy="Background")
        collection = getattr(api, f"delete_collection_namespaced_{k.snake}", None)  # older clients lack some
        try:
            if collection is not None:
                collection(self.namespace, label_selector=selector, body=body)
                return
        except ApiException as e:
            if e.status == 404:
                return
            if e.status != 405:  # 405: a server without DELETE on this collection (Services before 1.31): one by one
                raise ClusterError(f"deleting the {k.kind}s of {selector} failed: {e.status} {e.reason}") from None
        for name in names:
            try:
                getattr(api, f"delete_namespaced_{k.snake}")(name, self.namespace, body=body)
            except ApiException as e:
                if e.status != 404:
                    raise ClusterError(f"deleting {k.kind}/{name} failed: {e.status} {e.reason}") from None

    def finished_runs(self, include_running: bool = False) -> list[str]:
        """The runs ``cleanup`` removes: the finished ones (or every run with ``include_running``)."""
        return [s.run_id for s in self.runs() if include_running or s.finished]


def job_state(job: Any) -> str:
    """complete, failed or running, from the Job's conditions."""
    for c in (job.status.conditions if job.status is not None else None) or []:
        if c.status == "True" and c.type in ("Complete", "Failed"):
            return str(c.type).lower()
    return "running"
