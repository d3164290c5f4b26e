"""The rendered Jobs over whole histories of ended pods, by the Job controller's documented rules (tests/k8s_rules.py).

No process runs here: tests/test_k8s_semantics.py establishes which exit code a real worker or coordinator ends with
in each case; these tests say what the Job then does, pod after pod. NOT a cluster: a transcription of the
documentation, which only ``make kind-e2e`` checks against a real Job controller.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.k8s_rules import (
    COMPLETES,
    INDEX_DONE,
    INDEX_FAILED,
    JOB_FAILS,
    NOT_REPLACED,
    REPLACED_COUNTED,
    REPLACED_COUNTED_IN_INDEX,
    REPLACED_FREE,
    EndedPod,
    JobModel,
)
from ttg.cli import EXIT_ENVIRONMENT, EXIT_INTERNAL, EXIT_TERMINATED, EXIT_USAGE
from ttg.config import load_run_config
from ttg.k8s.manifests import ManifestSettings, documents

KILLED = 128 + signal.SIGKILL  # kill-pod, an OOM kill: tini reports its child's SIGKILL so


def job(component: str, mode: str = "queue", workers: int = 4) -> dict[str, Any]:
    cfg = load_run_config({"backend": "redis", "mode": mode, "workers": workers, "runtime": "kubernetes"}, env={})
    return next(d for d in documents(ManifestSettings("r1", cfg)) if d["kind"] == "Job" and d["metadata"]["labels"]["app.kubernetes.io/component"] == component)


@pytest.mark.parametrize("workers", [1, 4, 50])
def test_the_worker_job_replaces_2w_killed_pods_and_any_number_of_drained_ones(workers: int) -> None:
    model = JobModel(job("worker", workers=workers))
    for _ in range(100):  # terminate-pod, rollouts, deletes: each drains and exits 143, never spends backoff
        assert model.end(EndedPod("worker", EXIT_TERMINATED)) == REPLACED_FREE
    allowed = max(6, 2 * workers)
    assert job("worker", workers=workers)["spec"]["backoffLimit"] == allowed
    for _ in range(allowed):
        assert model.end(EndedPod("worker", KILLED)) == REPLACED_COUNTED
    assert model.end(EndedPod("worker", KILLED)) == JOB_FAILS  # a crash loop (every pod OOM-killed) ends the Job


def test_once_one_worker_pod_succeeds_a_work_queue_job_replaces_none_so_a_worker_exits_0_only_at_the_end() -> None:
    # Why a worker drained by SIGTERM must not exit 0 (defect 1 of issue 14): the first success stops all replacement,
    # and every later kill leaves the sweep with fewer workers, down to none.
    model = JobModel(job("worker"))
    assert model.end(EndedPod("worker", KILLED)) == REPLACED_COUNTED
    assert model.end(EndedPod("worker", 0)) == COMPLETES
    assert model.end(EndedPod("worker", KILLED)) == NOT_REPLACED
    assert model.end(EndedPod("worker", EXIT_TERMINATED)) == NOT_REPLACED


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (EXIT_USAGE, JOB_FAILS),  # every retry would fail the same way
        (EXIT_ENVIRONMENT, REPLACED_COUNTED),  # the broker stayed unreachable past --broker-wait: a new pod retries
        (EXIT_INTERNAL, REPLACED_COUNTED),  # a bug: retried within backoffLimit, the chunks go back to the queue
        (1, REPLACED_COUNTED),  # an uncaught error: the same
    ],
)
def test_a_worker_pod_that_fails_otherwise(code: int, expected: str) -> None:
    assert JobModel(job("worker")).end(EndedPod("worker", code)) == expected


def test_a_disruption_is_free_even_after_the_backoff_is_spent() -> None:
    model = JobModel(job("worker", workers=1))
    for _ in range(6):
        model.end(EndedPod("worker", KILLED))
    assert model.end(EndedPod("worker", KILLED, (("DisruptionTarget", "True"),))) == REPLACED_FREE


def test_in_static_mode_every_index_may_fail_without_failing_the_job_so_the_coordinator_reports_the_loss() -> None:
    workers = 4
    static = job("worker", mode="static", workers=workers)
    model = JobModel(static)
    assert model.end(EndedPod("worker", 0, index=0)) == INDEX_DONE
    for index in range(1, workers):  # killed or drained: a failed index is never retried (backoffLimitPerIndex 0)
        assert model.end(EndedPod("worker", KILLED if index % 2 else EXIT_TERMINATED, index=index)) == INDEX_FAILED
    assert model.failed_indexes == {1, 2, 3} and not model.failed  # maxFailedIndexes = W: the Job runs every index


def test_the_model_follows_backoff_limit_per_index_and_max_failed_indexes_as_documented() -> None:
    # The documentation's own example (job-backoff-limit-per-index-example.yaml): 10 indexes, 1 retry each, at most 5
    # failed indexes; here 6 indexes fail twice each.
    model = JobModel({"spec": {"completionMode": "Indexed", "completions": 10, "backoffLimitPerIndex": 1, "maxFailedIndexes": 5}})
    outcomes = [model.end(EndedPod("example", 1, index=i)) for i in range(6) for _ in range(2)]
    assert outcomes[:10] == [REPLACED_COUNTED_IN_INDEX, INDEX_FAILED] * 5
    assert outcomes[10:] == [REPLACED_COUNTED_IN_INDEX, JOB_FAILS]  # the sixth failed index exceeds maxFailedIndexes
    with pytest.raises(ValueError, match="FailIndex rule needs an Indexed Job"):
        JobModel({"spec": {"podFailurePolicy": {"rules": [{"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [42]}}]}}})


def test_the_coordinator_job_retries_a_crash_three_times_and_a_sigterm_for_ever() -> None:
    model = JobModel(job("coordinator"))
    for _ in range(20):
        assert model.end(EndedPod("coordinator", EXIT_TERMINATED)) == REPLACED_FREE  # resumes from the ledger each time
    for code in (KILLED, EXIT_INTERNAL, EXIT_ENVIRONMENT):
        assert model.end(EndedPod("coordinator", code)) == REPLACED_COUNTED
    assert model.end(EndedPod("coordinator", KILLED)) == JOB_FAILS  # backoffLimit 3
