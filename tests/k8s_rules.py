"""The Job controller's documented rules for a pod that has ended, as code the tests evaluate rendered Jobs with.

NOT a cluster and not the controller's code: a transcription of what the Kubernetes documentation says the Job
controller does, so that a test can say "by the documented rules, a worker that exits like this makes the Job do
that". Sources, quoted where a rule is applied:

- Job, parallel execution, work queue: https://kubernetes.io/docs/concepts/workloads/controllers/job/#parallel-jobs
- Pod failure policy: https://kubernetes.io/docs/concepts/workloads/controllers/job/#pod-failure-policy
- Backoff limit per index: https://kubernetes.io/docs/concepts/workloads/controllers/job/#backoff-limit-per-index
- Pod phase: https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-phase
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# What the Job controller does next about one ended pod.
COMPLETES = "success: no new pods are created; the Job completes once every pod has ended"
REPLACED_FREE = "replaced, without counting against backoffLimit"
REPLACED_COUNTED = "replaced, counted against backoffLimit"
JOB_FAILS = "the Job fails, and its running pods are terminated"
INDEX_DONE = "its index succeeded"
INDEX_FAILED = "its index failed and is not retried (the Job ends Failed once every index has ended)"


@dataclass(frozen=True)
class EndedPod:
    """A pod whose (single) container has terminated, as its status reports it."""

    container: str
    exit_code: int
    conditions: tuple[tuple[str, str], ...] = field(default=())  # (type, status), e.g. ("DisruptionTarget", "True")

    @property
    def phase(self) -> str:
        # "Succeeded: All containers in the Pod have terminated in success ... Failed: ... at least one container has
        # terminated in failure. That is, the container either exited with non-zero status or was terminated by the
        # system." (restartPolicy Never: no restart in place)
        return "Succeeded" if self.exit_code == 0 else "Failed"


def _rule_matches(rule: dict[str, Any], pod: EndedPod) -> bool:
    if "onExitCodes" in rule:
        req = rule["onExitCodes"]
        if req.get("containerName") not in (None, pod.container):
            return False
        # "In: ... at least one container status is terminated with an exit code in the set"; "NotIn: ... an exit code
        # not in the set", where containers that exited 0 never match (the value 0 is not allowed with In).
        if req["operator"] == "In":
            return pod.exit_code in req["values"]
        return pod.exit_code != 0 and pod.exit_code not in req["values"]
    return any((c["type"], c.get("status", "True")) in pod.conditions for c in rule.get("onPodConditions", []))


def next_step(job: dict[str, Any], pod: EndedPod) -> str:
    """What the Job controller does about ``pod`` ended in ``job`` (a rendered Job manifest), by the documented rules."""
    spec = job["spec"]
    indexed = spec.get("completionMode") == "Indexed"
    if pod.phase == "Succeeded":
        # Work queue: "once any Pod has exited with success, no other Pod should still be doing any work ...
        # When any Pod from the Job terminates with success, no new Pods are created."
        return INDEX_DONE if indexed else COMPLETES
    # "The Pod failure policy rules are evaluated in order. Once a rule matches a Pod failure, the remaining rules are
    # ignored. When no rule matches the Pod failure, the default handling applies."
    for rule in spec.get("podFailurePolicy", {}).get("rules", []):
        if _rule_matches(rule, pod):
            action = rule["action"]
            if action == "FailJob":  # "the Pod's job is marked as Failed and all running Pods are terminated"
                return JOB_FAILS
            if action == "Ignore":  # "the counter towards the .spec.backoffLimit is not incremented and a replacement Pod is created"
                return REPLACED_FREE
            if action == "FailIndex":
                return INDEX_FAILED
            break  # Count: "the Pod failure is handled in the default way"
    if indexed and spec.get("backoffLimitPerIndex") is not None:
        # "when a Pod fails ... the index is marked as failed once the per-index backoff limit is exceeded"
        return INDEX_FAILED if spec["backoffLimitPerIndex"] == 0 else REPLACED_COUNTED
    return REPLACED_COUNTED
