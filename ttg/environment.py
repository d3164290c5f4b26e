"""Where a run ran: TTG's version and commit, Python, the machine, the broker server. The run record carries it, so a
report describes the machine that *ran* each sweep, not the one that renders the report, and a comparison with a
baseline can say when the two were not run alike."""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from pathlib import Path

from ttg import __version__, backends


def commit() -> str:
    """The git commit TTG runs from ("" for an installed package); "+changes" when the checkout has uncommitted edits."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return ""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if head.returncode != 0:
        return ""
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def describe(backend: str, private_broker: bool) -> dict[str, str]:
    """This machine, for the record of a run on ``backend``: the server binary's version is the broker's own only when
    TTG started the broker here (a given URL may point anywhere)."""
    return dict(_describe(backend, private_broker))  # a copy: the record's owner may change it


# Once per process: a process that runs many sweeps (a fuzz, a test session) asks git and the broker binary once, not
# at the end of every run.
@functools.cache
def _describe(backend: str, private_broker: bool) -> dict[str, str]:
    env = {
        "ttg": __version__,
        "commit": commit() or "-",
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cores": str(os.cpu_count()),
    }
    binary = backends.backend(backend).server_version()
    env[f"{backend} server"] = binary if private_broker else f"a given broker (this machine's binary: {binary})"
    return env
