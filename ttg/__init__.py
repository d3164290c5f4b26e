"""TTG: run a parameter sweep across workers through a message broker, and prove nothing was lost."""

from __future__ import annotations

__version__ = "0.1.0"

from ttg.broker import Broker, BrokerStats, DeadLetter, Delivery, open_broker
from ttg.errors import (
    AlgorithmError,
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    MessageError,
    TTGError,
    VerdictFailed,
)
from ttg.plan import Chunk, ChunkPlan
from ttg.sweep import SweepSpec


def discover(discover_system: bool = True) -> dict[str, object]:
    """``chaos discover ttg``: the Chaos Toolkit actions and probes TTG offers (see :mod:`ttg.chaos`)."""
    from ttg.chaos import discover as chaos_discover

    return chaos_discover(discover_system)


__all__ = [
    "AlgorithmError",
    "Broker",
    "BrokerError",
    "BrokerStats",
    "BrokerUnavailable",
    "Chunk",
    "ChunkPlan",
    "ConfigError",
    "DeadLetter",
    "Delivery",
    "MessageError",
    "SweepSpec",
    "TTGError",
    "VerdictFailed",
    "__version__",
    "discover",
    "open_broker",
]
