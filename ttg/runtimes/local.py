"""The local runtime: workers are ``ttg worker`` processes on this machine, logging to the run directory."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from ttg.errors import RuntimeStartError
from ttg.runtimes import Runtime, WorkerLaunch

log = logging.getLogger(__name__)


class LocalRuntime(Runtime):
    name = "local"

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}

    def start(self, launches: list[WorkerLaunch]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for launch in launches:
            if launch.worker_id in self._logs:  # a respawn: the log continues, the old handle goes
                self._logs.pop(launch.worker_id).close()
            path = self.log_dir / f"{launch.worker_id}.log"
            fh = open(path, "ab")  # noqa: SIM115 - kept open for the worker's lifetime, closed in stop()
            try:
                # New session: a Ctrl-C in the terminal reaches the coordinator only, which then stops workers in order.
                proc = subprocess.Popen(
                    [sys.executable, "-m", "ttg", "worker", *launch.args],
                    stdin=subprocess.DEVNULL,
                    stdout=fh,
                    stderr=fh,
                    start_new_session=True,
                    env={**os.environ, **launch.env},
                )
            except OSError as e:
                fh.close()
                raise RuntimeStartError(f"could not start worker {launch.worker_id}: {e}") from None
            self.procs[launch.worker_id] = proc
            self._logs[launch.worker_id] = fh
            log.info("worker spawned", extra={"worker_id": launch.worker_id, "pid": proc.pid})

    def alive(self) -> list[str]:
        return [w for w, p in self.procs.items() if p.poll() is None]

    def kill(self, worker_id: str, sig: int) -> None:
        proc = self.procs[worker_id]
        if proc.poll() is None:
            os.kill(proc.pid, sig)
            if sig == signal.SIGKILL:
                proc.wait()

    def consumer_key(self, worker_id: str) -> str:
        # Exact: a resumed run's w0 is a new process while its predecessor's w0 may still serve the run.
        return f"{worker_id}.{self.procs[worker_id].pid}"

    def exit_codes(self) -> dict[str, int | None]:
        return {w: p.poll() for w, p in self.procs.items()}

    def describe_failure(self, worker_id: str) -> str:
        path = self.log_dir / f"{worker_id}.log"
        lines = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
        return " | ".join(lines[-3:]) or "(no output)"

    def wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return False
        return True

    def stop(self, grace_s: float = 10.0) -> None:
        for w in self.alive():
            os.kill(self.procs[w].pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for w, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker did not stop in %.0fs, killing it", grace_s, extra={"worker_id": w})
                proc.kill()
                proc.wait()
        for fh in self._logs.values():
            fh.close()
        self._logs.clear()
