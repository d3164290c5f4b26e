"""``ttg status`` for Redis: every run's meta hash and consumer group, in chunks."""

from __future__ import annotations

from typing import cast

import redis

from ttg.brokers.redis.client import connect
from ttg.brokers.redis.coordinator import GROUP
from ttg.config import redact_url
from ttg.errors import BrokerUnavailable
from ttg.status import RunStatus, WorkerStatus

# Commands that open a round trip (`ttg bench` counts them per chunk). Scripts are left out: a worker's completion
# script always travels in one pipeline with its next XREADGROUP, and the coordinator's XTRIM with its XREAD; the rare
# reclaim/fail script calls are left out too (a slight undercount under faults only).
_ROUND_TRIP_COMMANDS = ("xreadgroup", "xread", "hgetall", "hmget", "xinfo|groups", "xpending")


def round_trips(url: str) -> int:
    """Round trips the server has answered so far, from its command statistics."""
    client = connect(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in _ROUND_TRIP_COMMANDS)


def read(url: str, *, management_url: str | None = None) -> list[RunStatus]:
    client = connect(url)
    try:
        return [s for key in client.scan_iter(match="ttg:{*}:meta", count=1000) if (s := _one(client, key)) is not None]
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise BrokerUnavailable(f"Redis unreachable at {redact_url(url)} ({e}); check --broker-url") from None
    finally:
        client.close()


def _one(client: redis.Redis, meta_key: bytes) -> RunStatus | None:
    run_id = meta_key.decode().split("{", 1)[1].split("}", 1)[0]
    meta = {k.decode(): int(v) for k, v in cast(dict[bytes, bytes], client.hgetall(meta_key)).items()}
    try:
        groups = client.xinfo_groups(f"ttg:{{{run_id}}}:tasks")
    except redis.ResponseError:
        groups = []
    group = next((g for g in groups if g.get("name") == GROUP.encode()), {})
    workers = _workers(client, run_id, meta) if group else []
    inflight = int(group.get("pending", 0))
    completed, dead = meta.get("completed", 0), meta.get("dead", 0)
    return RunStatus(
        run_id=run_id,
        unit="chunks",
        queued=max(0, meta.get("published", 0) - completed - dead - inflight),
        inflight=inflight,
        consumers=int(group.get("consumers", 0)),
        dead_lettered=dead,
        rejected=meta.get("rejected", 0),
        ended="ended" in meta,
        planned=meta.get("chunks"),
        completed=completed,
        workers=workers,
    )


def _workers(client: redis.Redis, run_id: str, meta: dict[str, int]) -> list[WorkerStatus]:
    """The group's consumers (in flight, idle) with the chunks each completed first; a worker that left the group
    (done, or removed) keeps its row with what it completed."""
    try:
        consumers = client.xinfo_consumers(f"ttg:{{{run_id}}}:tasks", GROUP)
    except redis.ResponseError:
        consumers = []
    live = {c["name"].decode() if isinstance(c["name"], bytes) else str(c["name"]): c for c in consumers}
    done = {k.removeprefix("done:"): v for k, v in meta.items() if k.startswith("done:")}
    return [
        WorkerStatus(
            name=name,
            done=done.get(name, 0),
            inflight=int(live[name]["pending"]) if name in live else 0,
            idle_s=int(live[name]["idle"]) / 1000 if name in live else None,
        )
        for name in sorted(live.keys() | done.keys())
    ]
