"""RabbitMQ internals against a real private rabbitmq-server: topology, batch splitting, crash-looping chunks, the private node.

The behaviour every backend shares is in test_broker_contract.py.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import numpy as np
import pytest

from ttg.broker import Broker, open_broker
from ttg.brokers.rabbitmq.broker import RabbitMQBroker
from ttg.brokers.rabbitmq.coordinator import MAX_TASKS_PER_MESSAGE, MESSAGES_PER_WORKER, chunks_per_message
from ttg.brokers.rabbitmq.server import PrivateRabbitMQ
from ttg.brokers.rabbitmq.status import _get
from ttg.brokers.rabbitmq.wire import BATCH
from ttg.plan import ChunkPlan
from ttg.producer import publish_plan


@pytest.fixture
def coord(rabbitmq_server: PrivateRabbitMQ) -> Iterator[Broker]:
    b = open_broker(rabbitmq_server.url, "r" + uuid.uuid4().hex[:8])
    yield b
    b.delete_run()
    b.close()


def crash(worker: Broker) -> None:
    """What a SIGKILL does to a worker's broker state: the connection goes, nothing is acked or sent."""
    assert isinstance(worker, RabbitMQBroker) and worker._client is not None
    worker._pending.clear()
    worker._client.close()


def queue_info(server: PrivateRabbitMQ, name: str) -> dict:  # type: ignore[type-arg]
    (info,) = [q for q in _get(server.management_url, "/api/queues/%2F") if q["name"] == name]
    return info


def test_the_topology_is_durable_with_quorum_task_queues_and_a_ttl_retry_queue(coord: Broker, rabbitmq_server: PrivateRabbitMQ) -> None:
    coord.declare(5)
    coord.declare(5)  # idempotent
    assert isinstance(coord, RabbitMQBroker)
    q = coord.q
    tasks, retry = queue_info(rabbitmq_server, q.tasks), queue_info(rabbitmq_server, q.retry)
    assert tasks["durable"] and tasks["type"] == "quorum"
    assert retry["type"] == "quorum" and retry["arguments"]["x-dead-letter-routing-key"] == q.tasks
    assert retry["arguments"]["x-dead-letter-strategy"] == "at-least-once" and retry["arguments"]["x-message-ttl"] > 0
    for name in (q.results, q.dead, q.rejected, q.control):
        assert queue_info(rabbitmq_server, name)["durable"]


def test_a_batch_returned_by_a_crashed_worker_comes_back_as_single_chunk_messages(coord: Broker, rabbitmq_server: PrivateRabbitMQ) -> None:
    coord.declare(512, workers=8)  # 512 chunks for 8 workers: two per task message
    publish_plan(coord, ChunkPlan(512, 1))
    a = open_broker(rabbitmq_server.url, coord.run_id, consumer="a", prefetch=1)
    first = a.receive(2.0)
    assert first is not None and first.token.chunk_id == 0
    crash(a)
    b = open_broker(rabbitmq_server.url, coord.run_id, consumer="b", prefetch=1)
    try:
        seen: dict[int, int] = {}
        while not {0, 1} <= set(seen) and (d := b.receive(2.0)) is not None:
            seen[d.token.chunk_id] = d.deliveries
            b.complete(d, d.token.chunk_id, b"r")
        # Split and re-published at the tail, each carrying the batch's delivery count.
        assert seen[0] == seen[1] == 2, seen
        assert seen[2] == seen[3] == 1, seen
        assert isinstance(b, RabbitMQBroker) and len(seen) == 512
    finally:
        b.close()
        a.close()


