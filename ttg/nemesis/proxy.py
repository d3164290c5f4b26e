"""A small fault-injecting TCP proxy between workers and the broker (Toxiproxy's vocabulary, no server to run).

Modes: ``pass`` forwards; ``blackhole`` stops forwarding in both directions and
holds new connections, so peers see a silent network (timeouts, missed
heartbeats) rather than an error; ``reset`` closes every connection at once;
``deny_new`` holds new connections only and lets established ones flow, as a
NetworkPolicy does (implementations evaluate policy on new connections).
``latency_s`` delays every forwarded piece. The local runtime puts it in front
of a private broker when a run asks for partition or latency faults; the
coordinator keeps its direct connection, as in a partition of the workers.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import threading
import time

import port_for

log = logging.getLogger(__name__)
_BUF = 1 << 16


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = port_for.select_random()
        self.latency_s = 0.0
        self._open = threading.Event()  # set = forwarding; clear = blackholed
        self._open.set()
        self._admit = threading.Event()  # set = new connections go through; clear = held, as a deny policy drops them
        self._admit.set()
        self.denied = 0  # connection attempts held by deny_new: the reconnects a policy refused
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._thread = threading.Thread(target=self._accept_loop, name="ttg-proxy", daemon=True)
        self._thread.start()
        self.held_while_blackholed = 0  # pieces the blackhole kept from the other side: proof it cut traffic
        self.held_now = 0  # pieces held by the blackhole at this moment (one per stalled direction)
        self.delayed = 0  # pieces the latency fault delayed: proof it slowed traffic
        # Faults overlap (two partitions, a partition of one worker inside one of all): each is counted, and the
        # proxy forwards again only when the last one heals, so every fault keeps its own window.
        self._holes = 0
        self._latencies: list[float] = []

    def url_for(self, url: str) -> str:
        """``url`` with its host and port replaced by the proxy's."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(url)
        auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit((parts.scheme, f"{auth}127.0.0.1:{self.port}", parts.path, parts.query, parts.fragment))

    # -- modes ----------------------------------------------------------------
    def blackhole(self) -> None:
        with self._lock:
            self._holes += 1
            self._open.clear()

    def unblackhole(self) -> None:
        """End one blackhole; traffic flows again once none is left."""
        with self._lock:
            self._holes = max(0, self._holes - 1)
            if not self._holes:
                self._open.set()

    def deny_new(self) -> None:
        """Hold every new connection until :meth:`admit_new`; established connections keep flowing."""
        self._admit.clear()

    def admit_new(self) -> None:
        self._admit.set()

    def add_latency(self, latency_s: float) -> None:
        with self._lock:
            self._latencies.append(latency_s)
            self.latency_s = max(self._latencies)

    def remove_latency(self, latency_s: float) -> None:
        with self._lock:
            if latency_s in self._latencies:
                self._latencies.remove(latency_s)
            self.latency_s = max(self._latencies, default=0.0)

    def reset(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for s in conns:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
                s.close()

    def restore(self) -> None:
        """Forward everything at once, whatever faults are on (the end of a run)."""
        with self._lock:
            self._holes = 0
            self._latencies.clear()
            self.latency_s = 0.0
            self._open.set()
            self._admit.set()

    def close(self) -> None:
        self._stop.set()
        self._open.set()
        self._admit.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.reset()
        self._thread.join(timeout=2)

    # -- forwarding -----------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._listener], [], [], 0.2)
                if not ready:
                    continue
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _hold_while_blackholed(self) -> None:
        """Wait while a blackhole is on, counting what is held: the partition's evidence."""
        if self._open.is_set():
            return
        with self._lock:
            self.held_while_blackholed += 1
            self.held_now += 1
        self._open.wait()
        with self._lock:
            self.held_now -= 1

    def _serve(self, client: socket.socket) -> None:
        if not self._admit.is_set():
            with self._lock:
                self.denied += 1
            self._admit.wait()
        self._hold_while_blackholed()  # a blackholed network connects nowhere: a connection attempt held is traffic held
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._conns.update((client, upstream))
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([src], [], [], 0.2)
                if not ready:
                    continue
                data = src.recv(_BUF)
                if not data:
                    break
                self._hold_while_blackholed()
                if self.latency_s:
                    self.delayed += 1
                    time.sleep(self.latency_s)
                dst.sendall(data)
        except (OSError, ValueError):  # ValueError: reset() closed the socket under us (fd -1)
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._lock:
                self._conns.difference_update((src, dst))
