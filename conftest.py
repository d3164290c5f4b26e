"""Loads TTG's fixtures (the ``fixtures`` package) for ``tests/`` and ``scenarios/``.

When TTG is installed, its ``pytest11`` entry point (named ``fixtures.plugin``) has
registered the plugin already and this line is a no-op; from a bare checkout it does
the loading.
"""

pytest_plugins = ["fixtures.plugin"]
