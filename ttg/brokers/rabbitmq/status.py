"""``ttg status`` for RabbitMQ, through the management HTTP API.

AMQP itself can neither list queues nor count unacknowledged messages, so the
management plugin is needed (private brokers started by TTG have it on, bound to
127.0.0.1). Counts are task *messages*, and the management API refreshes them
about every 5 seconds, so a snapshot may be that old.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from ttg.config import redact_url
from ttg.errors import BrokerUnavailable, ConfigError
from ttg.status import RunStatus

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
    return [_one(run_id, by_kind) for run_id, by_kind in runs.items()]


def _one(run_id: str, q: dict[str, dict[str, Any]]) -> RunStatus:
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
