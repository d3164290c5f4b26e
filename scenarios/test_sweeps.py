"""Sweeps at every scale on both backends: ``pytest scenarios -k "redis and large"``.

Scales come from ``--ttg-scales`` (default small, medium, large = 1,000 / 100,000 /
10,000,000 parameters in chunks of 10 / 1,000 / 10,000).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ttg.testing import Scale, assert_verdict
from ttg.testing.plugin import BrokerHandle


def test_a_sweep_completes_and_matches_the_serial_reference(broker: BrokerHandle, scale: Scale, run_sweep: Callable[..., Any]) -> None:
    rec = run_sweep(broker, params=scale.params, chunk=scale.chunk, workers=2)
    assert_verdict(rec, ok=True, lost=0, duplicates=0, dead_lettered=0, checksum_ok=True, chunks_completed=scale.chunks, chunks_expected=scale.chunks)
