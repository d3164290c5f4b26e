"""TTG: run a parameter sweep across workers through a message broker, and prove nothing was lost."""

from __future__ import annotations

__version__ = "0.1.0"

from ttg.broker import Broker, BrokerStats, DeadLetter, Delivery, open_broker  # noqa: E402
from ttg.errors import (  # noqa: E402
    AlgorithmError,
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    MessageError,
    TTGError,
    VerdictFailed,
)
from ttg.plan import Chunk, ChunkPlan  # noqa: E402
from ttg.sweep import SweepSpec  # noqa: E402

__all__ = [
    "AlgorithmError", "Broker", "BrokerError", "BrokerStats", "BrokerUnavailable", "Chunk", "ChunkPlan", "ConfigError",
    "DeadLetter", "Delivery", "MessageError", "SweepSpec", "TTGError", "VerdictFailed", "__version__", "open_broker",
]
