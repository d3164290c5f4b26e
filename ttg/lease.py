"""Who holds a run: the owner string a coordinator claims a run's lease with, and whether its holder is gone.

A lease is the broker's business (see :meth:`ttg.broker.Broker.claim`); this module only names
owners, so a lease left by a SIGKILLed coordinator on this host is taken over at once instead of
after its TTL.
"""

from __future__ import annotations

import os
import socket
import uuid

LEASE_TTL_S = 10.0  # a dead coordinator's lease lapses this long after its last refresh
REFRESH_EVERY_S = 2.0


def new_owner() -> str:
    """``host/pid/nonce``: readable in an error message, unique per coordinator."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def holder_is_dead(owner: str) -> bool:
    """True when ``owner`` names a process on this host that no longer exists (its lease may be taken over now)."""
    host, _, rest = owner.partition("/")
    pid_text = rest.partition("/")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another host's coordinator: only its TTL can tell
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def describe(owner: str) -> str:
    host, _, rest = owner.partition("/")
    pid = rest.partition("/")[0]
    return f"pid {pid} on {host}" if pid else owner
