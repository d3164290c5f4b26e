"""A user module whose import has a side effect: it writes the importing process's pid to $TTG_TEST_IMPORT_LOG.

Shows which processes run a user's module-level code (only compute children may)."""

from __future__ import annotations

import os

import numpy as np

with open(os.environ["TTG_TEST_IMPORT_LOG"], "a") as _log:
    _log.write(f"{os.getpid()}\n")


def double(params: np.ndarray) -> np.ndarray:
    return params * 2.0
