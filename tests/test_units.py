"""Pure logic: plan, sweep grid, messages, checksum, config, faults, algorithms."""

from __future__ import annotations

import dataclasses
import time

import msgpack
import numpy as np
import pytest

from ttg import algorithms, checksum
from ttg.config import Verify, load_run_config, redact_url
from ttg.errors import AlgorithmError, ConfigError, MessageError
from ttg.faults import parse_fault
from ttg.messages import ResultMessage, TaskMessage, decode_result, decode_task
from ttg.plan import ChunkPlan
from ttg.sweep import SweepSpec


def test_plan_covers_every_parameter_exactly_once_with_stable_ids() -> None:
    plan = ChunkPlan(1003, 10)
    assert plan.chunks == 101
    covered = np.concatenate([np.arange(c.start, c.stop) for c in plan])
    assert np.array_equal(covered, np.arange(1003))
    assert plan.chunk(100).size == 3
    assert [c.id for c in plan] == list(range(101))


@pytest.mark.parametrize("chunks,workers", [(100, 2), (101, 3), (5, 7), (1, 1)])
def test_static_assignment_partitions_the_chunks(chunks: int, workers: int) -> None:
    plan = ChunkPlan(chunks * 10, 10)
    blocks = [list(plan.static_assignment(workers, i)) for i in range(workers)]
    assert sorted(c for b in blocks for c in b) == list(range(chunks))
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_grid_axes_map_indices_row_major() -> None:
    spec = SweepSpec.grid({"alpha": [0.1, 0.2], "beta": [1, 2, 3]})
    assert spec.params == 6
    vals = spec.values(np.arange(6))
    assert vals["alpha"].tolist() == [0.1, 0.1, 0.1, 0.2, 0.2, 0.2]
    assert vals["beta"].tolist() == [1, 2, 3, 1, 2, 3]
    with pytest.raises(ConfigError, match="6 points"):
        SweepSpec(7, spec.axes)


def test_messages_round_trip() -> None:
    task = TaskMessage("r1", 3, 30, 40)
    assert decode_task(task.encode()) == task
    res = ResultMessage("r1", 3, 30, 40, "w0", 2, np.arange(10, dtype="<f8").tobytes(), 0.5)
    back = decode_result(res.encode())
    assert back == res and back.array().tolist() == list(range(10))
    assert back.finished_at is None and b"\xa1f" not in res.encode()  # an older worker's result carries no time
    timed = dataclasses.replace(res, finished_at=1_800_000_000.25)
    assert decode_result(timed.encode()).finished_at == 1_800_000_000.25
    with pytest.raises(MessageError, match="field 'f' must be int/float"):
        decode_result(msgpack.packb({**msgpack.unpackb(res.encode()), "f": "soon"}))


def test_the_sleep_algorithm_gives_the_demo_values_and_sleeps_its_cost_instead_of_spinning() -> None:
    sleep = algorithms.load("sleep")
    cpu0, t0 = time.process_time(), time.monotonic()
    out = algorithms.evaluate(sleep, 0, 1000, cost_us=200)  # 0.2 s of cost for 1,000 parameters
    slept, cpu = time.monotonic() - t0, time.process_time() - cpu0
    assert np.array_equal(out, algorithms.demo(np.arange(1000)))
    assert slept >= 0.2 and cpu < 0.1, (slept, cpu)  # asleep, not burning: a simulated remote machine costs no CPU here


@pytest.mark.parametrize(
    "raw,error",
    [
        (b"\xc1garbage", "not valid msgpack"),
        (msgpack.packb([1, 2]), "must be a map"),
        (msgpack.packb({"v": 99, "k": "task"}), "schema version 99"),
        (msgpack.packb({"v": 1, "k": "result"}), "expected a task"),
        (msgpack.packb({"v": 1, "k": "task", "run": "r", "c": "3", "a": 0, "b": 1}), "field 'c' must be int"),
        (msgpack.packb({"v": 1, "k": "task", "run": "r", "c": 3, "a": 5, "b": 1}), "invalid range"),
        (b"", "not valid msgpack"),
    ],
)
def test_malformed_tasks_raise_message_error_naming_the_problem(raw: bytes, error: str) -> None:
    with pytest.raises(MessageError, match=error):
        decode_task(raw)


