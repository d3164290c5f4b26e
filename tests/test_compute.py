"""The compute child: the algorithm in its own process, values back over a pipe, crashes contained."""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from ttg import algorithms
from ttg.compute import ComputeCrashed, ComputeProcess
from ttg.errors import AlgorithmError, AlgorithmNotFound


@pytest.fixture(params=["pipe", "slots"])
def child(request: pytest.FixtureRequest) -> Iterator[ComputeProcess]:
    # A worker's child answers in shared-memory slots of a chunk's size; the verifier's, over the pipe. Both must hold.
    proc = ComputeProcess("demo", slot_values=1_000_000 if request.param == "slots" else 0)
    proc.start()
    yield proc
    proc.close()


def test_values_come_back_exactly_in_submission_order(child: ComputeProcess) -> None:
    child.submit(0, 1000)
    child.submit(5000, 5010)
    assert child.pending == 2
    assert np.array_equal(child.result(), algorithms.demo(np.arange(0, 1000)))
    assert np.array_equal(child.result(), algorithms.demo(np.arange(5000, 5010)))
    idx = np.array([7, 3, 999_999])
    assert np.array_equal(child.evaluate_indices(idx), algorithms.demo(idx))


def test_a_large_range_crosses_the_pipe_whole(child: ComputeProcess) -> None:
    values = child.evaluate(0, 1_000_000)  # 8 MB, many pipe buffers
    assert values.shape == (1_000_000,) and np.array_equal(values, algorithms.demo(np.arange(1_000_000)))


def test_an_algorithm_that_raises_fails_that_range_and_the_child_carries_on() -> None:
    with ComputeProcess("algos:poison") as proc:
        proc.start()
        pid = proc.pid
        with pytest.raises(AlgorithmError, match="ValueError: cannot evaluate parameter 1234"):
            proc.evaluate(1000, 2000)
        assert np.array_equal(proc.evaluate(0, 10), algorithms.demo(np.arange(10))) and proc.pid == pid


def test_a_slot_holds_its_values_until_the_next_result_and_ranges_past_the_slots_use_the_pipe() -> None:
    with ComputeProcess("algos:square_root", slot_values=1000) as proc:  # not periodic, unlike demo: a reused slot shows
        sqrt = algorithms.load("algos:square_root")
        proc.start()
        proc.submit(0, 1000)
        first = proc.result()
        starts = range(1000, (proc.capacity + 4) * 1000, 1000)  # more ranges than slots, while the caller holds `first`
        for start in starts:
            proc.submit(start, start + 1000)
        proc.flush()
        time.sleep(0.5)  # the child has written every reply by now (a slot reused too early would show here)
        assert np.array_equal(first, sqrt(np.arange(0, 1000))), "a slot was overwritten before the next result()"
        for start in starts:  # slot and pipe replies of one batch, in submission order
            assert np.array_equal(proc.result(), sqrt(np.arange(start, start + 1000)))
        assert np.array_equal(proc.evaluate(0, 5000), sqrt(np.arange(5000)))  # 5x a slot: the pipe


def test_a_batch_is_computed_in_order_and_its_sync_says_the_time_per_range() -> None:
    with ComputeProcess("demo", cost_us=2000.0, slot_values=100) as proc:  # 10 parameters at 2 ms each: 20 ms a range
        proc.start()
        for i in range(4):
            proc.submit(i * 10, i * 10 + 10)
        proc.flush()
        for i in range(4):
            assert np.array_equal(proc.result(), algorithms.demo(np.arange(i * 10, i * 10 + 10)))
        assert proc.chunk_s is not None and 0.015 < proc.chunk_s < 1.0, proc.chunk_s


def test_a_range_that_raises_fails_alone_and_its_batch_carries_on() -> None:
    with ComputeProcess("algos:poison", slot_values=1000) as proc:
        proc.start()
        pid = proc.pid
        for start, stop in ((0, 10), (1000, 2000), (20, 30)):  # the second holds the poisoned parameter 1234
            proc.submit(start, stop)
        assert np.array_equal(proc.result(), algorithms.demo(np.arange(0, 10)))
        with pytest.raises(AlgorithmError, match="ValueError: cannot evaluate parameter 1234"):
            proc.result()
        assert np.array_equal(proc.result(), algorithms.demo(np.arange(20, 30))) and proc.pid == pid