def test_a_cheap_plan_for_two_workers_arrives_many_chunks_to_a_message(coord: Broker, rabbitmq_server: PrivateRabbitMQ) -> None:
    coord.declare(10_000, workers=2)
    publish_plan(coord, ChunkPlan(10_000, 1))
    w = open_broker(rabbitmq_server.url, coord.run_id, consumer="w", prefetch=1)
    try:
        got = [d.token for _ in range(MAX_TASKS_PER_MESSAGE) if (d := w.receive(2.0)) is not None]
        # One message: its chunks in order, the last of them marked as its last.
        assert [t.chunk_id for t in got] == list(range(128)) and len({(t.generation, t.tag) for t in got}) == 1
        assert [t.last for t in got] == [False] * 127 + [True]
    finally:
        w.close()


def test_a_chunk_that_kills_its_worker_every_time_is_dead_lettered_after_max_deliveries(coord: Broker, rabbitmq_server: PrivateRabbitMQ) -> None:
    coord.declare(1)
    publish_plan(coord, ChunkPlan(1, 1))
    for attempt in (1, 2):
        w = open_broker(rabbitmq_server.url, coord.run_id, consumer=f"w{attempt}", max_deliveries=2)
        d = w.receive(3.0)
        assert d is not None and d.deliveries == attempt
        crash(w)
        w.close()
    last = open_broker(rabbitmq_server.url, coord.run_id, consumer="w3", max_deliveries=2)
    try:
        assert last.receive(1.5) is None, "a chunk past its deliveries must not be handed out again"
    finally:
        last.close()
    (dead,) = coord.dead_letters()
    assert dead.chunk_id == 0 and dead.deliveries == 2 and "without completing" in dead.reason


def test_the_private_node_is_isolated_from_the_system_broker(rabbitmq_server: PrivateRabbitMQ) -> None:
    assert rabbitmq_server.port != 5672 and rabbitmq_server.node != "rabbit@localhost"
    assert (rabbitmq_server.data_dir / "mnesia").is_dir()
    server = PrivateRabbitMQ().start()
    node = server.node
    assert server.startup_s is not None and server.startup_s < 60
    server.stop()
    left = subprocess.run(["pgrep", "-f", node.split("@")[0]], capture_output=True, text=True).stdout
    assert not left.strip(), f"processes of the stopped node remain: {left}"
    assert not server.data_dir.exists()


def test_management_api_lists_the_runs_queues(coord: Broker, rabbitmq_server: PrivateRabbitMQ) -> None:
    coord.declare(1)
    names = [q["name"] for q in _get(rabbitmq_server.management_url, f"/api/queues/{quote('/', safe='')}")]
    assert isinstance(coord, RabbitMQBroker) and set(coord.q.all) <= set(names)


@pytest.mark.parametrize("peer", ["silent", "refusing"])
def test_an_amqp_client_closed_while_it_connects_stops_cleanly(peer: str, caplog: pytest.LogCaptureFixture) -> None:
    # pika 1.x has no Connection.is_opening: reading it on close crashed the I/O loop while a client (re)connected.
    import socket

    from ttg.brokers.rabbitmq.amqp_client import AmqpClient

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if peer == "silent":
        listener.listen(1)  # accepts, never says Connection.Start: the client stays in its opening handshake
    else:
        listener.close()  # nobody listens: the client is between reconnection attempts
    try:
        client = AmqpClient(f"amqp://u:p@127.0.0.1:{port}/%2F", name="closing-test", heartbeat_s=5)
        time.sleep(0.3)
        client.close(timeout_s=5.0)
        assert not client._thread.is_alive(), "close() stops the I/O thread"
        assert "I/O loop crashed" not in caplog.text and client.last_error != "I/O loop crashed", caplog.text
    finally:
        listener.close()


