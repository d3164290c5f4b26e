"""A loopback stand-in for the few Kubernetes API endpoints TTG's client code calls. NOT a cluster.

No API server can run on this machine (no Docker, no kind), so the client code's
requests (create, list by label selector, read, delete, read log) are checked
against this: an in-memory object store behind the same REST paths, with the
real ``kubernetes`` client on the other side. It checks that TTG asks for the
right objects with the right selectors and options; it says nothing about how a
real cluster schedules, kills or restarts pods. Those paths run in the
``kind``-marked scenarios, on a machine with Docker and kind.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

# /api/v1/namespaces/NS/PLURAL[/NAME[/log]] and /apis/GROUP/VERSION/namespaces/NS/PLURAL[/NAME]
_PATH = re.compile(r"^/(?:api/v1|apis/[^/]+/[^/]+)(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>log|status))?$")
_NAMESPACES = re.compile(r"^/api/v1/namespaces(?:/(?P<name>[^/]+))?$")


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


class StandInAPI:
    """``with StandInAPI() as api:`` then ``api.client()`` is a kubernetes ApiClient aimed at it."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (plural, namespace, name) -> object
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []  # (method, path, query)
        self.responses: list[tuple[str, str, int]] = []  # (method, path, status code), as the client received them
        self.logs: dict[str, str] = {}  # pod name -> log text
        self.version = 0  # the store's resourceVersion: one step per change
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []  # (version, plural, ADDED|MODIFIED|DELETED, object)
        self.on_delete: dict[str, Any] = {}  # plural -> hook(api, name) run before a DELETE (a controller racing it)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> StandInAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def client(self) -> Any:
        from kubernetes import client

        conf = client.Configuration()
        conf.host = self.url
        return client.ApiClient(conf)

    def put(self, plural: str, obj: dict[str, Any]) -> None:
        """Store an object as a controller would have made it (a pod of a Job, a status)."""
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        with self._lock:
            key = (plural, meta.get("namespace", ""), meta["name"])
            self._record(plural, "MODIFIED" if key in self.objects else "ADDED", obj)
            self.objects[key] = obj

    def remove(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """Delete an object as a controller would (the garbage collector, say): watchers see it go."""
        with self._lock:
            obj = self.objects.pop((plural, namespace, name), None)
            if obj is not None:
                self._record(plural, "DELETED", obj)
            return obj

    def _record(self, plural: str, kind: str, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.events.append((self.version, plural, kind, copy.deepcopy(obj)))
        self._changed.notify_all()

    def kinds(self) -> set[str]:
        """The plurals of the objects stored now."""
        return {p for (p, _, _) in self.objects}

    def names(self, plural: str) -> list[str]:
        return sorted(name for (p, _, name) in self.objects if p == plural)

    # -- the REST surface ----------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:  # noqa: C901 - a branch per verb
        self.requests.append((method, path, query))
        ns_match = _NAMESPACES.match(path)
        m = _PATH.match(path)
        if ns_match:
            plural, ns, name, sub = "namespaces", "", ns_match.group("name"), None
        elif m:
            plural, ns, name, sub = m.group("plural"), m.group("ns") or "", m.group("name"), m.group("sub")
        else:
            return _status(404, "NotFound")
        selector = query.get("labelSelector", [""])[0]
        if method == "GET" and name is None and query.get("watch", [""])[0].lower() == "true":
            return self._watch(plural, ns, selector, int(query.get("resourceVersion", ["0"])[0] or 0))
        if method == "DELETE" and name is None:
            with self._lock:
                doomed = [n for (p, n2, n), o in self.objects.items() if p == plural and n2 == ns and _matches(o["metadata"].get("labels") or {}, selector)]
            for n in doomed:
                self._delete(plural, ns, n)
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if method == "DELETE":
            return self._delete(plural, ns, name or "")
        with self._lock:
            if method == "POST":
                return self._create(plural, ns, body)
            if method == "GET" and name is None:
                return self._list(plural, ns, selector)
            key = (plural, ns, name or "")
            if key not in self.objects:
                return _status(404, "NotFound")
            if method == "GET" and sub == "log":
                lines = int(query.get("tailLines", ["0"])[0])
                text = self.logs.get(name or "", "")
                return 200, "\n".join(text.splitlines()[-lines:]) if lines else text
            if method == "GET":
                return 200, self.objects[key]
            if method == "PATCH":
                _merge(self.objects[key], body)
                self._record(plural, "MODIFIED", self.objects[key])
                return 200, self.objects[key]
            if method == "PUT":
                body.setdefault("metadata", {})["uid"] = self.objects[key]["metadata"].get("uid")
                self.objects[key] = body
                self._record(plural, "MODIFIED", body)
                return 200, body
        return _status(405, "MethodNotAllowed")

    def _delete(self, plural: str, ns: str, name: str) -> tuple[int, Any]:
        hook = self.on_delete.get(plural)
        if hook is not None:
            hook(self, name)  # outside the lock: a hook may remove objects itself
        obj = self.remove(plural, ns, name)
        return (200, obj) if obj is not None else _status(404, "NotFound")

    def _watch(self, plural: str, ns: str, selector: str, since: int) -> tuple[int, Any]:
        """The events after ``since`` as watch lines, waiting briefly for one (a real watch holds the connection open)."""
        with self._lock:

            def pending() -> list[tuple[int, str, str, dict[str, Any]]]:
                return [
                    e
                    for e in self.events
                    if e[0] > since
                    and e[1] == plural
                    and e[3]["metadata"].get("namespace", "") == ns
                    and _matches(e[3]["metadata"].get("labels") or {}, selector)
                ]

            self._changed.wait_for(lambda: bool(pending()), timeout=0.2)
            return 200, "".join(json.dumps({"type": kind, "object": obj}) + "\n" for _, _, kind, obj in pending())

    def _create(self, plural: str, ns: str, body: dict[str, Any]) -> tuple[int, Any]:
        obj = copy.deepcopy(body)
        meta = obj["metadata"]
        if plural != "namespaces":
            meta["namespace"] = ns or meta.get("namespace", "")
        key = (plural, meta.get("namespace", ""), meta["name"])
        if key in self.objects:
            return _status(409, "AlreadyExists")
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.objects[key] = obj
        self._record(plural, "ADDED", obj)
        return 201, obj

    def _list(self, plural: str, ns: str, selector: str) -> tuple[int, Any]:
        items = [o for (p, n, _), o in self.objects.items() if p == plural and n == ns and _matches(o["metadata"].get("labels") or {}, selector)]
        return 200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": str(self.version)}, "items": items}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _route(self, method: str) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                code, payload = api.handle(method, parts.path, parse_qs(parts.query), body)
                api.responses.append((method, parts.path, code))
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_DELETE(self) -> None:
                self._route("DELETE")

            def do_PATCH(self) -> None:
                self._route("PATCH")

            def do_PUT(self) -> None:
                self._route("PUT")

        return Handler


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """A JSON merge patch (RFC 7386), which is what the client sends for a dict body."""
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(target.get(k), dict):
            _merge(target[k], v)
        elif v is None:
            target.pop(k, None)
        else:
            target[k] = v


def _status(code: int, reason: str) -> tuple[int, Any]:
    return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code}
