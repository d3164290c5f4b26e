"""The fault proxy against a real private redis-server: pass, blackhole (silence, not errors), reset, latency."""

from __future__ import annotations

import pytest
import redis

from ttg.brokers.redis.server import PrivateRedis
from ttg.nemesis import FaultProxy, Latency, PartitionBroker


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5, retry_on_timeout=False)


def test_traffic_passes_then_a_partition_silences_it_until_healed(redis_broker: PrivateRedis) -> None:
    proxy = FaultProxy("127.0.0.1", redis_broker.port)
    try:
        c = client(proxy.url_for(redis_broker.url))
        assert c.ping()
        with PartitionBroker({"w0": proxy}) as cut:
            assert cut.evidence() == ""  # nothing was held back yet
            with pytest.raises(redis.TimeoutError):
                c.ping()  # silence: the request is held, nothing answers
            assert cut.evidence().endswith("piece(s) of traffic held back")
        c2 = client(proxy.url_for(redis_broker.url))
        assert c2.ping()  # healed
        c.close()
        c2.close()
    finally:
        proxy.close()


def test_reset_closes_connections_and_latency_delays_them(redis_broker: PrivateRedis) -> None:
    proxy = FaultProxy("127.0.0.1", redis_broker.port)
    try:
        c = client(proxy.url_for(redis_broker.url))
        assert c.ping()
        proxy.reset()
        with pytest.raises(redis.ConnectionError):
            c.ping()
        with Latency({"w0": proxy}, latency_s=0.1) as slow:
            c2 = client(proxy.url_for(redis_broker.url))
            c2.ping()
            delayed = slow.evidence()
            assert delayed.endswith("piece(s) of traffic delayed by 100 ms")
            assert int(delayed.split()[0]) >= 2  # at least PING and its answer (the client's handshake adds more)
        c2.close()
        assert proxy.url_for("amqp://u:p@broker:5672/%2F") == f"amqp://u:p@127.0.0.1:{proxy.port}/%2F"
    finally:
        proxy.close()


def test_overlapping_partitions_each_keep_their_window_and_their_evidence(redis_broker: PrivateRedis) -> None:
    # Seen in a 200-run soak: a partition of one worker inside a partition of all showed no evidence (the traffic was
    # already held), and the first heal reopened the path while the second partition was still on.
    proxy = FaultProxy("127.0.0.1", redis_broker.port)
    try:
        c = client(proxy.url_for(redis_broker.url))
        assert c.ping()
        outer, inner = PartitionBroker({"w0": proxy}), PartitionBroker({"w0": proxy})
        outer.inject()
        with pytest.raises(redis.TimeoutError):
            c.ping()  # held by the outer partition
        inner.inject()
        assert inner.evidence().endswith("piece(s) of traffic held back"), "what is held when it starts, it holds too"
        outer.heal()
        c2 = client(proxy.url_for(redis_broker.url))
        with pytest.raises(redis.TimeoutError):
            c2.ping()  # the inner partition is still on
        inner.heal()
        inner.heal()  # healing twice is harmless
        c3 = client(proxy.url_for(redis_broker.url))
        assert c3.ping()
        for x in (c, c2, c3):
            x.close()
    finally:
        proxy.close()
