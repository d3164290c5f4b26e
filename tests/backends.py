"""Backend-specific set-up for the contract suite: what a foreign producer might publish, and a private broker to kill.

Only set-up lives here. Assertions stay in the tests, identical for every backend.
"""

from __future__ import annotations

from pathlib import Path

import pika
import redis

from ttg.brokers.rabbitmq.server import PrivateRabbitMQ
from ttg.brokers.rabbitmq.topology import QueueNames
from ttg.brokers.redis.server import PrivateRedis


def publish_raw_task(backend: str, url: str, run_id: str, body: bytes) -> None:
    """Put ``body`` on the run's task queue the way any producer could, bypassing TTG's framing."""
    _publish_raw(backend, url, run_id, "tasks", body)


def publish_raw_result(backend: str, url: str, run_id: str, body: bytes) -> None:
    """Put ``body`` in the run's results channel the way anyone with access to the broker could."""
    _publish_raw(backend, url, run_id, "results", body)


def _publish_raw(backend: str, url: str, run_id: str, channel: str, body: bytes) -> None:
    if backend == "redis":
        with redis.Redis.from_url(url) as client:
            client.xadd(f"ttg:{{{run_id}}}:{channel}", {"m" if channel == "tasks" else "r": body})
        return
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        queue = QueueNames(run_id).tasks if channel == "tasks" else QueueNames(run_id).results
        conn.channel().basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    finally:
        conn.close()


def private_broker(backend: str, data_dir: Path) -> PrivateRedis | PrivateRabbitMQ:
    """A private broker that keeps what it confirmed across a SIGKILL and restart (Redis: AOF; RabbitMQ: durable queues)."""
    if backend == "redis":
        return PrivateRedis(appendonly=True, data_dir=data_dir)
    return PrivateRabbitMQ(data_dir=data_dir)