def test_result_with_wrong_value_count_is_rejected() -> None:
    raw = ResultMessage("r", 0, 0, 10, "w", 1, b"\0" * 72, 0.0).encode()
    with pytest.raises(MessageError, match="holds 9 values for 10"):
        decode_result(raw)


def test_checksum_is_order_independent_and_sensitive() -> None:
    idx = np.arange(1000)
    vals = algorithms.demo(idx)
    whole = checksum.pair_sum(idx, vals)
    parts = (checksum.pair_sum(idx[500:], vals[500:]) + checksum.pair_sum(idx[:500], vals[:500])) & checksum.MASK
    assert whole == parts
    changed = vals.copy()
    changed[7] += 1e-9
    assert checksum.pair_sum(idx, changed) != whole
    swapped = vals.copy()
    swapped[[3, 4]] = swapped[[4, 3]]
    assert checksum.pair_sum(idx, swapped) != whole


def test_demo_reference_agrees_with_demo_and_the_formula() -> None:
    p = np.arange(0, 100_000, 7)
    assert np.array_equal(algorithms.demo(p), algorithms.demo_reference(p))
    assert algorithms.demo(np.array([123]))[0] == ((7 * 123 + 13) % 1000) + (123 % 100) / 100


def test_algorithm_loading_errors_are_clear() -> None:
    with pytest.raises(AlgorithmError, match=r"package\.module:function"):
        algorithms.load("nocolon")
    with pytest.raises(AlgorithmError, match="cannot import"):
        algorithms.load("no_such_module_xyz:f")
    with pytest.raises(AlgorithmError, match="no callable"):
        algorithms.load("algos:nothing_here")
    with pytest.raises(AlgorithmError, match="shape"):
        algorithms.evaluate(algorithms.load("algos:wrong_length"), 0, 10)


def test_vectorize_wraps_a_scalar_function() -> None:
    out = algorithms.evaluate(algorithms.load("algos:square_root"), 0, 5)
    assert out.tolist() == [0.0, 1.0, 2**0.5, 3**0.5, 2.0]


def test_config_precedence_argument_over_env_over_default() -> None:
    env = {"TTG_CHUNK": "500", "TTG_WORKERS": "3", "TTG_PARAMS": "1000"}
    cfg = load_run_config({"workers": 5}, env=env)
    assert (cfg.chunk, cfg.workers, cfg.params, cfg.sweep.backend) == (500, 5, 1000, "redis")


