"""A lean RabbitMQ home for a private node: the installation's scripts, and only the applications the node can load.

Why: RabbitMQ puts every application in its plugins directory on the Erlang code path (``ERL_LIBS``: 70 of them in
Debian's 3.10 package), and at boot it loads each module of its running applications to find their boot steps and
feature flags. OTP 25 has no code path cache, so each module load tries the code path's directories in turn: about
52,000 failed opens in one boot (``strace -f -c``), each a round trip to a dirty I/O scheduler. A plugins directory
that holds only ``rabbit``, its dependencies and the plugins the node enables (26 applications with the management
plugin) cuts that path short: a cold node is ready in about half the time (``bench/startup`` measures both).

The home is made of links into the installation, in the node's own directory. The start script is pointed at it with
``RABBITMQ_SCRIPTS_DIR``: ``rabbitmq-env`` derives ``RABBITMQ_HOME`` from that, and from it ``ERL_LIBS`` and the plugins
directory. An installation of another layout (plugins as ``.ez`` archives, no ``sbin`` beside ``plugins``, an
application whose ``.app`` file cannot be read) runs from its own home, as before: slower, never broken.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

ROOTS = ("rabbit", "rabbitmq_prelaunch")  # what every node runs; enabled plugins are added to these
# {applications, [a, b]} and {included_applications, [...]} in an .app file: the applications the node will load.
_REQUIRED = re.compile(r"\{\s*(?:included_)?applications\s*,\s*\[([^\]]*)\]")
_OPTIONAL = re.compile(r"\{\s*optional_applications\s*,\s*\[([^\]]*)\]")  # started when present: kept when present
_COMMENT = re.compile(r"%[^\n\"]*$", re.MULTILINE)  # a comment to the end of a line (a % inside a string is left alone)


def installation(script: str) -> Path | None:
    """The installation directory (``rabbitmq_server-X.Y.Z``) a ``rabbitmq-server`` script belongs to, when it has the
    layout this module knows: ``sbin/`` with the scripts beside ``plugins/``."""
    real = Path(os.path.realpath(script))
    home = real.parent.parent
    if real.parent.name == "sbin" and (home / "sbin" / "rabbitmq-env").is_file() and (home / "plugins").is_dir():
        return home
    return None


def applications(lib: Path) -> dict[str, Path] | None:
    """Each application directory of ``lib`` (one that holds ``ebin/NAME.app``), by the name its .app file gives; None
    when an application is there twice (which one the code server would load is not this module's to guess)."""
    apps: dict[str, Path] = {}
    for entry in lib.iterdir():
        for app in entry.glob("ebin/*.app") if entry.is_dir() else ():
            if app.stem in apps:
                return None
            apps[app.stem] = entry
    return apps


def otp_applications() -> set[str] | None:
    """The names of the applications in the Erlang/OTP installation that ``erl`` on the PATH runs, or None."""
    erl = shutil.which("erl")
    lib = Path(os.path.realpath(erl)).parent.parent / "lib" if erl else None
    if lib is None or not lib.is_dir():
        return None
    return {entry.name.rpartition("-")[0] or entry.name for entry in lib.iterdir()}


def needed(apps: dict[str, Path], otp: set[str], roots: Iterable[str]) -> set[str] | None:
    """The applications of ``apps`` that ``roots`` need, transitively; None when one is in neither ``apps`` nor
    ``otp`` (an archive, a layout not understood) or an .app file cannot be read: the caller then keeps the whole
    plugins directory, whatever it is the node would have found there."""
    seen: set[str] = set()
    todo = [(name, True) for name in roots]
    while todo:
        name, required = todo.pop()
        if name in seen:
            continue
        if name not in apps:
            if required and name not in otp:
                return None
            continue  # kernel, stdlib, mnesia, ssl ...: on OTP's own code path
        seen.add(name)
        try:
            text = _COMMENT.sub("", (apps[name] / "ebin" / f"{name}.app").read_text(errors="replace"))
        except OSError:
            return None
        for pattern, req in ((_REQUIRED, True), (_OPTIONAL, False)):
            for listed in pattern.findall(text):
                todo.extend((atom.strip().strip("'"), req) for atom in listed.split(",") if atom.strip())
    return seen


def make_home(script: str, directory: Path, plugins: Iterable[str]) -> Path | None:
    """Build the lean home in ``directory`` (made anew) for a node that enables ``plugins``; returns its scripts
    directory, to run ``rabbitmq-server`` from with ``RABBITMQ_SCRIPTS_DIR`` set to it, or None: run the installation
    as it is."""
    home = installation(script)
    if home is None:
        log.debug("rabbitmq-server at %s: not a layout with sbin/ beside plugins/; the node runs from its installation", script)
        return None
    apps, otp = applications(home / "plugins"), otp_applications()
    if apps is None or otp is None or (keep := needed(apps, otp, (*ROOTS, *plugins))) is None:
        log.debug("the applications %s needs could not all be found; the node runs from its installation", home)
        return None
    try:
        shutil.rmtree(directory, ignore_errors=True)
        (directory / "plugins").mkdir(parents=True)
        (directory / "sbin").mkdir()
        for name in keep:
            (directory / "plugins" / apps[name].name).symlink_to(apps[name])
        for script_file in (home / "sbin").iterdir():
            (directory / "sbin" / script_file.name).symlink_to(script_file)
        for other in home.iterdir():  # escript/ and anything else a script may look for beside sbin/ and plugins/
            if other.name not in ("sbin", "plugins"):
                (directory / other.name).symlink_to(other)
    except OSError as e:
        log.warning("could not make a lean RabbitMQ home in %s (%s); the node runs from its installation", directory, e)
        shutil.rmtree(directory, ignore_errors=True)
        return None
    return directory / "sbin"
