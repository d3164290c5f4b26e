"""Broker nemeses against a real private redis-server: a fault heals after its duration, and always on heal_all()."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

import ttg.nemesis as nemesis_module
from ttg.brokers.redis.server import PrivateRedis
from ttg.config import load_run_config
from ttg.errors import ConfigError
from ttg.faults import FaultSpec, parse_fault
from ttg.nemesis import FaultSchedule, Nemesis, PartitionBroker, PauseBroker
from ttg.runtimes.local import LocalRuntime


def answers(server: PrivateRedis) -> bool:
    client = redis.Redis.from_url(server.url, socket_timeout=0.3)
    try:
        return bool(client.ping())
    except redis.TimeoutError:
        return False
    finally:
        client.close()


def test_a_paused_broker_answers_again_after_heal_and_heal_is_idempotent() -> None:
    with PrivateRedis() as server:
        with PauseBroker(server):
            assert not answers(server)
        assert answers(server)
        nemesis = PauseBroker(server)
        nemesis.heal()  # before inject: nothing to undo
        assert answers(server)


def test_a_timed_fault_heals_when_due_and_heal_all_ends_any_fault_early(tmp_path: Path) -> None:
    with PrivateRedis() as server:
        started = time.monotonic() - 1.0
        schedule = FaultSchedule((parse_fault("pause-broker@0%:0.5s"),), LocalRuntime(tmp_path), 10, started, {}, server)
        deadline = time.monotonic() + 5
        while not schedule.records and time.monotonic() < deadline:
            schedule.poll(chunks_done=1, redelivered_at=[])
            time.sleep(0.02)
        (rec,) = schedule.records
        assert rec.kind == "pause-broker" and not answers(server)
        while rec.healed_s is None and time.monotonic() < deadline:
            schedule.poll(chunks_done=1, redelivered_at=[])
            time.sleep(0.05)
        assert rec.healed_s is not None and answers(server)
        schedule.poll(chunks_done=2, redelivered_at=[])
        assert rec.recovered_s is not None  # a chunk completed after the heal

        long = FaultSchedule((parse_fault("pause-broker@0%:600s"),), LocalRuntime(tmp_path), 10, started, {}, server)
        while not long.records and time.monotonic() < deadline + 5:
            long.poll(chunks_done=1, redelivered_at=[])
            time.sleep(0.02)
        assert not answers(server)
        long.finish()  # the run ended (or failed) mid-fault
        assert answers(server) and long.records[0].healed_s is not None


def test_broker_faults_never_hit_a_shared_broker_and_a_redis_kill_turns_on_persistence() -> None:
    with pytest.raises(ConfigError, match="never a shared one"):
        load_run_config({"broker_url": "redis://127.0.0.1:6379/0", "faults": ["pause-broker@30%"]}, env={})
    cfg = load_run_config({"faults": ["kill-broker@30%:2s"]}, env={})
    assert cfg.persistence and cfg.faults[0].duration_s == 2.0


class _Gate(Nemesis):
    """A stand-in nemesis (no broker needed to test the schedule's bookkeeping): its heal waits for ``release``."""

    def __init__(self, kind: str, shows: str = "did it") -> None:
        self.kind, self.shows = kind, shows
        self.release = threading.Event()
        self.release.set()
        self.healing = threading.Event()

    def inject(self) -> None:
        pass

    def heal(self) -> None:
        self.healing.set()
        self.release.wait(30)

    def evidence(self) -> str:
        return self.shows


def test_a_slow_heal_holds_no_other_fault_and_a_fault_without_evidence_is_not_injected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Once, a RabbitMQ node's ~6 s restart held the schedule's lock: a 2 s partition healed 7 s late, and a pause
    # of a broker another fault had killed was recorded as healed and recovered. Here a heal that blocks (the
    # stand-in for a slow restart) must not hold up another fault's heal, nor the collector's poll.
    # (Three partitions: kinds that may be on together; a latency and a partition now wait for each other.)
    slow, other, blind = _Gate("partition-broker"), _Gate("partition-broker"), _Gate("partition-broker", shows="")
    slow.release.clear()
    made = iter([slow, other, blind])
    monkeypatch.setattr(nemesis_module, "nemesis_for", lambda *a, **k: next(made))
    specs = (parse_fault("partition-broker@0%:0.05s"), parse_fault("partition-broker@0%:0.2s"), parse_fault("partition-broker@0%:0.1s"))
    schedule = FaultSchedule(specs, LocalRuntime(tmp_path), 10, time.monotonic(), {}, immediate=True)
    schedule.poll(chunks_done=1, redelivered_at=[])
    assert len(schedule.records) == 3
    cut, slowed, pause = schedule.records
    try:
        assert slow.healing.wait(10), "the first fault's (slow) heal has begun"
        deadline = time.monotonic() + 10
        while slowed.healed_s is None and time.monotonic() < deadline:
            schedule.poll(chunks_done=1, redelivered_at=[])  # the collector's poll is not blocked by the slow heal either
            time.sleep(0.01)
        assert slowed.healed_s is not None and cut.healed_s is None, "the second fault healed on its own clock, during the slow heal"
    finally:
        slow.release.set()
    deadline = time.monotonic() + 10
    while (cut.healed_s is None or pause.healed_s is None) and time.monotonic() < deadline:
        time.sleep(0.01)
    schedule.poll(chunks_done=2, redelivered_at=[])
    schedule.finish()
    assert cut.recovered_s is not None and slowed.recovered_s is not None
    assert pause.recovered_s is None and pause.note.startswith("not injected: no evidence"), pause


class _ThreeAlive(LocalRuntime):
    """Three workers alive, no processes: the selection logic under test reads only ``alive()``."""

    def alive(self) -> list[str]:
        return ["w0", "w1", "w2"]


def test_a_fault_never_picks_a_worker_an_earlier_fault_already_hit(tmp_path: Path) -> None:
    # Soak seed 2082: a partition of "one" worker picked w2, which a terminate-worker had hit a moment before; w2 was
    # draining, alive but quiet, so the partition had nothing to hold and proved nothing.
    from ttg.nemesis import FaultContext, nemesis_for

    runtime = _ThreeAlive(tmp_path)
    proxies: dict[str, Any] = {"w0": object(), "w1": object(), "w2": object()}
    times = {"w2": 0.0, "w0": 1.0, "w1": 2.0}
    cut = nemesis_for(parse_fault("partition-broker@10%:1s/one"), FaultContext(runtime, times, proxies=proxies, hit={"w2"}))
    assert isinstance(cut, PartitionBroker) and set(cut.proxies) == {"w0"}
    every = nemesis_for(parse_fault("latency@10%:1s/all"), FaultContext(runtime, {}, proxies=proxies, hit={"w0", "w2"}))
    assert set(every.proxies) == {"w1"}  # type: ignore[attr-defined]
    kill = nemesis_for(parse_fault("kill-worker@10%/one"), FaultContext(runtime, times, hit={"w2"}))
    assert kill.spared == {"w2"}  # type: ignore[attr-defined]


def test_a_fault_on_the_broker_or_its_path_waits_while_the_broker_is_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Soak seed 3147: a partition fired while a kill-broker's restart was under way; it held no traffic (there was
    # none to hold) and the row failed as "not injected". Now it fires once the broker is back.
    restart, partition = _Gate("kill-broker"), _Gate("partition-broker")
    restart.release.clear()
    made = iter([restart, partition])
    monkeypatch.setattr(nemesis_module, "nemesis_for", lambda *a, **k: next(made))
    specs = (parse_fault("kill-broker@0%:0.01s"), parse_fault("partition-broker@0%:0.5s"))
    schedule = FaultSchedule(specs, LocalRuntime(tmp_path), 10, time.monotonic(), {}, immediate=True)
    try:
        schedule.poll(chunks_done=1, redelivered_at=[])
        assert [r.kind for r in schedule.records] == ["kill-broker"]
        assert restart.healing.wait(10)
        schedule.poll(chunks_done=1, redelivered_at=[])
        assert [r.kind for r in schedule.records] == ["kill-broker"], "no partition of a broker that is being restarted"
    finally:
        restart.release.set()
    deadline = time.monotonic() + 10
    while len(schedule.records) < 2 and time.monotonic() < deadline:
        schedule.poll(chunks_done=1, redelivered_at=[])
        time.sleep(0.01)
    assert [r.kind for r in schedule.records] == ["kill-broker", "partition-broker"]
    schedule.finish()


def test_a_broker_fault_waits_while_a_partition_or_latency_is_on_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Soak seed 9031: a pause fired during a latency fault; the paused broker took no traffic, the latency delayed
    # nothing, and the row failed as "not injected". Seed 8192: a kill during a partition made the partition's
    # recovery 16 s. Each fault now has the path to itself.
    latency, pause = _Gate("latency", shows=""), _Gate("pause-broker")  # no effect shown yet: it is not cut short
    made = iter([latency, pause])
    monkeypatch.setattr(nemesis_module, "nemesis_for", lambda *a, **k: next(made))
    specs = (parse_fault("latency@0%:0.3s"), parse_fault("pause-broker@0%:0.1s"))
    _one_waits_for_the_other(tmp_path, specs)


def test_a_latency_waits_while_a_partition_holds_the_traffic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Soak seed 10030: a 0.6 s latency fell inside a 1.8 s partition; blackholed traffic is not delayed, so it had
    # nothing to show and the row failed as "not injected".
    made = iter([_Gate("partition-broker", shows=""), _Gate("latency")])
    monkeypatch.setattr(nemesis_module, "nemesis_for", lambda *a, **k: next(made))
    _one_waits_for_the_other(tmp_path, (parse_fault("partition-broker@0%:0.3s"), parse_fault("latency@0%:0.1s")))


def test_a_partition_waits_for_a_latency_to_show_its_effect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Soak seed 12041: a partition fired 40 ms after a latency on the same worker; the latency had delayed nothing yet,
    # then had nothing to delay, and its row failed as "not injected".
    made = iter([_Gate("latency", shows=""), _Gate("partition-broker")])
    monkeypatch.setattr(nemesis_module, "nemesis_for", lambda *a, **k: next(made))
    _one_waits_for_the_other(tmp_path, (parse_fault("latency@0%:0.3s"), parse_fault("partition-broker@0%:0.1s")))


def _one_waits_for_the_other(tmp_path: Path, specs: tuple[FaultSpec, FaultSpec]) -> None:
    schedule = FaultSchedule(specs, LocalRuntime(tmp_path), 10, time.monotonic(), {}, immediate=True)
    schedule.poll(chunks_done=1, redelivered_at=[])
    assert [r.kind for r in schedule.records] == [specs[0].kind], f"no {specs[1].kind} while the {specs[0].kind} is on"
    deadline = time.monotonic() + 10
    while len(schedule.records) < 2 and time.monotonic() < deadline:
        schedule.poll(chunks_done=1, redelivered_at=[])
        time.sleep(0.01)
    first, second = schedule.records
    assert first.healed_at is not None and second.fired_at >= first.healed_at
    schedule.finish()


def test_a_due_fault_fires_before_a_sweep_that_speeds_up_after_a_stall_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Soak seed 8192: after a 16 s stall the whole-run average said a chunk took ~1 s, so a fault due at 69% waited
    # that long, and the last third of the sweep was done first: "not injected". The wait follows the recent pace.
    monkeypatch.setattr(nemesis_module, "nemesis_for", lambda *a, **k: _Gate("kill-worker"))
    schedule = FaultSchedule((parse_fault("kill-worker@69%"),), LocalRuntime(tmp_path), 100, time.monotonic() - 60, {})
    done = 60
    while done < 100 and not schedule.records:
        schedule.poll(chunks_done=done, redelivered_at=[])
        time.sleep(0.01)  # ~100 chunks a second from now on: the rest of the sweep takes ~0.4 s
        done += 1
    assert schedule.records, "the fault fired before the sweep's last chunk"
    assert 69 <= schedule.records[0].at_chunks < 100
    schedule.finish()


def test_a_due_broker_fault_cuts_short_a_latency_that_has_shown_its_effect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Soak seeds 10076 and 10101: a pause due at 70% waited for a latency to run its course and the short sweep ended
    # first ("not injected"). A latency that has delayed traffic already has proved what it can: it heals early.
    latency, pause = _Gate("latency"), _Gate("pause-broker")
    made = iter([latency, pause])
    monkeypatch.setattr(nemesis_module, "nemesis_for", lambda *a, **k: next(made))
    schedule = FaultSchedule(
        (parse_fault("latency@0%:600s"), parse_fault("pause-broker@10%:0.1s")), LocalRuntime(tmp_path), 10, time.monotonic(), {}, immediate=True
    )
    schedule.poll(chunks_done=0, redelivered_at=[])
    schedule.poll(chunks_done=1, redelivered_at=[])
    slowed, paused = schedule.records
    assert slowed.healed_at is not None and slowed.healed_s is not None and slowed.healed_s < 10, "the 600 s latency was healed early"
    assert paused.fired_at >= slowed.healed_at
    schedule.finish()


def test_every_fault_kind_has_its_nemesis_or_travels_with_the_workers_and_each_nemesis_serves_known_kinds(tmp_path: Path) -> None:
    # A new kind is a row in ttg.faults.KINDS plus a Nemesis subclass listing it: a row without one fails here, not
    # mid-run; and a kind that needs what the run lacks is "not injected", a typed error the schedule records.
    from ttg.errors import FaultNotInjected
    from ttg.faults import KINDS
    from ttg.nemesis import FaultContext, nemesis_for
    from ttg.nemesis.base import BUILDERS

    assert set(BUILDERS) == {k.name for k in KINDS.values() if not k.at_launch}
    bare = FaultContext(_ThreeAlive(tmp_path))  # no private broker, no proxies, no run connection, not ttg run itself
    needs = {"broker": "private broker", "proxy": "fault proxies", "message": "broker connection", "coordinator": "ttg run process", "launch": "set up when"}
    for kind in KINDS.values():
        spec = parse_fault(f"{kind.name}@10%")
        if kind.family == "worker":
            assert nemesis_for(spec, bare).kind == kind.name
            continue
        with pytest.raises(FaultNotInjected, match=needs[kind.family]):
            nemesis_for(spec, bare)
