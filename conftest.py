"""Loads TTG's pytest plugin (:mod:`ttg.testing`) for ``tests/`` and ``scenarios/``.

When TTG is installed, its ``pytest11`` entry point (named ``ttg.testing.plugin``) has registered the plugin already
and this line is a no-op. The checkout goes on ``PYTHONPATH`` so that worker and compute processes, which import an
algorithm by name, find the scenario helpers in ``fixtures/`` (not an installed package).
"""

import os
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent)
if ROOT not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)

pytest_plugins = ["ttg.testing.plugin"]
