"""What the in-cluster coordinator may do through the API: the Role its manifest grants, and nothing more.

Each rule is there for a call in :mod:`ttg.k8s.runtime` or :mod:`ttg.k8s.records`; ``tests/test_k8s.py`` derives the
verbs from those calls and fails when this list grants more or less.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]


COORDINATOR_RULES = (
    Rule(("",), ("pods",), ("delete", "list", "watch")),  # the worker pods (list, then watch); terminate-pod, stragglers
    # kill-pod: SIGKILL the worker through exec. The Python client's exec is a websocket upgrade of a GET, which the
    # API server long authorised as "get" on pods/exec (kubernetes/kubernetes#78741); since PR #134577 (feature gate
    # AuthorizePodWebsocketUpgradeCreatePermission, on by default) it also needs "create", as SPDY exec always did.
    # Both are granted, so kill-pod works on every version.
    Rule(("",), ("pods/exec",), ("create", "get")),
    Rule(("",), ("pods/log",), ("get",)),  # the last lines of a worker that failed, for the error message
    Rule(("batch",), ("jobs",), ("get",)),  # the worker Job exists; its own Job's uid owns the record ConfigMap
    Rule(("",), ("configmaps",), ("create", "update")),  # the run record (replaced when a resumed run judges again)
)
