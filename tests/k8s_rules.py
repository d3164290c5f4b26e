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
REPLACED_COUNTED_IN_INDEX = "replaced, counted against its index's backoffLimitPerIndex"
NOT_REPLACED = "not replaced: a pod of this work-queue Job has succeeded, so no new pods are created"
JOB_FAILS = "the Job fails, and its running pods are terminated"
INDEX_DONE = "its index succeeded"
INDEX_FAILED = "its index failed and is not retried (the Job ends Failed once every index has ended)"

DEFAULT_BACKOFF_LIMIT = 6  # "The back-off limit is set by default to 6"


@dataclass(frozen=True)
class EndedPod:
    """A pod whose (single) container has terminated, as its status reports it."""

    container: str
    exit_code: int
    conditions: tuple[tuple[str, str], ...] = field(default=())  # (type, status), e.g. ("DisruptionTarget", "True")
    index: int = 0  # its completion index, in an Indexed Job

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


class JobModel:
    """One Job's history under the documented rules: each :meth:`end` is one pod that ended, in order."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.spec = job["spec"]
        self.indexed = self.spec.get("completionMode") == "Indexed"
        self.per_index = self.spec.get("backoffLimitPerIndex") if self.indexed else None
        # "When backoffLimitPerIndex is set ... backoffLimit defaults to 2147483647" (the per-index limits apply).
        self.backoff_limit = self.spec.get("backoffLimit", 2**31 - 1 if self.per_index is not None else DEFAULT_BACKOFF_LIMIT)
        self.work_queue = not self.indexed and self.spec.get("completions") is None
        self.failures = 0  # counted against backoffLimit
        self.index_failures: dict[int, int] = {}
        self.failed_indexes: set[int] = set()
        self.succeeded = False
        self.failed = False
        for rule in self.spec.get("podFailurePolicy", {}).get("rules", []):
            if rule["action"] == "FailIndex" and self.per_index is None:
                # API validation: "FailIndex ... is only allowed when backoffLimitPerIndex is set"
                raise ValueError("a FailIndex rule needs an Indexed Job with backoffLimitPerIndex: the API server rejects this Job")

    def end(self, pod: EndedPod) -> str:
        """What the Job controller does about ``pod``, given what ended before it."""
        assert not self.failed, "a failed Job has no pods left to end"
        if pod.phase == "Succeeded":
            # Work queue: "once any Pod has exited with success, no other Pod should still be doing any work ...
            # When any Pod from the Job terminates with success, no new Pods are created."
            self.succeeded = True
            return INDEX_DONE if self.indexed else COMPLETES
        # "The Pod failure policy rules are evaluated in order. Once a rule matches a Pod failure, the remaining rules
        # are ignored. When no rule matches the Pod failure, the default handling applies."
        for rule in self.spec.get("podFailurePolicy", {}).get("rules", []):
            if _rule_matches(rule, pod):
                action = rule["action"]
                if action == "FailJob":  # "the Pod's job is marked as Failed and all running Pods are terminated"
                    self.failed = True
                    return JOB_FAILS
                if action == "Ignore":  # "the counter towards the .spec.backoffLimit is not incremented and a replacement Pod is created"
                    return self._replaced(REPLACED_FREE)
                if action == "FailIndex":  # "the index is marked as failed ... and it is not retried"
                    return self._index_failed(pod.index)
                break  # Count: "the Pod failure is handled in the default way"
        if self.per_index is not None:
            # "the index is marked as failed once the number of failures for that index exceeds backoffLimitPerIndex"
            self.index_failures[pod.index] = self.index_failures.get(pod.index, 0) + 1
            if self.index_failures[pod.index] > self.per_index:
                return self._index_failed(pod.index)
            return REPLACED_COUNTED_IN_INDEX
        # "the number of retries before considering a Job as failed": it fails when the failures exceed backoffLimit.
        self.failures += 1
        if self.failures > self.backoff_limit:
            self.failed = True
            return JOB_FAILS
        return self._replaced(REPLACED_COUNTED)

    def _replaced(self, how: str) -> str:
        return NOT_REPLACED if self.work_queue and self.succeeded else how

    def _index_failed(self, index: int) -> str:
        self.failed_indexes.add(index)
        # "If the number of failed indexes exceeds maxFailedIndexes, the Job controller ... terminates all running
        # Pods and the Job fails."
        limit = self.spec.get("maxFailedIndexes")
        if limit is not None and len(self.failed_indexes) > limit:
            self.failed = True
            return JOB_FAILS
        return INDEX_FAILED


def next_step(job: dict[str, Any], pod: EndedPod) -> str:
    """What the Job controller does about ``pod``, the first pod to end in ``job`` (a rendered Job manifest)."""
    return JobModel(job).end(pod)
