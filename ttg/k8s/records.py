"""The run record's durable copy on the cluster: a ConfigMap the coordinator writes when it has judged (the launcher
reads it: :func:`ttg.k8s.launch.load_record`). Only the coordinator's calls live here: its Role is derived from them.

The coordinator's log carries the record too, but a log is gone with its pod (a retried coordinator has several,
a log stream can break), so the launcher reads the ConfigMap once the coordinator Job has finished. The ConfigMap
is owned by the coordinator Job, so it goes when the run goes (its TTL, or ``ttg k8s down``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ttg.k8s.names import coordinator_job, labels, record_configmap
from ttg.record import RunRecord

log = logging.getLogger(__name__)
MAX_BYTES = 900_000  # a ConfigMap holds at most 1 MiB (https://kubernetes.io/docs/concepts/configuration/configmap/)


def record_text(record: RunRecord) -> str:
    """The record as compact JSON that fits a ConfigMap: the timeline goes first, then the verdict's id lists are cut."""
    doc = record.to_dict()
    text = json.dumps(doc, separators=(",", ":"))
    if len(text) > MAX_BYTES:  # the PVC keeps the whole record
        doc["timeline"] = []
        text = json.dumps(doc, separators=(",", ":"))
    if len(text) > MAX_BYTES:  # the verdict's counts stay exact; its id lists keep their first 100
        doc["verdict"] = {k: v[:100] if isinstance(v, list) else v for k, v in doc["verdict"].items()}
        text = json.dumps(doc, separators=(",", ":"))
    return text


def save_record(api_client: Any, namespace: str, record: RunRecord) -> None:
    """Create (or, for a resumed run's second verdict, replace) the run's record ConfigMap, owned by its coordinator Job.

    Never raises: the record is in the log and on the PVC too, and a judged run must not fail on its copy."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    name = record_configmap(record.run_id)
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels(record.run_id, "coordinator")}
    try:
        job = batch.read_namespaced_job(coordinator_job(record.run_id), namespace)
        meta["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "Job", "name": job.metadata.name, "uid": job.metadata.uid}]
    except ApiException as e:
        log.warning("the run record's ConfigMap has no owner (reading the coordinator Job: %s); ttg k8s down removes it", e.reason)
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"record.json": record_text(record)}}
    try:
        try:
            core.create_namespaced_config_map(namespace, body)
        except ApiException as e:
            if e.status != 409:
                raise
            core.replace_namespaced_config_map(name, namespace, body)
    except ApiException as e:
        log.error("could not save the run record in ConfigMap %s: %s %s (it is in this log and on the results volume)", name, e.status, e.reason)
