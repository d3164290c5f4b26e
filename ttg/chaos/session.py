"""The sweep behind the Chaos Toolkit activities: one background sweep per experiment, and its private broker.

Chaos Toolkit runs an experiment's activities one after another in one process,
so the state they share lives here: the private broker (started once, used by
the baseline sweep the steady-state hypothesis runs before the method and by
the sweep the method injects faults into), and that sweep, running
:func:`ttg.run.execute` on a thread. :func:`reset` (the rollback, and at exit)
heals every fault and stops the sweep, its workers and the broker, so an
interrupted experiment leaves nothing behind.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import threading
from collections.abc import Mapping
from typing import Any

from ttg import backends
from ttg.config import RunConfig, load_run_config
from ttg.errors import TTGError
from ttg.record import RunRecord
from ttg.run import BrokerAccess, LiveRun, execute
from ttg.servers import PrivateServer

log = logging.getLogger(__name__)

# The experiments' own defaults: a sweep of a few seconds, long enough to hit mid-flight.
EXPERIMENT_DEFAULTS: dict[str, Any] = {"params": 200_000, "chunk": 2_000, "workers": 3, "cost_us": 20.0}


class ChaosError(TTGError):
    """An activity could not do what the experiment asked (the message says why and what to change)."""


_SWEEP_KEYS = ("backend", "broker_url", "params", "chunk", "workers", "cost_us", "mode", "out", "reclaim_after_s", "max_deliveries", "seed", "faults")


def settings_from(configuration: Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The sweep settings in an experiment's configuration block, with the activity's own arguments on top."""
    conf = configuration or {}
    merged = {k: conf[k] for k in _SWEEP_KEYS if k in conf}
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return merged


def run_config(settings: Mapping[str, Any]) -> RunConfig:
    """A validated RunConfig from the experiment's settings; what they leave out comes from TTG_* or the defaults."""
    given = {k: v for k, v in {**EXPERIMENT_DEFAULTS, **settings}.items() if v is not None and v != ""}
    cfg = load_run_config(given)  # "faults" may be a comma-separated string, as in TTG_FAULTS
    if not backends.backend(cfg.sweep.backend).durable and not cfg.sweep.broker_url:
        cfg = dataclasses.replace(cfg, persistence=True)  # the session's Redis logs every write: a kill-broker loses nothing
    return cfg


class ChaosSweep:
    """One sweep on a background thread; faults can be added to it while it runs."""

    def __init__(self, cfg: RunConfig, access: BrokerAccess) -> None:
        self.cfg = cfg
        self.cancel = threading.Event()
        self.live: LiveRun | None = None
        self.record: RunRecord | None = None
        self.error: BaseException | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(access,), name="ttg-chaos-sweep", daemon=True)

    def _run(self, access: BrokerAccess) -> None:
        try:
            self.record = execute(self.cfg, access=access, on_start=self._on_start, cancel=self.cancel)
        except BaseException as e:  # reported to the activity that waits for the sweep
            self.error = e
        finally:
            self._started.set()

    def _on_start(self, live: LiveRun) -> None:
        self.live = live
        self._started.set()

    def start(self, timeout_s: float) -> LiveRun:
        self._thread.start()
        if not self._started.wait(timeout_s):
            self.stop()
            raise ChaosError(f"the sweep did not start within {timeout_s:g}s (workers not connected); see the worker logs under {self.cfg.out}")
        if self.live is None:
            raise ChaosError(f"the sweep failed to start: {self.error}")
        return self.live

    def wait(self, timeout_s: float) -> RunRecord:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise ChaosError(f"the sweep did not finish within {timeout_s:g}s; raise timeout_s or make the sweep smaller")
        if self.record is None:
            raise ChaosError(f"the sweep failed: {type(self.error).__name__}: {self.error}")
        return self.record

    def stop(self) -> None:
        """Heal, end collection, stop the workers: the run is judged as it stands."""
        if self.live is not None:
            self.live.faults.heal_all()
        self.cancel.set()
        if self._thread.is_alive():
            self._thread.join(60)


@dataclasses.dataclass
class _Session:
    servers: dict[str, PrivateServer] = dataclasses.field(default_factory=dict)
    sweep: ChaosSweep | None = None
    baseline: RunRecord | None = None


_session = _Session()
_lock = threading.Lock()


def broker_for(cfg: RunConfig) -> BrokerAccess:
    """The given broker, or the session's private one for this backend (started on first use)."""
    if cfg.sweep.broker_url:
        return BrokerAccess(cfg.sweep.broker_url)
    with _lock:
        server = _session.servers.get(cfg.sweep.backend)
        if server is None:
            server = backends.backend(cfg.sweep.backend).private_server(persistence=True)
            server.start()
            _session.servers[cfg.sweep.backend] = server
    return BrokerAccess(server.url, server.startup_s, server)


def start_sweep(cfg: RunConfig, timeout_s: float = 120.0) -> LiveRun:
    if _session.sweep is not None and _session.sweep.record is None and _session.sweep.error is None:
        raise ChaosError("a sweep is already running in this experiment; add the stop_sweep rollback, or run one start_sweep per experiment")
    sweep = ChaosSweep(cfg, broker_for(cfg))
    _session.sweep = sweep
    return sweep.start(timeout_s)


def current_sweep() -> ChaosSweep | None:
    return _session.sweep


def baseline(cfg: RunConfig) -> RunRecord:
    """A fault-free sweep of the same shape: the steady state, measured before the method (once per experiment)."""
    if _session.baseline is None:
        _session.baseline = execute(dataclasses.replace(cfg, faults=()), access=broker_for(cfg))
    return _session.baseline


def reset() -> None:
    """Heal every fault, stop the sweep and its workers, stop the private brokers; safe to call at any time."""
    sweep, _session.sweep, _session.baseline = _session.sweep, None, None
    if sweep is not None:
        sweep.stop()
    with _lock:
        servers, _session.servers = _session.servers, {}
    for server in servers.values():
        try:
            server.stop()
        except Exception:  # one broker failing to stop must not keep the others running
            log.exception("could not stop a private broker")


atexit.register(reset)
