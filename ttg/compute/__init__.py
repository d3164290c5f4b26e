"""The compute child: the user's algorithm runs in a process of its own, never in the one that holds the broker.

Why: a worker's liveness (Redis claim heartbeats, RabbitMQ's heartbeat frames on pika's I/O thread)
must not depend on the algorithm. A C call that holds the GIL for seconds (a regex, a
non-releasing extension) starves every thread of the process it runs in, and the broker then
takes a live worker's chunks away, or drops its connection. So the worker forks nothing and runs
no user code: it starts ``python -m ttg.compute`` (the prefork pattern of Celery and Dramatiq,
one child per worker) and hands it ``(start, stop)`` ranges over a pipe. No pickle crosses the boundary.

Ranges go in **batches**: the worker submits the tasks it holds, :meth:`ComputeProcess.flush` sends them in one
write followed by a SYNC request, and the child writes each range's values into a shared-memory slot (a ``memfd``
both map) with a status record beside it, then answers the SYNC with one reply. So a batch of 16 chunks costs two
pipe writes and two wake-ups, not 32 of each: at 1,000 parameters per chunk and no work per parameter, the
per-chunk wake-ups of one reply per range cost TTG 31 % of its throughput against ``multiprocessing.Pool``
(``ttg bench``, measured side by side with the algorithm in the worker's own process). The SYNC is what makes the
slots' records safe to read (the pipe orders the child's writes before the worker's reads); after the child died,
its exit does. A worker with no slots (a chunk too large for one) gets its values over the pipe, one reply each.

A child that dies (segfault, ``os._exit``, the OOM killer) fails exactly the range it was computing with
:class:`ComputeCrashed`, naming the signal: the ranges of its batch it had finished are read from their records and
delivered, and those behind it go to a new child unharmed. The worker stays connected throughout. The child dies
with its worker (parent-death signal, and end of file on its request pipe).

Wire format (little-endian). Request ``<qqq`` (start, stop, slot): a range [start, stop) when start >= 0 (slot >= 0:
values into that slot; -1: over the reply pipe); start == INDICES: ``stop`` int64 parameter indices follow (the
verifier's samples, computed without ``cost_us``, answered over the pipe); start == SYNC: the end of a batch;
stop < 0 otherwise: exit. Reply ``<BQ`` (status, n): OK or RAISED followed by n bytes (values, or the error text);
LOAD_FAILED with its text, or an empty OK, once at start-up; SYNCED with n = the child's mean nanoseconds per
range of that batch. A slot's record is two int64, (status, byte length), status PENDING until the child writes it;
a RAISED range leaves its error text in the slot.
"""

from ttg.compute.parent import ComputeCrashed, ComputeProcess
from ttg.compute.wire import MAX_BATCH, describe_exit

__all__ = ["MAX_BATCH", "ComputeCrashed", "ComputeProcess", "describe_exit"]
