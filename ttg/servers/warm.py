"""A warm private broker: started once by ``ttg broker up``, reused by every run given its URL, stopped by
``ttg broker down``.

A run's own private broker starts and stops with it (RabbitMQ's node takes seconds to boot); a warm one is private
in the same way (127.0.0.1 only, a generated password, its own data directory) but outlives the command that
started it. What ``down`` needs is kept in a 0600 state file per backend: the URL (with its password), the pid and
the data directory. Runs on it use run-scoped keys and queues, as on any shared broker.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from ttg import backends
from ttg.errors import ConfigError, ServerStartError
from ttg.servers import write_private


def state_dir() -> Path:
    """$TTG_STATE_DIR, else $XDG_STATE_HOME/ttg, else ~/.local/state/ttg."""
    given = os.environ.get("TTG_STATE_DIR")
    if given:
        return Path(given)
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "ttg"


@dataclass(frozen=True)
class WarmBroker:
    backend: str
    url: str
    pid: int
    data_dir: str
    startup_s: float
    started_at: float
    management: bool
    created: float = 0.0  # the process's start time (psutil): a reused pid is another process
    management_url: str | None = None  # RabbitMQ's management API, for ttg status --management-url

    @staticmethod
    def path(backend: str) -> Path:
        return state_dir() / f"broker-{backend}.json"

    @classmethod
    def load(cls, backend: str) -> WarmBroker | None:
        """The warm broker of ``backend`` if its state file names a live process that is still that broker."""
        try:
            doc = json.loads(cls.path(backend).read_text())
            warm = cls(**doc)
        except (OSError, ValueError, TypeError):
            return None
        return warm if warm.alive() else None

    def alive(self) -> bool:
        # The pid alone could be reused by another process: it must still run from the broker's data directory.
        try:
            proc = psutil.Process(self.pid)
            if self.created and abs(proc.create_time() - self.created) > 1.0:
                return False
            return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE and self.data_dir in " ".join([*proc.cmdline(), proc.cwd()])
        except psutil.Error:
            return False

    def save(self) -> None:
        path = self.path(self.backend)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, json.dumps(asdict(self), indent=1) + "\n")

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the broker's process group, SIGKILL what is left after ``grace_s``; remove its data and state."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):  # it may exit meanwhile: gone is what was asked
                # Its own session (started so): the group is the broker's and its helpers', never the caller's.
                if os.getpgid(self.pid) != self.pid:
                    raise ServerStartError(f"process {self.pid} does not lead its own process group; not stopping it (remove {self.path(self.backend)})")
                os.killpg(self.pid, signal.SIGCONT)  # a paused broker cannot stop
                os.killpg(self.pid, signal.SIGTERM)
                deadline = time.monotonic() + grace_s
                while self.alive() and time.monotonic() < deadline:
                    time.sleep(0.1)
                if self.alive():
                    os.killpg(self.pid, signal.SIGKILL)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.path(self.backend).unlink(missing_ok=True)


def _data_dir(backend: str) -> Path:
    return state_dir() / f"broker-{backend}-data"


@contextlib.contextmanager
def _locked(backend: str) -> Iterator[None]:
    """One ``up`` or ``down`` of a backend at a time: two at once would both start a broker, and one be orphaned."""
    state_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(state_dir() / f"broker-{backend}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def up(backend: str, *, management: bool = True) -> tuple[WarmBroker, bool]:
    """The backend's warm broker, started if none is running; returns it and whether it was started now."""
    spec = backends.backend(backend)
    spec.require_driver()
    with _locked(backend):
        return _up(spec, backend, management)


def _up(spec: backends.BackendSpec, backend: str, management: bool) -> tuple[WarmBroker, bool]:
    if not management and not spec.management_plugin:
        raise ConfigError(f"--no-management: the {backend} broker has no management plugin")
    running = WarmBroker.load(backend)
    if running is not None:
        return running, False
    data_dir = _data_dir(backend)
    shutil.rmtree(data_dir, ignore_errors=True)  # a broker that died left its data: a warm broker starts empty
    data_dir.mkdir(parents=True, mode=0o700)
    cls = spec.load("server")
    options: dict[str, object] = {"data_dir": data_dir, "detached": True}
    if spec.management_plugin:
        options["management"] = management
    server = cls(**options)
    server.start()
    if server.pid is None:
        raise ServerStartError(f"the warm {backend} broker exited right after starting; see {data_dir}")
    created = psutil.Process(server.pid).create_time()
    api = getattr(server, "management_url", None) if management else None
    warm = WarmBroker(backend, server.url, server.pid, str(data_dir), round(server.startup_s or 0.0, 3), time.time(), management, created, api)
    warm.save()
    return warm, True


def down(backend: str) -> bool:
    """Stop the backend's warm broker; False when none was running (its leftovers are removed all the same)."""
    with _locked(backend):
        return _down(backend)


def _down(backend: str) -> bool:
    running = WarmBroker.load(backend)
    if running is None:
        WarmBroker.path(backend).unlink(missing_ok=True)
        shutil.rmtree(_data_dir(backend), ignore_errors=True)
        return False
    running.stop()
    return True
