"""Broker nemeses against a real private redis-server: a fault heals after its duration, and always on heal_all()."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from ttg.config import load_run_config
from ttg.errors import ConfigError
from ttg.faults import parse_fault
from ttg.nemesis import FaultSchedule, PauseBroker
from ttg.runtimes.local import LocalRuntime
from ttg.servers.redis_server import PrivateRedis


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