@pytest.mark.parametrize(
    "given,message",
    [
        ({"chunk": 0}, "chunk must be in 1..1,000,000 (got 0); pass --chunk or set TTG_CHUNK"),
        ({"params": "lots"}, "params must be a whole number"),
        ({"backend": "kafka"}, "backend must be one of redis, rabbitmq"),
        ({"params": 10, "chunk": 20}, "must not exceed params"),
        ({"verify": "most"}, "verify must be full, off or sample:N"),
        ({"broker_url": "http://x"}, "broker URL must start with redis://"),
        ({"backend": "redis", "broker_url": "amqp://h"}, "does not match --backend redis"),
        ({"faults": ["explode@30%"]}, "unknown fault kind 'explode'"),
        ({"faults": ["kill-worker@30%"], "workers": 1}, "would stop all 1 worker(s) and leave none to take over"),
    ],
)
def test_config_errors_name_the_setting_and_the_fix(given: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_run_config(given, env={})


def test_fault_grammar() -> None:
    f = parse_fault("kill-worker@30%")
    assert (f.kind, f.at_fraction, str(f)) == ("kill-worker", 0.3, "kill-worker@30%")
    with pytest.raises(ConfigError, match="KIND@P%"):
        parse_fault("kill-worker")
    assert Verify.parse("sample:50") == Verify("sample", 50)


@pytest.mark.parametrize(
    ("text", "kind", "duration", "target"),
    [
        ("kill-worker@30%/2", "kill-worker", None, "2"),
        ("terminate-worker@50%/25%", "terminate-worker", None, "25%"),
        ("kill-pod@30%/random", "kill-pod", None, "random"),
        ("partition-broker@30%:3s/w1", "partition-broker", 3.0, "w1"),
        ("latency@20%:1.5s/all", "latency", 1.5, "all"),
        ("pause-broker@30%", "pause-broker", 3.0, None),  # the kind's default duration
        ("poison-chunk@50%/3", "poison-chunk", None, "3"),
    ],
)
def test_fault_targets_and_durations_round_trip(text: str, kind: str, duration: float | None, target: str | None) -> None:
    f = parse_fault(text)
    assert (f.kind, f.duration, f.target) == (kind, duration, target)
    assert parse_fault(str(f)) == f


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kill-worker@30%:2s", "takes no duration"),
        ("kill-broker@30%/w1", "takes no /TARGET"),
        ("kill-worker@30%/0", "fault target must be"),
        ("kill-worker@30%/150%", "fault target must be"),
        ("poison-chunk@30%/some", "number of chunks to poison"),
        ("kill-worker@100%", "0..99%"),
    ],
)
def test_fault_errors_say_what_to_change(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_fault(text)


def test_fault_targets_must_leave_a_survivor_and_name_real_workers() -> None:
    with pytest.raises(ConfigError, match="would stop all 3 worker"):
        load_run_config({"workers": 3, "faults": ["kill-worker@30%/all"]}, env={})
    with pytest.raises(ConfigError, match="would stop all 3 worker"):
        load_run_config({"workers": 3, "faults": ["terminate-worker@30%/100%"]}, env={})
    with pytest.raises(ConfigError, match="names worker 'w5'"):
        load_run_config({"workers": 3, "faults": ["partition-broker@30%:1s/w5"]}, env={})
    load_run_config({"workers": 3, "mode": "static", "faults": ["kill-worker@30%/all"]}, env={})  # static mode: losing them all is the point
    assert parse_fault("poison-chunk@50%/3").poisoned_chunks(10) == [5, 6, 7]
    assert parse_fault("poison-chunk@99%/3").poisoned_chunks(10) == [9]


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("amqp://ttg:s3cret@host:5672/%2F?heartbeat=5", "amqp://ttg:***@host:5672/%2F?heartbeat=5"),
        ("redis://host:6379/0?password=s3cret&socket_timeout=2", "redis://host:6379/0?password=***&socket_timeout=2"),
        ("redis://u:s3cret@host/0?db=1&Api_Key=s3cret&auth_token=s3cret", "redis://u:***@host/0?db=1&Api_Key=***&auth_token=***"),
        ("redis://u:s3cret@host:abc/0", "redis://u:***@host:abc/0"),  # unreadable port: still no password
        ("redis://[::1:s3cret@host/0", "<unreadable URL>"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://:s3cr#t@h:1/0", "redis://:***@h:1/0"),  # unencoded # / ?: a parser would see no password at all
        ("redis://:s3/cr?t@h:1/0?db=1", "redis://:***@h:1/0?db=1"),
        ("redis://h/0?%70assword=s3cret", "redis://h/0?%70assword=***"),  # redis-py decodes option names
        ("amqps://u:p@h/%2F?ssl_options=%7B%27password%27%3A%27s3cret%27%7D", "amqps://u:***@h/%2F?ssl_options=***"),
    ],
)
def test_every_password_form_is_redacted(url: str, shown: str) -> None:
    assert redact_url(url) == shown and "s3cret" not in str(redact_url(url))


def test_passwords_are_redacted() -> None:
    cfg = load_run_config({"broker_url": "redis://u:s3cret@h:1/0"}, env={})
    assert "s3cret" not in repr(cfg)


