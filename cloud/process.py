"""A real `fieldstation-cloud serve` child process on a free loopback port (the demo, tests, benches).

with CloudService.start(tmp_path / "cloud") as cloud:
    token = cloud.add_station("st-1")
    requests.get(cloud.url + "/v1/ping")
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from agent.broker import free_port


def run_cli(*args: str, data_dir: Path | str, env: dict[str, str] | None = None) -> str:
    """Run `fieldstation-cloud --data-dir D ARGS...` and return its stdout (raise on failure)."""
    done = subprocess.run(
        [sys.executable, "-m", "cloud", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"fieldstation-cloud {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


class CloudService:
    """A `fieldstation-cloud serve` subprocess; stop() sends SIGTERM and waits."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        data_dir: Path,
        port: int,
        env: dict[str, str],
        log: Path,
    ) -> None:
        self.process = process
        self.data_dir = data_dir
        self.port = port
        self.env = env
        self.log = log
        self.url = f"http://127.0.0.1:{port}"

    @classmethod
    def start(
        cls,
        data_dir: Path | str | None = None,
        env: dict[str, str] | None = None,
        config: Path | str | None = None,
        timeout: float = 30.0,
    ) -> CloudService:
        """Start the service (SQLite + local files in `data_dir` unless config/env say otherwise)."""
        data = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="fscloud-"))
        data.mkdir(parents=True, exist_ok=True)
        port = free_port()
        args = [sys.executable, "-m", "cloud", "serve", "--data-dir", str(data)]
        args += ["--listen", f"127.0.0.1:{port}"]
        if config is not None:
            args += ["--config", str(config)]
        full_env = {**os.environ, **(env or {})}
        log = data / "serve.log"
        with log.open("ab") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=full_env)
        service = cls(process, data, port, env or {}, log)
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"fieldstation-cloud serve exited: {log.read_text(errors='replace')}"
                )
            try:
                with urllib.request.urlopen(service.url + "/v1/ping", timeout=2) as response:
                    if response.status == 200:
                        return service
            except OSError:
                pass
            if time.monotonic() > deadline:
                service.stop()
                raise RuntimeError(
                    f"fieldstation-cloud serve did not answer: {log.read_text(errors='replace')}"
                )
            time.sleep(0.05)

    def add_station(self, station_id: str, location: str | None = None) -> str:
        """Create a station (if new) and return a fresh bearer token for it."""
        args = ["stations", "add", station_id, "--quiet"]
        if location:
            args += ["--location", location]
        return run_cli(*args, data_dir=self.data_dir, env=self.env).strip()

    def admin_token(self) -> str:
        """A new operator token (earlier ones are revoked)."""
        return run_cli("admin-token", "--quiet", data_dir=self.data_dir, env=self.env).strip()

    def cli(self, *args: str) -> str:
        """Run `fieldstation-cloud ARGS...` against this service's data dir; return its stdout."""
        return run_cli(*args, data_dir=self.data_dir, env=self.env)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait for a clean exit (kill after `timeout`); return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def __enter__(self) -> CloudService:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
