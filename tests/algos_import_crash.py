"""A user module whose import crashes its process (a broken C extension would): ttg run must say so in one line."""

from __future__ import annotations

import os
import signal

os.kill(os.getpid(), signal.SIGSEGV)


def never(params: object) -> object:
    return params
