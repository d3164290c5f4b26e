"""A private ``rabbitmq-server`` node: own node name, free AMQP, distribution and management ports, own data and log dirs.

The node never reads the system's ``/etc/rabbitmq`` files (its own config and
env files are written into its directory) and carries its own Erlang cookie
(``HOME`` points into its directory), so it can be killed, paused and restarted
without touching the system broker. The management plugin is on, bound to
127.0.0.1, so ``ttg status`` can show unacknowledged counts for a private run.

No ``guest``: the node's only user is generated (``default_user``/``default_pass`` in its 0600
config file, read on first boot), with a random password, so another local user cannot publish
into a run. The node runs under ``setpriv --pdeathsig KILL`` and the start script execs the Erlang
VM (``RUNNING_UNDER_SYSTEMD``: the script's own mode for "no signal-forwarding shell"), so a
SIGKILLed coordinator takes its node with it.

The node boots from a lean home in its directory (:mod:`ttg.brokers.rabbitmq.lean`: only the applications it loads on its
code path, half the boot time), and what it prints before its log file opens goes to ``console.log`` there, so a node
that refuses to boot says why.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pika
import pika.exceptions
import port_for

from ttg.brokers.rabbitmq import lean
from ttg.errors import ServerStartError
from ttg.servers import PrivateServer, dies_with_us, on_spawner_thread, write_private

log = logging.getLogger(__name__)

INSTALL_HINT = "install it (Debian/Ubuntu: apt-get install rabbitmq-server) or pass --broker-url amqp://USER:PASS@HOST:PORT/"
# The Debian wrapper in /usr/sbin switches to the rabbitmq user; the real script runs as the caller.
_CANDIDATES = ("/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server")


def find_binary(binary: str | None = None) -> str | None:
    for candidate in (binary,) if binary else _CANDIDATES:
        path = shutil.which(candidate)
        if path:
            return path
    return None


class PrivateRabbitMQ(PrivateServer):
    """Start, kill, pause and restart a private RabbitMQ node; usable as a context manager.

    Queues are durable and messages persistent, so a SIGKILL of the node
    followed by :meth:`restart` on the same directory loses nothing.
    """

    def __init__(
        self,
        *,
        data_dir: Path | None = None,
        binary: str | None = None,
        start_timeout_s: float = 60.0,
        management: bool = True,
        detached: bool = False,
        lean: bool = True,
    ) -> None:
        self.binary = binary
        # Lean: run from a home whose plugins directory holds only what the node loads (see lean.py: half the boot).
        self.lean = lean
        # The management plugin is only for ttg status (and tests of it); a node without it boots faster.
        self.management = management
        # Detached: outlives this process (ttg broker up); otherwise it dies with it (parent-death signal).
        self.detached = detached
        self.port, self.dist_port, self.management_port = (port_for.select_random() for _ in range(3))
        self.node = f"ttg{uuid.uuid4().hex[:8]}@localhost"
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="ttg-rabbitmq-"))
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None
        self._log_from: dict[Path, int] = {}  # where this start's lines begin in each of the node's log files
        self.user = f"ttg-{uuid.uuid4().hex[:8]}"
        self.password = secrets.token_hex(16)  # hex: nothing to escape in a URL or the config file

    @classmethod
    def for_run(cls, *, persistence: bool, status: bool = False) -> PrivateRabbitMQ:
        # Durable queues and persistent messages: it keeps what it confirmed, persistence or not. Nobody can reach a run's
        # own node with ttg status (its password is the run's), so by default it goes without the management plugin.
        return cls(management=status)

    @classmethod
    def version(cls) -> str:
        # The install directory names it; rabbitmqctl would start an Erlang VM (seconds) to say the same.
        dirs = sorted(glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*"))
        return dirs[-1].rsplit("-", 1)[1] if dirs else "not found"

    @property
    def url(self) -> str:
        return f"amqp://{self.user}:{self.password}@127.0.0.1:{self.port}/%2F"

    @property
    def management_url(self) -> str:
        return f"http://{self.user}:{self.password}@127.0.0.1:{self.management_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def _environment(self) -> dict[str, str]:
        d = self.data_dir
        # Only with the plugin: a lean node without it has no schema for these keys, and refuses to boot.
        management = f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {self.management_port}\n" if self.management else ""
        write_private(
            d / "rabbitmq.conf",
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n{management}"
            # A private node on a shared disk: do not refuse publishers when the disk is fuller than RabbitMQ's default 50 MB.
            "disk_free_limit.absolute = 1MB\n"
            # The user created on first boot, instead of guest; an administrator so the management API answers.
            f"default_user = {self.user}\ndefault_pass = {self.password}\n"
            "default_user_tags.administrator = true\n"
            "default_permissions.configure = .*\ndefault_permissions.read = .*\ndefault_permissions.write = .*\n",
        )
        (d / "rabbitmq-env.conf").write_text("")
        (d / "enabled_plugins").write_text("[rabbitmq_management].\n" if self.management else "[].\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_")) and k != "NOTIFY_SOCKET"}
        env.update(
            RUNNING_UNDER_SYSTEMD="true",  # the start script execs erl: the parent-death signal reaches the VM itself
            HOME=str(d),  # the node's own Erlang cookie
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONF_ENV_FILE=str(d / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(d / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(d / "mnesia"),
            RABBITMQ_LOG_BASE=str(d / "log"),
            RABBITMQ_PLUGINS_EXPAND_DIR=str(d / "plugins"),
            RABBITMQ_PID_FILE=str(d / "rabbitmq.pid"),
            RABBITMQ_LOGS=str(d / "log" / "rabbitmq.log"),
            # No scheduler busy-waiting: an idle Erlang scheduler otherwise spins for a while before it sleeps, taking CPU
            # from the workers and the coordinator that share the machine (RabbitMQ's runtime guide recommends this for
            # shared or overcommitted hosts: https://www.rabbitmq.com/docs/runtime#busy-waiting).
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+sbwt none +sbwtdcpu none +sbwtdio none -kernel inet_dist_use_interface {127,0,0,1}",
            ERL_CRASH_DUMP=str(d / "erl_crash.dump"),
        )
        return env

    def start(self) -> PrivateRabbitMQ:
        path = find_binary(self.binary)
        if path is None:
            raise ServerStartError(f"{self.binary or 'rabbitmq-server'} not found; {INSTALL_HINT}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        # Its own session, so a Ctrl-C meant for the caller does not stop the node mid-run.
        env = self._environment()
        scripts = lean.make_home(path, self.data_dir / "home", ["rabbitmq_management"] if self.management else []) if self.lean else None
        if scripts is not None:
            env["RABBITMQ_SCRIPTS_DIR"] = str(scripts)
            path = str(scripts / "rabbitmq-server")
        # What the node prints before its log file is open (a config it refuses, a boot failure) goes to console.log.
        # Both files grow over restarts on this directory: a failed start quotes only what this start wrote.
        self._log_from = {f: f.stat().st_size if f.exists() else 0 for f in self._log_files()}
        with open(self.data_dir / "console.log", "ab") as console:
            self.process = on_spawner_thread(
                lambda: subprocess.Popen(
                    [path] if self.detached else dies_with_us([path]),
                    env=env,
                    cwd=self.data_dir,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        self._wait_ready()
        self.startup_s = time.monotonic() - t0
        log.info("private rabbitmq-server ready", extra={"port": self.port, "node": self.node, "startup_s": round(self.startup_s, 3)})
        return self

    def _wait_ready(self) -> None:
        """Ready means an AMQP handshake succeeds (the listener opens only once the node has booted)."""
        deadline = time.monotonic() + self.start_timeout_s
        params = pika.URLParameters(self.url + "?connection_attempts=1&socket_timeout=2")
        while True:
            assert self.process is not None
            if (status := self.process.poll()) is not None:
                tail = self._log_tail()
                self._reap()  # (which forgets the process: its status is read first)
                raise ServerStartError(f"private rabbitmq-server (node {self.node}) exited with status {status} while starting; its log says: {tail}")
            try:
                pika.BlockingConnection(params).close()
                return
            except pika.exceptions.AMQPError:
                if time.monotonic() > deadline:
                    tail = self._log_tail()
                    self.stop()
                    raise ServerStartError(
                        f"private rabbitmq-server on port {self.port} not ready after {self.start_timeout_s:g}s; its log says: {tail}"
                    ) from None
                time.sleep(0.1)

    def _log_files(self) -> tuple[Path, Path]:
        return self.data_dir / "log" / "rabbitmq.log", self.data_dir / "console.log"

    def _log_tail(self) -> str:
        """The node's first error lines (the cause comes first; what follows is the crash it set off), else its last line."""
        for path in self._log_files():
            text = ""
            with contextlib.suppress(OSError), open(path, "rb") as fh:
                fh.seek(self._log_from.get(path, 0))
                text = fh.read().decode(errors="replace").strip()
            if not text:
                continue
            errors = [ln.partition("] ")[2].strip() for ln in text.splitlines() if "[error]" in ln or "[critical]" in ln]
            return " | ".join(e for e in errors[:3] if e) if errors else text.splitlines()[-1]
        return "(no log)"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the node (SIGKILL, SIGSTOP, SIGCONT ...)."""
        if self.process is not None and self.process.poll() is None:
            self._signal(sig)
            if sig == signal.SIGKILL:
                self.process.wait()

    def _signal(self, sig: int) -> None:
        # The whole process group: the start script, the Erlang VM and its port helpers.
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def cut_clients(self) -> str:
        from ttg.brokers.rabbitmq import CUT_CLIENTS

        ctl = shutil.which("rabbitmqctl") or "rabbitmqctl"
        # The node's own cookie, in the environment (not argv, which any local user reads in ps): the Debian wrapper
        # runs the CLI as the rabbitmq user, whose HOME holds the system node's cookie, not this one's.
        env = {**os.environ, "RABBITMQ_ERLANG_COOKIE": (self.data_dir / ".erlang.cookie").read_text().strip()}
        argv = [ctl, "-n", self.node, *CUT_CLIENTS]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True, env=env).stdout.strip()

    def restart(self) -> None:
        """Start again on the same ports, node name and data directory (after a kill)."""
        self._reap()
        self.start()

    def _reap(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal(signal.SIGCONT)  # a paused node cannot stop
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait()
        self.process = None

    def stop(self) -> None:
        self._reap()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
