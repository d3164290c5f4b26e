"""A private ``redis-server`` on a free port with its own data directory."""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import port_for
import redis
from mirakuru import TCPExecutor
from mirakuru.exceptions import ProcessExitedWithError, TimeoutExpired

from ttg.errors import ServerStartError
from ttg.servers import PrivateServer, dies_with_us, on_spawner_thread, write_private

log = logging.getLogger(__name__)

INSTALL_HINT = "install it (Debian/Ubuntu: apt-get install redis-server) or pass --broker-url redis://HOST:PORT"


class PrivateRedis(PrivateServer):
    """Start, kill, pause and restart a private Redis; usable as a context manager.

    With ``appendonly`` every write is logged (``appendfsync always``) so a
    SIGKILL of the server followed by :meth:`restart` on the same directory
    loses nothing. It listens on 127.0.0.1 only and requires a generated
    password, kept in a 0600 config file in its directory (never on a command
    line, where any local user could read it); :attr:`url` carries it.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        appendonly: bool = False,
        binary: str = "redis-server",
        start_timeout_s: float = 15.0,
        detached: bool = False,
    ) -> None:
        self.binary = binary
        # Detached: outlives this process (ttg broker up): no parent-death signal, and not started through mirakuru,
        # which kills what it started when the interpreter exits.
        self.detached = detached
        self._detached: subprocess.Popen[bytes] | None = None
        self.port = port or port_for.select_random()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="ttg-redis-"))
        self.appendonly = appendonly
        self.start_timeout_s = start_timeout_s
        self._exec: TCPExecutor | None = None
        self.startup_s: float | None = None
        self.password = secrets.token_urlsafe(24)

    @classmethod
    def for_run(cls, *, persistence: bool, status: bool = False) -> PrivateRedis:
        return cls(appendonly=persistence)  # without AOF a restarted redis-server comes back empty

    @classmethod
    def version(cls) -> str:
        if not shutil.which("redis-server"):
            return "not found"
        text = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"v=(\S+)", text)
        return m.group(1) if m else text.strip()

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        proc = self._detached or (self._exec.process if self._exec is not None else None)
        return proc.pid if proc is not None and proc.poll() is None else None

    def _config_file(self) -> str:
        path = self.data_dir / "redis.conf"
        write_private(path, f'requirepass "{self.password}"\n')
        return str(path)

    def _command(self) -> list[str]:
        cmd = [
            self.binary,
            self._config_file(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        if self.appendonly:
            cmd += ["--appendonly", "yes", "--appendfsync", "always"]
        return cmd if self.detached else dies_with_us(cmd)

    def start(self) -> PrivateRedis:
        if shutil.which(self.binary) is None:
            raise ServerStartError(f"{self.binary} not found on PATH; {INSTALL_HINT}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        if self.detached:
            self._detached = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                self._wait_loaded()
            except ServerStartError:
                self._detached.kill()
                raise
            self.startup_s = time.monotonic() - t0
            return self
        self._exec = TCPExecutor(
            self._command(), host="127.0.0.1", port=self.port, timeout=self.start_timeout_s, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            on_spawner_thread(self._exec.start)
        except (TimeoutExpired, ProcessExitedWithError) as e:
            tail = self._log_tail()
            self.stop()
            raise ServerStartError(f"private redis-server on port {self.port} did not become ready: {e}; its log says: {tail}") from None
        self._wait_loaded()
        self.startup_s = time.monotonic() - t0
        log.info("private redis-server ready", extra={"port": self.port, "startup_s": round(self.startup_s, 3)})
        return self

    def _wait_loaded(self) -> None:
        """Redis accepts connections while it replays its AOF; wait until it answers PING."""
        client = redis.Redis(port=self.port, password=self.password, socket_timeout=2)
        deadline = time.monotonic() + self.start_timeout_s
        try:
            while True:
                try:
                    client.ping()
                    return
                except (redis.BusyLoadingError, redis.ConnectionError):
                    if time.monotonic() > deadline:
                        raise ServerStartError(f"private redis-server on port {self.port} still loading after {self.start_timeout_s:g}s") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def _log_tail(self) -> str:
        path = self.data_dir / "redis.log"
        return path.read_text(errors="replace").strip().splitlines()[-1] if path.exists() and path.stat().st_size else "(empty)"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the server (SIGKILL, SIGSTOP, SIGCONT ...)."""
        if self._exec is not None and self._exec.process is not None:
            self._exec.process.send_signal(sig)
            if sig == signal.SIGKILL:
                self._exec.process.wait()

    def cut_clients(self) -> str:
        from ttg.brokers.redis import CUT_CLIENTS

        cli = shutil.which("redis-cli") or "redis-cli"
        argv = [cli, "-p", str(self.port), "--no-auth-warning", "-a", self.password, *CUT_CLIENTS]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout.strip()

    def restart(self) -> None:
        """Start again on the same port and data directory (after a kill)."""
        if self._exec is not None and self._exec.running():
            self._exec.stop()
        self._exec = None
        self.start()

    def stop(self) -> None:
        if self._exec is not None:
            try:
                if self._exec.process is not None:
                    self._exec.process.send_signal(signal.SIGCONT)  # a paused server cannot stop
                self._exec.stop()
            except ProcessExitedWithError:
                pass  # killed earlier on purpose
            self._exec = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
