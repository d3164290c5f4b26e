"""Chaos Toolkit probes (and the tolerance functions that judge them) for the steady-state hypothesis.

The hypothesis is checked twice. Before the method no sweep of the experiment
exists yet, so :func:`sweep_verdict` runs a fault-free baseline sweep of the same
shape: the steady state is "a sweep loses nothing". After the method it waits
for the sweep the faults were injected into and returns that sweep's verdict.
:func:`fault_evidence` then proves each injected fault took effect, so an
experiment whose fault never happened cannot pass.
"""

from __future__ import annotations

import logging
from typing import Any

from chaoslib.exceptions import ActivityFailed

from ttg.chaos import session
from ttg.errors import TTGError
from ttg.verdict import checksum_words

__all__ = ["fault_evidence", "faults_took_effect", "sweep_progress", "sweep_verdict", "verdict_holds"]
log = logging.getLogger("chaostoolkit")  # so the reasons land in chaostoolkit.log next to the activity


def sweep_verdict(timeout_s: float = 600.0, configuration: dict[str, Any] | None = None) -> dict[str, Any]:
    """The verdict of the experiment's sweep (after the method) or of a fault-free baseline sweep (before it)."""
    sweep = session.current_sweep()
    try:
        if sweep is None:
            record = session.baseline(session.run_config(session.settings_from(configuration, {})))
            phase = "baseline"
        else:
            record = sweep.wait(timeout_s)
            phase = "chaos"
    except TTGError as e:
        raise ActivityFailed(f"the sweep could not be judged: {e}") from None
    v = record.verdict
    return {
        "phase": phase,
        "run_id": record.run_id,
        "record": f"{record.run_dir}/record.json",
        "backend": record.backend,
        "mode": record.mode,
        "ok": v.ok,
        "chunks_expected": v.chunks_expected,
        "chunks_completed": v.chunks_completed,
        "lost": v.lost,
        "lost_chunk_ids": v.lost_chunk_ids[:50],
        "duplicates": v.duplicates,
        "dead_lettered": v.dead_lettered,
        "dead_letter_ids": v.dead_letter_ids[:50],
        "checksum_ok": v.checksum_ok,
        "mismatches": v.mismatches,
        "wall_s": record.wall_s,
        "faults": [f.to_dict() for f in record.faults],
    }


def verdict_holds(value: dict[str, Any] | None = None, lost: int = 0, dead_lettered: int = 0) -> bool:
    """Tolerance of :func:`sweep_verdict`: lost and dead-lettered chunks as expected, every completed value correct.

    Dead letters are expected only from the chaos sweep (a poison-chunk experiment
    expects its poisoned chunks there); the baseline must have none. When every
    chunk is expected back, the whole sweep's checksum must match the reference.
    """
    if value is None:  # chaoslib passes the probe's output as ``value``; the default only satisfies its validation
        return False
    want_dead = dead_lettered if value.get("phase") == "chaos" else 0
    problems = []
    if value["lost"] != lost:
        problems.append(f"lost {value['lost']} chunk(s), expected {lost} (first ids {value['lost_chunk_ids'][:10]})")
    if value["dead_lettered"] != want_dead:
        problems.append(f"{value['dead_lettered']} chunk(s) dead-lettered, expected {want_dead} (ids {value['dead_letter_ids'][:10]})")
    if value["mismatches"]:
        problems.append(f"{value['mismatches']} completed value(s) differ from the serial reference")
    if lost == 0 and want_dead == 0 and value["checksum_ok"] is not True:
        words = checksum_words(value["checksum_ok"], value["mismatches"], value["lost"], value["dead_lettered"])
        problems.append(f"checksum {words}: the result is not the serial reference's")
    for p in problems:
        log.warning("%s sweep %s: %s", value.get("phase"), value.get("run_id"), p)
    return not problems


def fault_evidence(timeout_s: float = 600.0) -> dict[str, Any]:
    """The faults the experiment's sweep received, each with its evidence (none before the method)."""
    sweep = session.current_sweep()
    if sweep is None:
        return {"phase": "baseline", "faults": []}
    try:
        record = sweep.wait(timeout_s)
    except TTGError as e:
        raise ActivityFailed(f"the sweep could not be read: {e}") from None
    return {"phase": "chaos", "faults": [f.to_dict() for f in record.faults]}


def faults_took_effect(value: dict[str, Any] | None = None, kinds: list[str] | None = None) -> bool:
    """Tolerance of :func:`fault_evidence`: after the method, each kind in ``kinds`` was injected and shows evidence."""
    if value is None:
        return False
    if value.get("phase") != "chaos":
        return True  # before the method nothing was injected, and nothing should have been
    ok = True
    for kind in kinds or []:
        recs = [f for f in value["faults"] if f["kind"] == kind]
        if not recs:
            log.warning("fault %s was never injected: the method's inject_fault did not run or failed", kind)
            ok = False
        for f in recs:
            if f["note"].startswith("not injected") or not f["evidence"]:
                log.warning("fault %s shows no effect (%s): the experiment proved nothing", kind, f["note"] or "no evidence recorded")
                ok = False
    return ok


def sweep_progress() -> dict[str, Any]:
    """Chunks done so far in the running sweep, and the faults still active."""
    sweep = session.current_sweep()
    if sweep is None or sweep.live is None:
        raise ActivityFailed("no sweep is running")
    faults = sweep.live.faults
    return {"chunks_done": faults.chunks_done, "chunks": sweep.live.chunks, "active_faults": [r.kind for r in faults.active()]}
