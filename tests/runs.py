"""Watching a run from outside, as its tests do: how far its coordinator has recorded."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def wait_recorded(run_dir: Path, low: int, high: int, *, timeout_s: float = 60.0, poll_s: float = 0.05) -> None:
    """Until the run's ledger (``seen.npy``, a shared mapping: what the coordinator marks is visible at once) holds at
    least ``low`` and fewer than ``high`` recorded chunks, or ``timeout_s`` passed; the caller checks what it needs."""
    seen = run_dir / "seen.npy"
    deadline = time.monotonic() + timeout_s
    while not (seen.exists() and low <= int(np.load(seen, mmap_mode="r").sum()) < high) and time.monotonic() < deadline:
        time.sleep(poll_s)
