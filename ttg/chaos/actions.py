"""Chaos Toolkit actions: start a sweep, inject a fault into it at a progress point, wait for it, stop everything.

Every function takes keyword arguments and returns JSON-able values. Sweep
settings come from the experiment's ``configuration`` block (which reads
``TTG_*`` environment variables with the experiment's defaults); an argument
given to the activity wins. Failures raise ``ActivityFailed`` with what to change.
"""

from __future__ import annotations

from typing import Any

from chaoslib.exceptions import ActivityFailed

from ttg.chaos import session
from ttg.config import check_fault
from ttg.errors import TTGError
from ttg.faults import KINDS, parse_fault

__all__ = ["heal_faults", "inject_fault", "start_sweep", "stop_sweep", "wait_for_sweep"]


def start_sweep(
    backend: str | None = None,
    params: int | None = None,
    chunk: int | None = None,
    workers: int | None = None,
    cost_us: float | None = None,
    mode: str | None = None,
    faults: str | None = None,
    timeout_s: float = 120.0,
    configuration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Start a sweep in the background (local workers, the session's private broker) and return once it is running.

    ``faults``: comma-separated fault specs set up at launch (``poison-chunk@50%``);
    faults injected at a progress point go through :func:`inject_fault`.
    """
    overrides = {"backend": backend, "params": params, "chunk": chunk, "workers": workers, "cost_us": cost_us, "mode": mode, "faults": faults}
    try:
        cfg = session.run_config(session.settings_from(configuration, overrides))
        live = session.start_sweep(cfg, timeout_s)
    except TTGError as e:
        raise ActivityFailed(f"could not start the sweep: {e}") from None
    return {
        "run_id": live.run_id,
        "run_dir": str(live.run_dir),
        "backend": cfg.sweep.backend,
        "mode": cfg.mode,
        "params": cfg.params,
        "chunks": live.chunks,
        "workers": cfg.workers,
    }


def inject_fault(
    kind: str,
    at_percent: float = 30.0,
    duration_s: float | None = None,
    target: str | None = None,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Inject ``kind`` once ``at_percent`` % of the chunks are done, into ``target`` (one, N, P%, random, all, w1 ...).

    Returns the fault's record once injected (timed faults heal by themselves after
    ``duration_s``). Raises when there is no sweep, or the fault could not be injected.
    """
    sweep = session.current_sweep()
    if sweep is None or sweep.live is None:
        raise ActivityFailed("no sweep is running: put a start_sweep action before inject_fault in the method")
    if kind in KINDS and KINDS[kind].at_launch:
        raise ActivityFailed(f"{kind} is set when the workers start: pass faults='{kind}@P%' to start_sweep instead")
    spec_text = f"{kind}@{float(at_percent):g}%" + (f":{float(duration_s):g}s" if duration_s is not None else "")
    spec_text += f"/{target}" if target not in (None, "", "default") else ""
    try:
        spec = parse_fault(spec_text)
        check_fault(sweep.cfg, spec)
    except TTGError as e:
        raise ActivityFailed(str(e)) from None
    sweep.live.faults.add(spec)
    rec = sweep.live.faults.wait_fired(spec, timeout_s)
    if rec is None:
        if sweep.record is not None:
            raise ActivityFailed(f"the sweep ended before {spec} reached its progress point; lower at_percent or make the sweep longer")
        raise ActivityFailed(f"{spec} did not fire within {timeout_s:g}s; the sweep may be stuck, see {sweep.live.run_dir}")
    if rec.note.startswith("not injected"):
        raise ActivityFailed(f"{spec}: {rec.note}")
    return rec.outcome().to_dict()


def wait_for_sweep(timeout_s: float = 600.0) -> dict[str, Any]:
    """Block until the background sweep has ended and been judged; returns its verdict's headline figures."""
    sweep = session.current_sweep()
    if sweep is None:
        raise ActivityFailed("no sweep was started: put a start_sweep action in the method")
    try:
        record = sweep.wait(timeout_s)
    except TTGError as e:
        raise ActivityFailed(str(e)) from None
    v = record.verdict
    return {"run_id": record.run_id, "ok": v.ok, "lost": v.lost, "duplicates": v.duplicates, "dead_lettered": v.dead_lettered}


def heal_faults() -> int:
    """Heal every active fault now (restart or resume the broker, reopen the network); returns how many were active."""
    sweep = session.current_sweep()
    if sweep is None or sweep.live is None:
        return 0
    active = len(sweep.live.faults.active())
    sweep.live.faults.heal_all()
    return active


def stop_sweep() -> dict[str, Any]:
    """The rollback: heal every fault, stop the sweep, its workers and the private broker. Safe to run twice."""
    sweep = session.current_sweep()
    run_id = sweep.live.run_id if sweep is not None and sweep.live is not None else None
    session.reset()
    return {"stopped": run_id}
