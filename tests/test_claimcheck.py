"""The claim check (issue 16): local workers put values in a staging file and send receipts through the broker.

Each way a receipt could make the ledger hold a wrong value is tried on a real file and a real ledger: a receipt forged
without the run's key, a staging file cut short or altered, a worker id that tries to name a file elsewhere, a symlink
planted in the staging directory, a chunk computed again with other values. Then whole runs on both backends, with a
forged receipt and a killed worker among them, and the inline path kept for workers that share no disk.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path

import msgpack
import numpy as np
import pytest

from ttg import algorithms
from ttg.claimcheck import KEY_FILE, Reader, Staging, Writer
from ttg.config import backend_for_url, load_run_config
from ttg.errors import ConfigError, MessageError
from ttg.ledger import REOPENS, Ledger
from ttg.messages import ReceiptMessage, TaskMessage, decode_outcome, decode_result
from ttg.plan import ChunkPlan
from ttg.testing.plugin import BrokerHandle

from .backends import publish_raw_result
from .runs import wait_recorded

PLAN = ChunkPlan(100, 10)


def _values(chunk_id: int, plus: float = 0.0) -> np.ndarray:
    c = PLAN.chunk(chunk_id)
    return algorithms.demo(np.arange(c.start, c.stop)) + plus


def _receipt(writer: Writer, chunk_id: int, plus: float = 0.0, deliveries: int = 1) -> ReceiptMessage:
    c = PLAN.chunk(chunk_id)
    return writer.receipt(c.id, c.start, c.stop, deliveries, _values(chunk_id, plus).data.cast("B"), 0.001, time.time())


@pytest.fixture
def staging(tmp_path: Path) -> Staging:
    return Staging.create(tmp_path)


def _ledger(staging: Staging) -> Ledger:
    return Ledger(PLAN, "r", claims=Reader(staging))


def test_a_receipt_brings_the_values_it_names_and_travels_as_a_small_message(staging: Staging) -> None:
    w = Writer(staging, "r", "w0")
    first, second = _receipt(w, 3), _receipt(w, 7)
    assert (first.offset, second.offset) == (0, 80), "appended one after the other"
    raw = second.encode()
    assert len(raw) < 120 and decode_outcome(raw) == second
    ledger = _ledger(staging)
    assert ledger.add(first.encode()) == first and ledger.add(raw) == second
    assert np.array_equal(ledger.values[30:40], _values(3)) and np.array_equal(ledger.values[70:80], _values(7))
    assert ledger.completed == 2 and ledger.rejected == 0
    assert (staging.directory.stat().st_mode & 0o777, (staging.directory / KEY_FILE).stat().st_mode & 0o777) == (0o700, 0o600)


def test_a_resumed_run_keeps_its_key_so_receipts_left_on_the_broker_still_check(tmp_path: Path) -> None:
    first = Staging.create(tmp_path)
    receipt = _receipt(Writer(first, "r", "w0"), 2)
    again = Staging.create(tmp_path)  # the successor coordinator
    assert again.key == first.key
    assert Ledger(PLAN, "r", claims=Reader(again)).add(receipt.encode()) is not None


def test_a_receipt_forged_without_the_key_is_rejected_before_any_file_is_read(staging: Staging) -> None:
    w = Writer(staging, "r", "w0")
    genuine = _receipt(w, 4)
    other_key = Staging(staging.directory, b"k" * 32)
    forged = dataclasses.replace(genuine, mac=other_key.mac(genuine))
    tampered = dataclasses.replace(genuine, offset=0, chunk_id=0, start=0, stop=10)  # the genuine MAC, another chunk
    ledger = _ledger(staging)
    (staging.directory / "w0.f8").unlink()  # the check comes first: there is nothing to read
    for bad in (forged, tampered):
        assert ledger.add(bad.encode()) is None
    assert ledger.rejected == 2 and ledger.completed == 0 and np.isnan(ledger.values).all()
    assert all("not signed with this run's key" in r for r in ledger.rejected_reasons), ledger.rejected_reasons


def test_a_staging_file_cut_short_or_altered_is_a_rejected_result_never_a_wrong_value(staging: Staging) -> None:
    w = Writer(staging, "r", "w0")
    intact, altered, cut = _receipt(w, 1), _receipt(w, 2), _receipt(w, 3)
    path = staging.directory / "w0.f8"
    data = bytearray(path.read_bytes())
    data[85] ^= 0xFF  # one byte of chunk 2's values
    path.write_bytes(bytes(data[:235]))  # and chunk 3's last value half gone
    ledger = _ledger(staging)
    assert ledger.add(intact.encode()) is not None
    assert ledger.add(altered.encode()) is None and ledger.add(cut.encode()) is None and ledger.rejected == 2
    assert np.isnan(ledger.values[20:40]).all() and ledger.completed == 1
    path.unlink()
    gone = Ledger(PLAN, "r", claims=Reader(staging))
    assert gone.add(intact.encode()) is None and gone.rejected == 1 and np.isnan(gone.values).all()


def test_a_genuine_receipt_whose_values_are_gone_is_computed_again_then_given_up_on_not_left_to_the_timeout(staging: Staging) -> None:
    """Its task was acknowledged with the receipt (on Redis the chunk is marked done): without a reopen the chunk would
    wait for --timeout and be lost; it is put back in the queue, up to REOPENS times, then counted lost at once."""
    receipt = _receipt(Writer(staging, "r", "w0"), 4)
    (staging.directory / "w0.f8").unlink()
    ledger = _ledger(staging)
    for attempt in range(1, REOPENS + 1):
        assert ledger.add(receipt.encode()) is None
        assert ledger.take_reopens() == [(4, TaskMessage("r", 4, 40, 50).encode())] and ledger.take_reopens() == []
        assert ledger.reopened == {4: attempt} and ledger.accounted == 0
    assert ledger.add(receipt.encode()) is None and ledger.take_reopens() == []
    assert 4 in ledger.abandoned and ledger.accounted == 1 and not ledger.seen[4], "given up on: lost, and the run can end"
    fresh = _receipt(Writer(staging, "r", "w0"), 4)  # a late computation that did land still counts
    assert ledger.add(fresh.encode()) is not None and ledger.accounted == 1 and ledger.completed == 1


def test_copies_of_an_unreadable_receipt_for_a_chunk_queued_again_already_do_not_use_up_its_tries(staging: Staging) -> None:
    """Every copy of a receipt reaches the ledger (a broker drops none). A second unreadable copy, read after its chunk
    was put back, makes the broker put back nothing (Redis: no longer marked completed): that try is not counted."""
    receipt = _receipt(Writer(staging, "r", "w0"), 4)
    (staging.directory / "w0.f8").unlink()
    ledger = _ledger(staging)
    for _ in range(REOPENS + 2):
        assert ledger.add(receipt.encode()) is None and [c for c, _ in ledger.take_reopens()] == [4]
        ledger.not_reopened(4)
    assert ledger.reopened == {4: 0} and not ledger.abandoned and ledger.accounted == 0


def test_two_writers_of_one_worker_id_append_without_overwriting_each_other(staging: Staging) -> None:
    """A dead coordinator's w0, still serving its run, beside its successor's w0: O_APPEND keeps both whole."""
    old, new = Writer(staging, "r", "w0"), Writer(staging, "r", "w0")
    receipts = [_receipt(w, c, plus=float(i)) for i, (w, c) in enumerate([(old, 0), (new, 1), (old, 2), (new, 3), (new, 4), (old, 5)])]
    assert sorted(r.offset for r in receipts) == [i * 80 for i in range(6)]
    ledger = _ledger(staging)
    for i, r in enumerate(receipts):
        assert ledger.add(r.encode()) is not None
        assert np.array_equal(ledger.values[r.start : r.stop], _values(r.chunk_id, plus=float(i)))


def test_a_full_disk_sends_that_chunks_values_through_the_broker_instead(staging: Staging) -> None:
    """RLIMIT_FSIZE (Python ignores SIGXFSZ, so the write fails) in a child: the staging file takes one chunk, refuses
    the second, and the worker sends the second chunk's values inline."""
    code = f"""
import resource, numpy as np
from pathlib import Path
from ttg.claimcheck import Staging, Writer
from ttg.messages import TaskMessage, decode_outcome, ResultMessage, ReceiptMessage
from ttg.plan import ChunkPlan
from ttg.worker import Worker, WorkerSpec
resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))
staging = Staging.open(Path({str(staging.directory)!r}))
worker = Worker.__new__(Worker)  # its outcome alone: no broker, no compute child
worker.spec = WorkerSpec("r", "w0", ChunkPlan(100, 10))
worker.claims = Writer(staging, "r", "w0")
values = np.arange(10, dtype="<f8").data.cast("B")
first = decode_outcome(worker._outcome(TaskMessage("r", 0, 0, 10), 1, values, 0.0))
second = decode_outcome(worker._outcome(TaskMessage("r", 1, 10, 20), 1, values, 0.0))
assert isinstance(first, ReceiptMessage), first
assert isinstance(second, ResultMessage) and second.array().tolist() == list(range(10)), second
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    assert "sending its values through the broker" in proc.stderr


def test_a_chunk_computed_again_never_changes_what_an_earlier_receipt_vouched_for(staging: Staging) -> None:
    """A redelivered chunk, a respawned worker with the same id: the file is append-only, so a second computation with
    other values (a non-deterministic algorithm) lands elsewhere, and whichever receipt comes first is recorded whole."""
    first = _receipt(Writer(staging, "r", "w0"), 5)
    respawned = Writer(staging, "r", "w0")
    second = _receipt(respawned, 5, plus=1.0, deliveries=2)
    assert second.offset == first.offset + 80
    ledger = _ledger(staging)
    assert ledger.add(first.encode()) is not None and ledger.add(second.encode()) is None
    assert ledger.duplicates == 1 and ledger.rejected == 0 and np.array_equal(ledger.values[50:60], _values(5))


def test_a_duplicate_receipt_reads_nothing(staging: Staging) -> None:
    receipt = _receipt(Writer(staging, "r", "w0"), 6)
    ledger = _ledger(staging)
    ledger.add(receipt.encode())
    (staging.directory / "w0.f8").unlink()
    assert ledger.add(receipt.encode()) is None and (ledger.duplicates, ledger.rejected) == (1, 0)


@pytest.mark.parametrize("worker_id", ["../../etc/passwd", "a/b", "..", ".hidden", "x" * 129, ""])
def test_a_worker_id_that_is_not_a_plain_name_names_no_staging_file(staging: Staging, worker_id: str) -> None:
    c = PLAN.chunk(0)
    r = ReceiptMessage("r", 0, c.start, c.stop, worker_id, 1, 0, 0, b"", 0.0)
    signed = dataclasses.replace(r, mac=staging.mac(r))  # even signed with the run's key
    ledger = _ledger(staging)
    assert ledger.add(signed.encode()) is None and ledger.rejected == 1
    assert "cannot name a staging file" in ledger.rejected_reasons[0], ledger.rejected_reasons
    with pytest.raises(ConfigError, match="cannot append"):
        Writer(staging, "r", worker_id)


def test_a_symlink_planted_in_the_staging_directory_is_not_followed(staging: Staging, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.f8"
    outside.write_bytes(_values(0).tobytes())
    (staging.directory / "w9.f8").symlink_to(outside)
    c = PLAN.chunk(0)
    r = ReceiptMessage("r", 0, c.start, c.stop, "w9", 1, 0, zlib.crc32(_values(0).tobytes()), b"", 0.0)
    ledger = _ledger(staging)
    assert ledger.add(dataclasses.replace(r, mac=staging.mac(r)).encode()) is None and ledger.rejected == 1
    with pytest.raises(ConfigError):
        Writer(staging, "r", "w9")


def test_a_receipt_for_a_run_that_takes_values_through_the_broker_is_rejected(staging: Staging) -> None:
    receipt = _receipt(Writer(staging, "r", "w0"), 1)
    ledger = Ledger(PLAN, "r")
    assert ledger.add(receipt.encode()) is None and ledger.rejected == 1
    with pytest.raises(MessageError, match="receipt"):
        decode_result(receipt.encode())  # a reader of values alone is told what came


@pytest.mark.parametrize(
    ("field", "value"),
    [("o", -1), ("s", 1 << 32), ("s", -1), ("m", b"short"), ("m", "text"), ("o", 1.5), ("f", float("nan")), ("b", 30)],
)
def test_malformed_receipts_are_refused_naming_what_is_wrong(staging: Staging, field: str, value: object) -> None:
    raw = _receipt(Writer(staging, "r", "w0"), 3).encode()
    with pytest.raises(MessageError):
        decode_outcome(msgpack.packb({**msgpack.unpackb(raw), field: value}))


def test_a_worker_without_the_key_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ttg", "worker", "--run-id", "r1", "--params", "100", "--chunk", "10", "--staging", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TTG_BROKER_URL": "redis://127.0.0.1:1/0"},
    )
    assert proc.returncode == 2 and KEY_FILE in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_values_through_a_file_are_for_local_workers_only() -> None:
    assert load_run_config({}, env={}).claim_check
    assert not load_run_config({"runtime": "kubernetes"}, env={}).claim_check, "pods share no disk: auto means the broker"
    assert not load_run_config({"results_via": "broker"}, env={}).claim_check
    with pytest.raises(ConfigError, match="--results-via file needs workers on the coordinator's disk"):
        load_run_config({"results_via": "file", "runtime": "kubernetes"}, env={})


# -- whole runs, real brokers and workers --------------------------------------------------------------------------
SWEEP = ["--params", "200000", "--chunk", "2000", "--workers", "2", "--cost-us", "10", "--timeout", "90", "--json"]


def _run(broker: BrokerHandle, out: Path, run_id: str, *extra: str) -> subprocess.Popen[str]:
    args = ["run", "--backend", backend_for_url(broker.url), "--broker-url", broker.url, "--run-id", run_id, "--out", str(out), *SWEEP, *extra]
    return subprocess.Popen([sys.executable, "-m", "ttg", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_run_takes_its_values_through_the_staging_file_and_a_forged_receipt_changes_nothing(broker: BrokerHandle, tmp_path: Path) -> None:
    run_id = "cc" + uuid.uuid4().hex[:6]
    proc = _run(broker, tmp_path, run_id, "--fault", "kill-worker@40%")
    staging = tmp_path / run_id / "staging"
    deadline = time.monotonic() + 60
    while not (staging / "w0.f8").exists():  # the workers are up and the run is declared
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    c = ChunkPlan(200_000, 2000).chunk(99)  # the last chunk: no worker has sent it yet
    forged = ReceiptMessage(run_id, c.id, c.start, c.stop, "w0", 1, 0, 0, b"\0" * 16, 0.0)  # no key: a MAC it guesses
    publish_raw_result(backend_for_url(broker.url), broker.url, run_id, forged.encode())
    stdout, stderr = proc.communicate(timeout=150)
    rec = json.loads(stdout)
    v = rec["verdict"]
    assert proc.returncode == 0 and v["ok"] and v["checksum_ok"] and v["lost"] == 0, stderr
    assert rec["results_via"] == "file" and v["rejected_messages"] == 1 and "not signed" in " ".join(v["rejected_reasons"]), v
    assert rec["faults"][0]["recovered_s"] is not None, "the killed worker's chunks were computed again"
    assert not staging.exists(), "a complete run's values are all in results.npy: the staging files go"


def test_the_inline_path_stays_for_workers_that_share_no_disk(broker: BrokerHandle, tmp_path: Path) -> None:
    run_id = "in" + uuid.uuid4().hex[:6]
    proc = _run(broker, tmp_path, run_id, "--results-via", "broker")
    stdout, stderr = proc.communicate(timeout=150)
    rec = json.loads(stdout)
    assert proc.returncode == 0 and rec["verdict"]["ok"] and rec["results_via"] == "broker", stderr
    assert not (tmp_path / run_id / "staging").exists(), "no staging directory was made"


def test_a_resumed_run_reads_the_receipts_its_predecessors_workers_left_whatever_its_own_results_via(redis_broker: BrokerHandle, tmp_path: Path) -> None:
    """The first coordinator is SIGKILLed mid-sweep on the user's broker; its workers, orphaned, keep sending receipts
    for a while. The successor sends values through the broker, but still reads those receipts: nothing is lost."""
    run_id = "rs" + uuid.uuid4().hex[:6]
    first = _run(redis_broker, tmp_path, run_id)
    wait_recorded(tmp_path / run_id, 10, 80)
    first.kill()
    first.communicate(timeout=30)
    second = _run(redis_broker, tmp_path, run_id, "--resume", "--results-via", "broker")
    stdout, stderr = second.communicate(timeout=150)
    rec = json.loads(stdout)
    v = rec["verdict"]
    assert second.returncode == 0 and v["ok"] and v["lost"] == 0 and v["checksum_ok"] and v["rejected_messages"] == 0, stderr
    assert rec["results_via"] == "broker" and rec["resumed_at_chunks"] is not None


def test_receipts_whose_values_vanished_mid_run_are_computed_again_and_the_run_loses_nothing(redis_broker: BrokerHandle, tmp_path: Path) -> None:
    """The coordinator is paused (SIGSTOP) while its workers keep completing chunks, the staging files are emptied under
    it, and it goes on: every receipt sent meanwhile names values that are gone. Their tasks were acknowledged, and Redis
    marked the chunks done; without a reopen they would wait for --timeout and be lost."""
    run_id = "rv" + uuid.uuid4().hex[:6]
    proc = _run(redis_broker, tmp_path, run_id, "--cost-us", "40")  # 80 ms a chunk: about 4 s in all
    wait_recorded(tmp_path / run_id, 15, 60, poll_s=0.02)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        time.sleep(0.8)  # the workers complete several chunks each, and their receipts wait on the broker
        for f in (tmp_path / run_id / "staging").glob("*.f8"):
            os.truncate(f, 0)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    stdout, stderr = proc.communicate(timeout=150)
    rec = json.loads(stdout)
    v = rec["verdict"]
    assert proc.returncode == 0 and v["ok"] and v["lost"] == 0 and v["checksum_ok"] and v["chunks_completed"] == 100, stderr
    assert v["rejected_messages"] >= 1 and any("the staging file of w" in r or "holds 0 of" in r for r in v["rejected_reasons"]), v
