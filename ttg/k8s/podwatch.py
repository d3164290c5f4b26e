"""The pods of one selector, kept current by a LIST and then a WATCH: one request per change, not one LIST a second.

The informer pattern of client-go, on one thread: list (which gives a resourceVersion), watch from it, apply each
event; when the watch ends (its server-side timeout) go on from the last resourceVersion seen; when that is too old
(410 Gone) or anything fails, list again (https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class PodWatch:
    def __init__(self, core: Any, namespace: str, selector: str, watch_timeout_s: int = 60, retry_s: float = 1.0) -> None:
        self.core = core
        self.namespace = namespace
        self.selector = selector
        self.watch_timeout_s = watch_timeout_s
        self.retry_s = retry_s
        self.lists = 0  # how many full LISTs it made (the tests count them)
        self._pods: dict[str, Any] = {}  # name -> the pod as last seen, deleted ones included (their last state)
        self._deleted: set[str] = set()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._watch: Any = None
        self._thread = threading.Thread(target=self._run, name="ttg-pod-watch", daemon=True)
        self._thread.start()

    def pods(self, timeout_s: float = 30.0) -> list[Any]:
        """Every pod seen (deleted ones with their last state), once the first LIST has answered."""
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"no answer from the API server listing pods {self.selector} within {timeout_s:g}s")
        with self._lock:
            return list(self._pods.values())

    def deleted(self) -> set[str]:
        with self._lock:
            return set(self._deleted)

    def close(self) -> None:
        self._closed.set()
        if self._watch is not None:
            self._watch.stop()

    def _run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        version: str | None = None
        while not self._closed.is_set():
            try:
                if version is None:
                    version = self._list()
                self._watch = watch.Watch()
                for event in self._watch.stream(
                    self.core.list_namespaced_pod, self.namespace, label_selector=self.selector, resource_version=version, timeout_seconds=self.watch_timeout_s
                ):
                    self._apply(event["type"], event["object"])
                    version = self._watch.resource_version or version
                    if self._closed.is_set():
                        break
            except ApiException as e:
                log.debug("pod watch %s: %s %s; listing again", self.selector, e.status, e.reason)
                version = None  # 410 Gone (too old a resourceVersion) and the rest: start over from a LIST
                self._closed.wait(self.retry_s)
            except Exception as e:  # the API server unreachable for a moment: list again after a pause
                log.debug("pod watch %s failed: %s; listing again", self.selector, e)
                version = None
                self._closed.wait(self.retry_s)

    def _list(self) -> str:
        listed = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector)
        self.lists += 1
        names = {p.metadata.name for p in listed.items}
        with self._lock:
            self._deleted |= {n for n in self._pods if n not in names}
            self._pods.update({p.metadata.name: p for p in listed.items})
        self._ready.set()
        return str(listed.metadata.resource_version or "")

    def _apply(self, kind: str, pod: Any) -> None:
        if not hasattr(pod, "metadata"):  # a BOOKMARK or an undecodable object: nothing to keep
            return
        with self._lock:
            self._pods[pod.metadata.name] = pod
            if kind == "DELETED":
                self._deleted.add(pod.metadata.name)