def test_a_crash_inside_a_batch_is_blamed_on_the_range_that_crashed_not_on_the_oldest() -> None:
    # The child answers a batch once, at its end; when it dies mid-batch, the ranges it finished are read from their
    # slots' records and delivered. Blaming the oldest range instead would fail an innocent chunk on every crash.
    with ComputeProcess("algos:segfaults_on_poison", slot_values=1000) as proc:
        proc.start()
        first = proc.pid
        for start, stop in ((0, 10), (20, 30), (1000, 2000), (40, 50)):  # the third holds parameter 1234: SIGSEGV
            proc.submit(start, stop)
        proc.flush()
        assert np.array_equal(proc.result(), algorithms.demo(np.arange(0, 10)))
        proc.submit(60, 70)  # submitted after the crash, before it is read: goes to the new child
        assert np.array_equal(proc.result(), algorithms.demo(np.arange(20, 30)))
        with pytest.raises(ComputeCrashed, match="killed by SIGSEGV"):
            proc.result()
        assert np.array_equal(proc.result(), algorithms.demo(np.arange(40, 50)))
        assert np.array_equal(proc.result(), algorithms.demo(np.arange(60, 70)))
        assert proc.pid != first and proc.restarts == 1


def test_adjacent_ranges_are_computed_in_one_call_and_a_crash_in_it_is_narrowed_to_its_range() -> None:
    # A worker's chunks mostly come in order: the child evaluates adjacent ranges of a batch in one call of the
    # algorithm. When that call kills it, which range did is not known: they go again one call each.
    with ComputeProcess("algos:segfaults_on_poison", slot_values=1000) as proc:
        proc.start()
        for start in (0, 1000, 2000):  # the second holds parameter 1234: SIGSEGV, in a call that covers all three
            proc.submit(start, start + 1000)
        assert np.array_equal(proc.result(), algorithms.demo(np.arange(0, 1000)))
        with pytest.raises(ComputeCrashed, match="killed by SIGSEGV"):
            proc.result()
        assert np.array_equal(proc.result(), algorithms.demo(np.arange(2000, 3000)))
        assert proc.restarts == 2, "one crash in the merged call, one in the range alone"
        for start in (3000, 4000):  # merging resumes once the narrowed-down ranges are read
            proc.submit(start, start + 1000)
        assert [len(proc.result()) for _ in range(2)] == [1000, 1000]


@pytest.mark.parametrize("slot_values", [0, 1000])
def test_a_crash_fails_the_range_being_computed_and_the_queued_one_goes_to_a_new_child(slot_values: int) -> None:
    with ComputeProcess("algos:segfaults_on_poison", slot_values=slot_values) as proc:
        proc.start()
        first = proc.pid
        proc.submit(1000, 2000)  # holds parameter 1234: SIGSEGV
        proc.submit(0, 10)
        with pytest.raises(ComputeCrashed, match="killed by SIGSEGV"):
            proc.result()
        assert np.array_equal(proc.result(), algorithms.demo(np.arange(10))), "the queued range is computed by the new child"
        assert proc.pid != first and proc.restarts == 1


def test_a_child_killed_while_idle_is_replaced_and_the_next_range_is_not_blamed(child: ComputeProcess) -> None:
    # The OOM killer may pick an idle child: the range sent next never reached it, and failing it would count a
    # delivery against an innocent chunk (found in review).
    pid = child.pid
    assert pid is not None
    child.kill()
    _wait_until_gone(child)
    assert np.array_equal(child.evaluate(0, 10), algorithms.demo(np.arange(10)))
    assert child.pid != pid and child.restarts == 1


def test_a_child_killed_while_computing_fails_that_range_and_the_next_goes_to_a_new_one() -> None:
    with ComputeProcess("demo", cost_us=20_000, slot_values=100) as proc:  # 10 parameters: 0.2 s in the child
        proc.start()
        proc.submit(0, 10)
        proc.submit(20, 30)  # not adjacent: computed alone, so the kill is blamed on the range being computed
        proc.flush()
        time.sleep(0.1)
        proc.kill()
        with pytest.raises(ComputeCrashed, match="SIGKILL"):
            proc.result()
        assert np.array_equal(proc.result(), algorithms.demo(np.arange(20, 30)))


