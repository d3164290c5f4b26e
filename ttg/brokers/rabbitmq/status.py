"""``ttg status`` for RabbitMQ, through the management HTTP API.

AMQP itself can neither list queues nor count unacknowledged messages, so the
management plugin is needed (the test session's private brokers and `ttg broker up` have it on, bound to
127.0.0.1). Counts are task *messages*, and the management API refreshes them
about every 5 seconds, so a snapshot may be that old.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from ttg.config import redact_url
from ttg.errors import BrokerUnavailable, ConfigError
from ttg.status import RunStatus, WorkerStatus

_QUEUE = re.compile(r"^ttg\.(?P<run>[^.]+)\.(?P<kind>tasks|retry|results|dead|rejected|control)$")


def management_url_for(amqp_url: str) -> str:
    """The management API beside an AMQP URL: same host and credentials, port 15672."""
    parts = urlsplit(amqp_url)
    user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
    return f"http://{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname or 'localhost'}:15672"


def read(url: str, *, management_url: str | None = None) -> list[RunStatus]:
    api = management_url or management_url_for(url)
    vhost = unquote(urlsplit(url).path.lstrip("/")) or "/"
    queues = _get(api, f"/api/queues/{quote(vhost, safe='')}?columns=name,messages_ready,messages_unacknowledged,consumers")
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for q in queues:
        m = _QUEUE.match(q.get("name", ""))
        if m:
            runs.setdefault(m["run"], {})[m["kind"]] = q
    workers = _workers(api, vhost, set(runs)) if runs else {}
    return [_one(run_id, by_kind, workers.get(run_id, [])) for run_id, by_kind in runs.items()]


def _workers(api: str, vhost: str, run_ids: set[str]) -> dict[str, list[WorkerStatus]]:
    """Each run's workers: its connections are named ttg-<run>-<worker> (client property connection_name); a worker's
    unacknowledged task messages and idleness are its channels'. The broker does not count chunks done per worker."""
    v = quote(vhost, safe="")
    conns = _get(api, f"/api/vhosts/{v}/connections?columns=name,user_provided_name,client_properties")
    chans = _get(api, f"/api/vhosts/{v}/channels?columns=connection_details,messages_unacknowledged,idle_since")
    by_conn: dict[str, list[dict[str, Any]]] = {}
    for ch in chans:
        by_conn.setdefault((ch.get("connection_details") or {}).get("name", ""), []).append(ch)
    now = datetime.now(UTC)
    out: dict[str, list[WorkerStatus]] = {}
    for c in conns:
        named = c.get("user_provided_name") or (c.get("client_properties") or {}).get("connection_name") or ""
        run = next((r for r in run_ids if named.startswith(f"ttg-{r}-")), None)
        if run is None or named == f"ttg-{run}-coordinator":
            continue
        mine = by_conn.get(c.get("name", ""), [])
        # the least idle channel: 0 when any is busy; a connection with no channel yet has just connected
        idle_s = min((i for ch in mine if (i := _since(ch.get("idle_since"), now)) is not None), default=None if mine else 0.0)
        held = sum(int(ch.get("messages_unacknowledged") or 0) for ch in mine)
        worker = named.removeprefix(f"ttg-{run}-")
        out.setdefault(run, []).append(WorkerStatus(worker, None, held, idle_s))
    return {run: sorted(ws, key=lambda w: w.name) for run, ws in out.items()}


def _since(stamp: str | None, now: datetime) -> float | None:
    """Seconds since a management API timestamp ("2026-12-04 14:50:00" in UTC); 0.0 for a busy channel (no stamp)."""
    if not stamp:
        return 0.0
    try:
        return max(0.0, (now - datetime.fromisoformat(stamp.replace(" ", "T")).replace(tzinfo=UTC)).total_seconds())
    except ValueError:
        return None


def _one(run_id: str, q: dict[str, dict[str, Any]], workers: list[WorkerStatus]) -> RunStatus:
    def n(kind: str, field: str) -> int:
        return int(q.get(kind, {}).get(field) or 0)

    return RunStatus(
        run_id=run_id,
        unit="messages",
        queued=n("tasks", "messages_ready") + n("retry", "messages_ready") + n("retry", "messages_unacknowledged"),
        inflight=n("tasks", "messages_unacknowledged"),
        consumers=n("tasks", "consumers"),
        dead_lettered=n("dead", "messages_ready") + n("dead", "messages_unacknowledged"),
        rejected=n("rejected", "messages_ready") + n("rejected", "messages_unacknowledged"),
        ended=n("control", "messages_ready") > 0,
        workers=workers,
    )


def _get(api: str, path: str) -> list[dict[str, Any]]:
    parts = urlsplit(api)
    base = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
    request = urllib.request.Request(base + path)
    if parts.username is not None:
        token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body: list[dict[str, Any]] = json.load(response)
            return body
    except urllib.error.HTTPError as e:
        if e.code == 401:
            raise ConfigError(f"the RabbitMQ management API at {redact_url(api)} refused the credentials (401); pass --management-url with a user") from None
        raise BrokerUnavailable(f"the RabbitMQ management API at {redact_url(api)} answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise BrokerUnavailable(
            f"the RabbitMQ management API is not reachable at {redact_url(api)} ({e}); enable it with "
            "`rabbitmq-plugins enable rabbitmq_management` or pass --management-url http://USER:PASS@HOST:PORT"
        ) from None