def test_grid_axes_on_the_command_line_set_the_sweep_size() -> None:
    cfg = load_run_config({"grid": ["alpha=0:1:11", "beta=1,2,3"], "chunk": 5}, env={})
    assert cfg.params == 33
    spec = cfg.sweep.sweep_spec(cfg.params)
    assert spec.values(np.array([0, 4, 32]))["alpha"].tolist() == [0.0, 0.1, 1.0]
    assert load_run_config({}, env={"TTG_GRID": "a=1,2;b=1,2,3", "TTG_CHUNK": "1"}).params == 6
    with pytest.raises(ConfigError, match="disagrees with the --grid axes, which hold 33 points"):
        load_run_config({"grid": ["alpha=0:1:11", "beta=1,2,3"], "params": 10, "chunk": 5}, env={})
    with pytest.raises(ConfigError, match="NAME=v1,v2"):
        load_run_config({"grid": ["alpha"]}, env={})
    with pytest.raises(ConfigError, match="unique"):
        load_run_config({"grid": ["a=1", "a=2"], "chunk": 1}, env={})
    # Found in review: a long value list given through the API passed, and every worker then failed to start (E2BIG).
    with pytest.raises(ConfigError, match=r"grid axis 'a' is 1[0-9,]+ bytes long.*start:stop:count"):
        load_run_config({"grid": ["a=" + ",".join(str(0.1 + i) for i in range(20_000))]}, env={})


def test_a_grid_algorithm_gets_axis_values_and_refuses_a_sweep_without_axes() -> None:
    from ttg.sweep import SweepSpec

    fn = algorithms.load("algos:grid_product")
    spec = SweepSpec.from_axes(["alpha=1,2", "beta=10,20,30"])
    assert algorithms.evaluate(fn, 0, 6, sweep=spec).tolist() == [10, 20, 30, 20, 40, 60]
    with pytest.raises(AlgorithmError, match="takes grid values"):
        algorithms.evaluate(fn, 0, 6)


def test_a_failed_verdict_raises_on_demand_with_the_first_missing_chunk_ids() -> None:
    from ttg.config import Verify
    from ttg.errors import VerdictFailed
    from ttg.ledger import Ledger
    from ttg.verdict import judge

    plan = ChunkPlan(100, 10)
    ledger = Ledger(plan, "r")
    for c in plan:
        if c.id not in (3, 7):
            ledger.add(ResultMessage("r", c.id, c.start, c.stop, "w", 1, algorithms.demo(np.arange(c.start, c.stop)).tobytes(), 0.0).encode())
    verdict = judge(ledger, [], verify=Verify("full"), algorithm="demo")
    assert (verdict.ok, verdict.lost, verdict.lost_chunk_ids, verdict.mismatches) == (False, 2, [3, 7], 0)
    with pytest.raises(VerdictFailed, match=r"2 chunk\(s\) lost: 3, 7"):
        verdict.raise_for_failure()


def test_a_reference_of_the_wrong_shape_makes_chunks_unverifiable_not_a_crash() -> None:
    from ttg.config import Verify
    from ttg.ledger import Ledger
    from ttg.verdict import judge

    plan = ChunkPlan(20, 10)
    ledger = Ledger(plan, "r")
    for c in plan:
        ledger.add(ResultMessage("r", c.id, c.start, c.stop, "w", 1, np.zeros(10).tobytes(), 0.0).encode())
    verdict = judge(ledger, [], verify=Verify("full"), algorithm="algos:wrong_length")
    assert verdict.unverifiable_chunk_ids == [0, 1] and verdict.lost == 0
    assert not verdict.ok and "2 completed chunk(s) could not be verified" in verdict.problems()[0]


def test_a_c_extension_function_is_an_algorithm_but_a_system_function_is_not() -> None:
    from ttg import algorithms
    from ttg.errors import AlgorithmNotFound

    assert algorithms.load("numpy:sin") is np.sin  # compiled, like a pybind11 or Cython algorithm
    for spec in ("os:system", "builtins:eval", "subprocess:getoutput", "shutil:rmtree", "subprocess:Popen"):
        with pytest.raises(AlgorithmNotFound):
            algorithms.load(spec)


