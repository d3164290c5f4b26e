"""TTG's pytest plugin and scenario helpers: private brokers, worker fleets, Kind clusters, a sweep runner.

Registered for any project that installs TTG by the ``pytest11`` entry point ``ttg.testing.plugin``; this checkout's
root ``conftest.py`` loads it by the same name. Scenarios use :func:`assert_verdict` and the :data:`SCALES`.
"""

from ttg.testing.scales import SCALES, Scale
from ttg.testing.verdicts import assert_verdict, verdict_table

__all__ = ["SCALES", "Scale", "assert_verdict", "verdict_table"]
