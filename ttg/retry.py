"""Patience with an unreachable broker: retry an idempotent operation until a deadline.

Every broker operation TTG repeats this way is idempotent (completions are
de-duplicated by chunk id, reads resume from a cursor), so retrying across a
broker restart is safe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from ttg.errors import BrokerUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


def patiently(op: Callable[[], T], *, wait_s: float) -> T:
    """Run ``op``; while it raises BrokerUnavailable, back off (0.1 s doubling to 2 s) and retry, for up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    delay = 0.1
    while True:
        try:
            return op()
        except BrokerUnavailable as e:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("broker unreachable, retrying in %.1fs: %s", delay, e)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
