"""A loopback TCP proxy between the station and one cloud that can break the link on purpose.

Modes: pass; delay (each chunk held `delay_s`); blackhole (accept, swallow, never answer);
reset (accept, then RST); drop_response (the request reaches the cloud, the answer never comes
back: a batch in doubt); error500 (the request reaches the cloud, the station gets a 500, as from
a failing gateway); down (listener closed: connection refused).

A field link (`shape`) adds, in every mode that passes bytes: one-way latency per chunk, a
bandwidth cap shared by all connections in each direction, and random connection drops (RST of
every open connection) at seeded exponential intervals — a satellite or 2G link on loopback,
since this kernel has no netem.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from dataclasses import dataclass

MODES = ("pass", "delay", "blackhole", "reset", "drop_response", "error500", "down")
ERROR_500 = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
    b'Content-Length: 28\r\nConnection: close\r\n\r\n{"detail":"gateway failure"}'
)


@dataclass(frozen=True)
class FieldLink:
    """What a slow, lossy uplink looks like: round trip, rate, mean time between drops."""

    rtt_s: float = 0.6
    bits_per_s: float = 64_000.0
    drop_every_s: float = 180.0  # mean; 0 = never
    seed: int = 0


class _Pacer:
    """One direction of a capped link: a chunk may leave once the link has sent the ones before."""

    def __init__(self) -> None:
        self.free_at = 0.0
        self.lock = threading.Lock()

    def wait(self, n: int, bytes_per_s: float) -> None:
        with self.lock:
            now = time.monotonic()
            self.free_at = max(now, self.free_at) + n / bytes_per_s
            until = self.free_at
        time.sleep(max(0.0, until - time.monotonic()))


class LinkProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.mode = "pass"
        self.delay_s = 0.0
        self.requests = 0  # connections accepted (for tests that want to see traffic)
        self.drops = 0  # connections cut by the field link's random drops
        self.bytes_up = 0  # station -> cloud bytes passed
        self.field: FieldLink | None = None
        self._pacers = (_Pacer(), _Pacer())  # up, down
        self._drop_stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._closed = False
        self._listener: socket.socket | None = None
        self.port = 0
        self._listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _listen(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def set(self, mode: str, *, delay_s: float = 0.0, cut: bool = True) -> None:
        """Change the link; `cut` also kills open connections so keep-alive cannot dodge it."""
        assert mode in MODES, mode
        with self._lock:
            old = self.mode
            self.mode, self.delay_s = mode, delay_s
            if mode == "down" and self._listener is not None:
                self._listener.close()
                self._listener = None
        if cut:
            self.cut()
        if old == "down" and mode != "down":
            self._listen()

    def shape(self, field: FieldLink | None) -> None:
        """Make this a field link (None: a plain one again); drops run on their own thread."""
        self._drop_stop.set()
        self.field = field
        if field is not None and field.drop_every_s > 0:
            self._drop_stop = threading.Event()
            threading.Thread(
                target=self._drop_loop, args=(field, self._drop_stop), daemon=True
            ).start()

    def _drop_loop(self, field: FieldLink, stop: threading.Event) -> None:
        rnd = random.Random(field.seed)
        while not stop.wait(rnd.expovariate(1.0 / field.drop_every_s)):
            if self._closed:
                return
            self.drops += 1
            self.cut()

    def retarget(self, port: int, host: str | None = None) -> None:
        self.target_port = port
        if host is not None:
            self.target_host = host
        self.cut()

    def cut(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for c in conns:
            _rst(c)

    def close(self) -> None:
        self._closed = True
        self._drop_stop.set()
        self.set("down")

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self.requests += 1
            mode = self.mode
            if mode == "reset":
                _rst(client)
                continue
            with self._lock:
                self._conns.add(client)
            threading.Thread(target=self._serve, args=(client, mode), daemon=True).start()

    def _serve(self, client: socket.socket, mode: str) -> None:
        if mode == "blackhole":
            self._swallow(client)
            return
        field = self.field
        if field is not None:
            time.sleep(field.rtt_s)  # the TCP handshake costs a round trip on the real link
        try:
            upstream = socket.create_connection((self.target_host, self.target_port), timeout=5)
            upstream.settimeout(None)
        except OSError:
            _rst(client)
            return
        with self._lock:
            self._conns.add(upstream)
        threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
        self._pump(upstream, client, True)

    def _swallow(self, client: socket.socket) -> None:
        try:
            while client.recv(65536):
                pass
        except OSError:
            pass

    def _pump(self, src: socket.socket, dst: socket.socket, answer: bool) -> None:
        try:
            while True:
                field = self.field
                # small reads on a capped link, so one big body cannot jump the queue
                data = src.recv(4096 if field is not None else 65536)
                if not data:
                    break
                mode = self.mode
                if mode == "delay":
                    time.sleep(self.delay_s)
                elif mode == "blackhole":
                    continue
                elif mode == "drop_response" and answer:
                    break  # the cloud answered; the station never hears it
                elif mode == "error500" and answer:
                    dst.sendall(ERROR_500)
                    break
                elif mode in ("reset", "down"):
                    break
                if field is not None:
                    # a chunk arrives one way later; the cap queues it behind earlier chunks
                    time.sleep(field.rtt_s / 2)
                    self._pacers[1 if answer else 0].wait(len(data), field.bits_per_s / 8)
                if not answer:
                    self.bytes_up += len(data)
                dst.sendall(data)
        except OSError:
            pass
        _rst(src)
        _rst(dst)


def _rst(s: socket.socket) -> None:
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv on it
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
