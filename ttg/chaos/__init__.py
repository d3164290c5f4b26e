"""Chaos Toolkit extension: run a sweep, inject faults into it, and judge it (``chaos run experiments/*.json``).

- :mod:`ttg.chaos.actions`: start a sweep in the background, inject a fault at a
  progress point, wait for the sweep, heal and stop everything (the rollback).
- :mod:`ttg.chaos.probes`: the sweep's verdict and the proof that each fault
  took effect, each with a tolerance function for the steady-state hypothesis.
- :mod:`ttg.chaos.session`: the sweep behind those calls (a background thread in
  the ``chaos`` process, sharing one private broker with the baseline sweep).
- :mod:`ttg.chaos.fuzz`: ``ttg chaos fuzz``, seeded random fault schedules.

Actions and probes need chaostoolkit-lib (``pip install 'ttg[chaos]'``; ``make install`` has it).
"""

from __future__ import annotations

from typing import Any

__all__ = ["discover"]


def discover(discover_system: bool = True) -> dict[str, Any]:
    """What ``chaos discover ttg`` reports: TTG's actions and probes (there is no system to discover)."""
    from chaoslib.discovery.discover import discover_actions, discover_probes, initialize_discovery_result

    from ttg import __version__

    discovery: dict[str, Any] = initialize_discovery_result("ttg", __version__, "ttg")
    discovery["activities"].extend(discover_actions("ttg.chaos.actions"))
    discovery["activities"].extend(discover_probes("ttg.chaos.probes"))
    return discovery