def _policy(server: PrivateRabbitMQ, name: str, body: dict | None) -> None:  # type: ignore[type-arg]
    """Set (or, with no body, delete) a policy on the private node through its management API."""
    auth = base64.b64encode(f"{server.user}:{server.password}".encode()).decode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{server.management_port}/api/policies/%2F/{name}",
        data=json.dumps(body).encode() if body else None,
        method="PUT" if body else "DELETE",
        headers={"Authorization": f"Basic {auth}", "content-type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=10).close()


def test_a_message_whose_rejection_the_broker_refuses_comes_back_and_the_worker_carries_on(coord: Broker, rabbitmq_server: PrivateRabbitMQ) -> None:
    # Found in review: a refused publish (basic.nack) of a rejected message raised out of the worker (a crash), and on
    # the I/O thread's path left the original unacknowledged for good. An attacker with a policy can make a queue refuse.
    assert isinstance(coord, RabbitMQBroker)
    coord.declare(1)
    policy = f"full-{coord.run_id}"
    _policy(rabbitmq_server, policy, {"pattern": f"^{coord.q.rejected}$", "definition": {"max-length": 0, "overflow": "reject-publish"}, "apply-to": "queues"})
    w = open_broker(rabbitmq_server.url, coord.run_id, consumer="w", max_deliveries=50)
    try:
        coord.client.publish(coord.q.tasks, [(b"\xc1 not msgpack", {})])[0].result(timeout=10)
        # This one is rejected on the I/O thread (its framing header is unreadable), never handed to the worker.
        coord.client.publish(coord.q.tasks, [(b"framed junk", {BATCH: "zzz"})])[0].result(timeout=10)
        d = w.receive(5.0)
        assert d is not None and d.deliveries == 1
        w.reject(d, "rejected: junk")  # refused: no exception, the message goes back
        again = w.receive(5.0)
        assert again is not None and again.body == d.body and again.deliveries == 2, again
        assert coord.rejections() == []
        _policy(rabbitmq_server, policy, None)
        w.reject(again, "rejected: junk")
        deadline = time.monotonic() + 10
        while len(letters := coord.rejections()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        by_body = {x.body: x for x in letters}
        assert set(by_body) == {d.body, b"framed junk"}, letters
        assert by_body[d.body].reason == "rejected: junk" and by_body[d.body].deliveries == 2, letters
        assert w.receive(1.5) is None, "nothing is left in the queue"
    finally:
        with contextlib.suppress(urllib.error.HTTPError):  # deleted already, unless an assertion failed first
            _policy(rabbitmq_server, policy, None)
        w.close()


def _slow_worker(server: PrivateRabbitMQ, run_id: str) -> RabbitMQBroker:
    """A worker that holds one task message at a time and gives back what would keep it more than 0.5 s."""
    return RabbitMQBroker(server.url, run_id, consumer="slow", prefetch=1, hold_limit_s=0.5)


def _drain(server: PrivateRabbitMQ, run_id: str, seen: dict[int, list[int]]) -> None:
    """Take and complete chunks on a fast worker until none comes for 2 s, noting each in ``seen`` (id -> deliveries of
    each take)."""
    fast = open_broker(server.url, run_id, consumer="fast")
    try:
        while (d := fast.receive(2.0)) is not None:
            seen.setdefault(d.token.chunk_id, []).append(d.deliveries)
            fast.complete(d, d.token.chunk_id, b"r")
    finally:
        fast.close()


def test_a_worker_whose_chunks_are_slow_gives_back_the_rest_of_a_message_packed_for_fast_ones(coord: Broker, rabbitmq_server: PrivateRabbitMQ) -> None:
    # 32 chunks a message; a chunk takes the slow worker 0.2 s, so a message would keep it 6 s, past its 0.5 s limit.
    coord.declare(1024, workers=1)
    publish_plan(coord, ChunkPlan(1024, 1))
    slow = _slow_worker(rabbitmq_server, coord.run_id)
    try:
        d0 = slow.receive(3.0)
        assert d0 is not None and d0.token.chunk_id == 0
        time.sleep(0.2)
        slow.complete(d0, 0, b"r")
        d1 = slow.receive(3.0)  # it knows its pace now: chunks 2 to 31 go back to the queue
        assert d1 is not None and d1.token.chunk_id == 1 and d1.token.last, d1
        slow.complete(d1, 1, b"r")
        # Prefetch 1: the next message comes only once the first is acked, its two chunks done and 30 given back.
        d32 = slow.receive(5.0)
        assert d32 is not None and d32.token.chunk_id == 32, d32
        slow.complete(d32, 32, b"r")
    finally:
        slow.close()
    seen: dict[int, list[int]] = {0: [1], 1: [1], 32: [1]}
    _drain(rabbitmq_server, coord.run_id, seen)
    assert sorted(seen) == list(range(1024)), "no chunk lost"
    assert all(len(v) == 1 for v in seen.values()), {c: v for c, v in seen.items() if len(v) > 1}
    # Giving work back is no delivery: the chunks given back come with the count they had.
    assert all(seen[c] == [1] for c in [*range(2, 32), *range(33, 64)]), seen


def test_a_slow_worker_also_gives_back_the_message_waiting_behind_the_one_in_hand(coord: Broker, rabbitmq_server: PrivateRabbitMQ) -> None:
    # Prefetch 2: the second message (chunks 32 to 63) waits in the worker while it computes the first. Once the worker
    # knows its chunks are slow, that one goes back too, none of it started, rather than wait out the first message.
    coord.declare(1024, workers=1)  # 32 chunks a message
    publish_plan(coord, ChunkPlan(1024, 1))
    slow = RabbitMQBroker(rabbitmq_server.url, coord.run_id, consumer="slow", prefetch=2, hold_limit_s=0.5)
    try:
        d0 = slow.receive(3.0)
        assert d0 is not None and d0.token.chunk_id == 0
        time.sleep(0.2)
        slow.complete(d0, 0, b"r")
        d1 = slow.receive(3.0)
        assert d1 is not None and d1.token.chunk_id == 1 and d1.token.last, d1
        slow.complete(d1, 1, b"r")
    finally:
        slow.close()  # whatever came after is returned now, counted as a delivery
    seen: dict[int, list[int]] = {0: [1], 1: [1]}
    _drain(rabbitmq_server, coord.run_id, seen)
    assert sorted(seen) == list(range(1024)), "no chunk lost"
    # Handed back, not returned by the close: each chunk of both messages came once more, with its count unchanged.
    assert all(seen[c] == [1] for c in range(2, 64)), [(c, seen[c]) for c in range(2, 64) if seen[c] != [1]]


def test_a_worker_that_closes_mid_message_hands_back_what_it_has_not_started(coord: Broker, rabbitmq_server: PrivateRabbitMQ) -> None:
    # A SIGTERM's drain: the worker finishes what it started and closes holding the rest of one message and a second
    # one prefetched. Those come again once each, this delivery counted (as a closed connection's return counts it);
    # the finished chunk is not redone. And the acks that settle them take no new messages with them: the worker stops
    # consuming first, so the broker refills no prefetch that the closing connection would then return.
    coord.declare(1024, workers=1)  # 32 chunks a message
    publish_plan(coord, ChunkPlan(1024, 1))
    w = RabbitMQBroker(rabbitmq_server.url, coord.run_id, consumer="leaving", prefetch=2)
    d0 = w.receive(3.0)
    assert d0 is not None and d0.token.chunk_id == 0
    time.sleep(0.3)  # the second message arrives
    w.complete(d0, 0, b"r")
    w.close()
    seen: dict[int, list[int]] = {0: [1]}
    _drain(rabbitmq_server, coord.run_id, seen)
    assert seen[0] == [1], "a finished chunk is not redone"
    assert sorted(seen) == list(range(1024)), "no chunk lost"
    assert all(seen[c] == [2] for c in range(1, 64)), [(c, seen[c]) for c in range(64) if seen[c] != [2]]
    assert all(seen[c] == [1] for c in range(64, 1024)), [(c, seen[c]) for c in range(64, 1024) if seen[c] != [1]][:5]


def test_a_resumed_run_that_publishes_a_few_chunks_still_spreads_them_over_many_messages(coord: Broker, rabbitmq_server: PrivateRabbitMQ) -> None:
    # Sized by what is published: 200 unrecorded chunks of a 10,000-chunk plan for 2 workers go 3 to a message,
    # not 128 (the plan's size), which would leave one worker with everything.
    plan = ChunkPlan(10_000, 1)
    seen = np.ones(plan.chunks, dtype=bool)
    seen[::50] = False
    coord.declare(plan.chunks, workers=2)
    assert publish_plan(coord, plan, seen) == 200
    w = open_broker(rabbitmq_server.url, coord.run_id, consumer="w", prefetch=1)
    try:
        first: list[int] = []
        while (d := w.receive(2.0)) is not None:
            first.append(d.token.chunk_id)
            if d.token.last:
                break
        assert first == [0, 50, 100]
    finally:
        w.close()


def test_chunks_whose_giving_back_the_broker_refuses_come_again_with_their_message(coord: Broker, rabbitmq_server: PrivateRabbitMQ) -> None:
    assert isinstance(coord, RabbitMQBroker)
    coord.declare(1024, workers=1)  # 32 chunks a message
    publish_plan(coord, ChunkPlan(1024, 1))
    policy = f"full-{coord.run_id}"
    slow = _slow_worker(rabbitmq_server, coord.run_id)
    try:
        d0 = slow.receive(3.0)
        assert d0 is not None and d0.token.chunk_id == 0
        _policy(rabbitmq_server, policy, {"pattern": f"^{coord.q.tasks}$", "definition": {"max-length": 0, "overflow": "reject-publish"}, "apply-to": "queues"})
        time.sleep(1.0)  # the policy takes effect on the queue
        slow.complete(d0, 0, b"r")
        d1 = slow.receive(3.0)  # gives back chunks 2 to 31: refused, so the whole message goes back instead
        assert d1 is not None and d1.token.chunk_id == 1
        _policy(rabbitmq_server, policy, None)
        slow.complete(d1, 1, b"r")
        # The message went back at once, not when its worker closed: its one prefetch slot is free, and work comes again.
        assert slow.receive(5.0) is not None
    finally:
        with contextlib.suppress(urllib.error.HTTPError):
            _policy(rabbitmq_server, policy, None)
        slow.close()
    seen: dict[int, list[int]] = {0: [1], 1: [1]}
    _drain(rabbitmq_server, coord.run_id, seen)
    assert sorted(seen) == list(range(1024)), "no chunk lost"
    # The first message came back whole, split into single chunks (its first two a second time, and any piece the broker
    # took before it refused the rest: duplicates, which the ledger drops). The slow worker took at most one message
    # more before it closed; the rest were never touched.
    assert all(max(seen[c]) >= 2 for c in range(32)), sorted(seen.items())[:40]
    assert all(seen[c] == [1] for c in range(64, 1024)), [(c, v) for c, v in seen.items() if c >= 64 and v != [1]]


@pytest.mark.parametrize(
    ("chunks", "workers", "per_message"),
    [
        (10_000, 2, 128),  # a cheap 10M sweep at chunk 1,000: 79 messages, not 10,000
        (1_000, 2, 15),  # 67 messages: each worker still gets 32 or more
        (10_000, 100, 3),  # many workers: every one of them starts with work
        (5_000, 100, 1),
        (40, 2, 1),  # too few chunks to batch: one a message
        (10**12, 1, 128),  # capped, however large the plan
        (100, 0, 3),  # a worker count of 0 (none known) is taken as one
    ],
)
def test_task_messages_are_sized_by_the_plan_and_the_workers_that_share_it(chunks: int, workers: int, per_message: int) -> None:
    per = chunks_per_message(chunks, workers)
    assert per == per_message
    assert -(-chunks // per) >= min(chunks, MESSAGES_PER_WORKER * max(1, workers)) or per == MAX_TASKS_PER_MESSAGE