def test_a_replacement_that_cannot_start_fails_the_queued_ranges_and_a_later_one_without_crashing_the_caller() -> None:
    # Found in review: a failed restart unmapped the slots and forgot the queued ranges' errors; the next submit()
    # then died on an assertion and a later result() on "no range submitted", both worker crashes.
    with ComputeProcess("algos:segfaults_on_poison", slot_values=1000) as proc:
        proc.start()
        for start, stop in ((1000, 2000), (5000, 5010), (6000, 6010)):  # the first segfaults (parameter 1234)
            proc.submit(start, stop)
        proc.flush()
        proc.algorithm = "no_such_module_for_ttg:f"  # every new child fails to load
        with pytest.raises(ComputeCrashed, match="SIGSEGV"):
            proc.result()
        with pytest.raises(AlgorithmNotFound):
            proc.submit(7000, 7010)  # a child is needed now, and cannot start: said at once
        for _ in range(2):
            with pytest.raises(ComputeCrashed, match="no compute process could be started"):
                proc.result()
        proc.algorithm = "algos:segfaults_on_poison"  # the cause is gone (say, memory freed): work goes on
        assert np.array_equal(proc.evaluate(0, 10), algorithms.demo(np.arange(10)))


def test_an_algorithm_that_cannot_be_loaded_is_a_usage_error_said_by_the_child() -> None:
    with pytest.raises(AlgorithmNotFound, match="nosuchmodule"):
        ComputeProcess("nosuchmodule:fn").start()


def test_the_gil_held_by_the_algorithm_never_stalls_this_process() -> None:
    # What the heartbeat thread of a worker sees while its chunk holds the GIL for ~2 s in one C call.
    proc = ComputeProcess("algos:holds_the_gil")
    proc.start()
    gaps: list[float] = []
    done = threading.Event()

    def beat() -> None:
        last = time.monotonic()
        while not done.is_set():
            time.sleep(0.05)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    t = threading.Thread(target=beat)
    t.start()
    try:
        proc.evaluate(0, 10)
    finally:
        done.set()
        t.join()
        proc.close()
    assert len(gaps) > 20 and max(gaps) < 0.5, f"a beat waited {max(gaps):.2f} s"


def test_the_child_ignores_the_signals_its_worker_handles(child: ComputeProcess) -> None:
    assert child.pid is not None
    os.kill(child.pid, signal.SIGTERM)  # the worker drains on SIGTERM; its child must finish the chunk, not die
    time.sleep(0.2)
    assert np.array_equal(child.evaluate(0, 10), algorithms.demo(np.arange(10)))


def test_a_crash_whose_replacement_cannot_start_fails_each_queued_range_and_never_crashes_the_caller() -> None:
    # Found in review: the queued range was left with no child and no pending request, and the next result() read
    # from a closed pipe (OSError: a worker traceback, over and over).
    with ComputeProcess("demo", cost_us=100_000) as proc:  # 10 parameters: a second in the child
        proc.start()
        proc.submit(0, 10)
        proc.submit(10, 20)
        # Sent before the kill: a child killed before it was sent anything died idle, and nobody is blamed (CI once
        # saw exactly that when result() flushed after the kill).
        proc.flush()
        proc.algorithm = "no_such_module_for_ttg:f"  # the next child fails to load
        proc.kill()
        with pytest.raises(ComputeCrashed, match="killed by SIGKILL"):
            proc.result()
        with pytest.raises(ComputeCrashed, match="no compute process could be started"):
            proc.result()
        with pytest.raises(AlgorithmNotFound):
            proc.submit(20, 30)
        assert proc.pending == 0


def _wait_until_gone(proc: ComputeProcess) -> None:
    """Until the child is gone and has let go of both its pipe ends. Its process state says "dead" while its other
    threads (numpy's BLAS pool) still hold its files, and the kernel releases its files one after the other, the reply
    pipe's end first: a request written in that instant still reaches the dying child (and is blamed for its death)."""
    assert proc._reader is not None
    assert select.select([proc._reader.fd], [], [], 5.0)[0], "the child did not die"
    time.sleep(0.2)
