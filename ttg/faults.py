"""Fault specifications: what to inject and when, as written on the command line.

``kill-worker@30%`` means: SIGKILL one worker once 30 % of the chunks are done.
``terminate-worker@50%`` sends SIGTERM instead (a graceful stop).
``kill-broker@30%:2s`` SIGKILLs the private broker and restarts it on its data 2 s later;
``pause-broker@30%:5s`` freezes it (SIGSTOP) for 5 s; ``partition-broker@30%:3s`` cuts the workers'
traffic to it for 3 s; ``latency@30%:5s`` adds 50 ms to every piece of that traffic for 5 s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ttg.errors import ConfigError

KNOWN_FAULTS = ("kill-worker", "terminate-worker", "kill-broker", "pause-broker", "partition-broker", "latency")
BROKER_FAULTS = ("kill-broker", "pause-broker")  # need the private broker's process
PROXY_FAULTS = ("partition-broker", "latency")  # need the fault proxy between workers and broker
# How long a timed fault lasts when the spec gives no ``:Ds``.
DEFAULT_DURATION_S = {"kill-broker": 1.0, "pause-broker": 3.0, "partition-broker": 3.0, "latency": 5.0}

_FAULT_RE = re.compile(r"(?P<kind>[a-z][a-z-]*)@(?P<pct>\d+(?:\.\d+)?)%(?::(?P<dur>\d+(?:\.\d+)?)s)?")


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    at_fraction: float
    duration_s: float | None = None

    def __str__(self) -> str:
        text = f"{self.kind}@{self.at_fraction * 100:g}%"
        return text + (f":{self.duration_s:g}s" if self.duration_s is not None else "")


def parse_fault(text: str) -> FaultSpec:
    m = _FAULT_RE.fullmatch(text.strip())
    if not m:
        raise ConfigError(f"fault must look like KIND@P% (for example kill-worker@30%) (got {text!r}); pass --fault")
    kind = m.group("kind")
    if kind not in KNOWN_FAULTS:
        raise ConfigError(f"unknown fault kind {kind!r}; known kinds: {', '.join(KNOWN_FAULTS)}")
    pct = float(m.group("pct"))
    if not 0 <= pct < 100:
        raise ConfigError(f"fault progress point must be in 0..99% (got {pct:g}%) in {text!r}")
    dur = m.group("dur")
    return FaultSpec(kind, pct / 100.0, float(dur) if dur else None)
