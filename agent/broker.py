"""A private Mosquitto broker on a free loopback port (the demo and the tests use it)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the one copy: station, cloud starter and tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateBroker:
    """`mosquitto` bound to 127.0.0.1 only, no persistence beyond its temp folder."""

    def __init__(
        self, port: int | None = None, *, persistence: bool = False, listener: Sequence[str] = ()
    ) -> None:
        binary = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if binary is None:
            raise FileNotFoundError(
                "mosquitto is not installed: apt-get install mosquitto (Debian package 'mosquitto')"
            )
        self.binary = binary
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.persistence = persistence
        self.listener = list(listener)  # the listener's own lines: TLS files, a password file
        self.dir = Path(tempfile.mkdtemp(prefix="fieldstation-mosquitto-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateBroker:
        conf = self.dir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            *self.listener,
            # a password file means that only its users may connect
            f"allow_anonymous {'false' if any('password_file' in x for x in self.listener) else 'true'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.dir}/",
            "max_inflight_messages 64",
            "set_tcp_nodelay true",  # small ACK frames must not wait for Nagle (40 ms each)
            "max_queued_messages 10000",
            "message_size_limit 0",
            "log_type error",
            "log_type warning",
        ]
        conf.write_text("\n".join(lines) + "\n")
        with open(self.dir / "mosquitto.log", "wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self.proc.returncode}: "
                    + (self.dir / "mosquitto.log").read_text(errors="replace")[-500:]
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port} within 10 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivateBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