def test_the_producer_frames_every_unrecorded_chunk_as_a_task_the_worker_accepts() -> None:
    from ttg.messages import decode_planned_task
    from ttg.producer import task_messages

    plan = ChunkPlan(1_005, 100)  # 11 chunks, the last one short
    seen = np.zeros(plan.chunks, dtype=bool)
    seen[[0, 4, 10]] = True  # recorded before a coordinator died: not published again
    tasks = list(task_messages("r1", plan, seen))
    assert [cid for cid, _ in tasks] == [1, 2, 3, 5, 6, 7, 8, 9]
    for cid, body in tasks:
        task = decode_planned_task(body, "r1", plan)
        assert (task.chunk_id, task.start, task.stop) == (cid, plan.chunk(cid).start, plan.chunk(cid).stop)
    assert len(list(task_messages("r1", plan))) == plan.chunks


def test_the_producer_publishes_the_unrecorded_chunks_as_runs_of_consecutive_ids() -> None:
    from ttg.producer import unrecorded

    plan = ChunkPlan(1_005, 100)
    assert unrecorded(plan) == [range(11)]
    seen = np.zeros(plan.chunks, dtype=bool)
    assert unrecorded(plan, seen) == [range(11)]
    seen[[0, 4, 5, 10]] = True
    assert unrecorded(plan, seen) == [range(1, 4), range(6, 10)]
    seen[:] = True
    assert unrecorded(plan, seen) == []
    seen[:] = False
    seen[[1, 3]] = True
    assert unrecorded(plan, seen) == [range(0, 1), range(2, 3), range(4, 11)]
    wider = np.zeros(20, dtype=np.uint8)  # a ledger's flags may outlast a smaller plan; only the plan's ids count
    wider[[3, 15]] = 1
    assert unrecorded(plan, wider) == [range(0, 3), range(4, 11)]


def test_a_task_is_framed_as_the_documented_msgpack_map_whatever_its_integers() -> None:
    # TaskFrame is the one framing of a task (Redis builds bodies from it on the server): it must stay the plain map.
    import msgpack

    from ttg.messages import VERSION, TaskMessage, decode_task

    for c, a, b in [(0, 0, 1), (127, 128, 255), (256, 65535, 65536), (2**32 - 1, 2**32, 2**40), (2**53, 2**53, 2**63)]:
        msg = TaskMessage("r-" + "x" * 40, c, a, b)
        assert msg.encode() == msgpack.packb({"v": VERSION, "k": "task", "run": msg.run_id, "c": c, "a": a, "b": b}, use_bin_type=True)
        assert decode_task(msg.encode()) == msg


def test_every_fault_kind_is_documented_in_the_readme_with_its_default_duration() -> None:
    from pathlib import Path

    from ttg.faults import KINDS

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    rows = {line.split("`")[1]: line for line in readme.splitlines() if line.startswith("| `")}
    for kind in KINDS.values():
        assert f"`{kind.name}`" in readme, f"{kind.name} is not in the README"
        if kind.duration_s is not None:
            assert f"(default {kind.duration_s:g})" in rows[kind.name], f"the README's {kind.name} row gives another default duration"


def test_a_plans_publish_calls_are_grouped_into_round_trips_that_keep_redis_responsive() -> None:
    # At most 500 chunks a call; a round trip carries up to 64 calls but about 500 chunks at most, since Redis runs a
    # pipeline's calls back to back and workers wait meanwhile.
    from ttg.brokers.redis.coordinator import _round_trips

    assert list(_round_trips([range(1_200)])) == [[(0, 499)], [(500, 999)], [(1_000, 1_199)]]
    singles = list(_round_trips([range(c, c + 1) for c in range(0, 400, 2)]))
    assert [len(b) for b in singles] == [64, 64, 64, 8] and singles[0][:2] == [(0, 0), (2, 2)]
    assert list(_round_trips([range(0, 1), range(2, 500), range(600, 602)])) == [[(0, 0), (2, 499)], [(600, 601)]]
    assert list(_round_trips([])) == []
