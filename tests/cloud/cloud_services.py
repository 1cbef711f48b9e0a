"""Real backing services for the cloud tests, each started on a free loopback port.

A service that cannot start fails the test with the package to install (never a silent skip);
`.ci/setup.d/cloud.sh` installs them all.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from cloud.app import create_app
from cloud.config import CloudConfig
from cloud.service import Service
from tests.helpers import free_port

AZURITE_DIR = Path(
    os.environ.get(
        "FIELDSTATION_AZURITE_DIR", Path.home() / ".cache" / "fieldstation-ci" / "azurite"
    )
)
# Azurite's published development account (documented, not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def wait_for_port(
    port: int, process: subprocess.Popen[bytes] | None, what: str, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"{what} exited with code {process.returncode} before listening")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s")


# -- PostgreSQL -------------------------------------------------------------------------------


@dataclass
class Postgres:
    port: int
    bindir: Path
    datadir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def _pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
            "install Debian's `postgresql` package (bash .ci/setup.d/cloud.sh)"
        )
    return Path(found[-1]).parent


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail("psycopg 3 missing: pip install -e '.[test,cloud]' (psycopg[binary])")
    bindir = _pg_bindir()
    root = Path(tempfile.mkdtemp(prefix="fs-pg-"))
    datadir, sockdir = root / "data", root / "sock"
    sockdir.mkdir()
    # PostgreSQL refuses to run as root: run it as the `postgres` system user the package creates.
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockdir, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    log = root / "postgres.log"

    def run(*args: str) -> None:
        done = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            pytest.fail(f"{args[0]} failed: {done.stdout}{done.stderr}")

    run(
        str(bindir / "initdb"),
        "-D",
        str(datadir),
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--no-sync",
    )
    options = (
        f"-p {port} -k {sockdir} -c listen_addresses=127.0.0.1 "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    if as_user:
        shutil.chown(root, "postgres")
    run(
        str(bindir / "pg_ctl"),
        "-D",
        str(datadir),
        "-l",
        str(log),
        "-o",
        options,
        "-w",
        "-t",
        "60",
        "start",
    )
    try:
        yield Postgres(port, bindir, datadir)
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


# -- object store emulators --------------------------------------------------------------------


@contextmanager
def moto_s3() -> Iterator[str]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        pytest.fail("moto's S3 server missing: pip install 'moto[server]' (the test extra)")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_for_port(port, None, "moto S3 server")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def azurite_binary() -> Path:
    for candidate in (
        AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob",
        Path(shutil.which("azurite-blob") or "/nonexistent"),
    ):
        if candidate.exists():
            return candidate
    pytest.fail(
        f"Azurite not found in {AZURITE_DIR}: install the npm package `azurite` "
        f"(npm install --prefix {AZURITE_DIR} azurite, or bash .ci/setup.d/cloud.sh)"
    )


@contextmanager
def azurite() -> Iterator[str]:
    binary = azurite_binary()
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="fs-azurite-"))
    process = subprocess.Popen(
        [
            str(binary),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--silent",
        ],
        cwd=workdir,  # Azurite writes its debug/extent files relative to the working directory
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process, "Azurite (npm package azurite)")
        yield (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
        )
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def gcs_emulator() -> Iterator[str]:
    try:
        from gcp_storage_emulator.server import create_server
    except ImportError:
        pytest.fail(
            "gcp-storage-emulator missing: pip install gcp-storage-emulator (the test extra)"
        )
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    wait_for_port(port, None, "gcp-storage-emulator")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


# -- the service itself, in this process on a real loopback socket ------------------------------


class LiveServer:
    """uvicorn serving `create_app` in a thread; `service` is the same object the app uses."""

    def __init__(self, config: CloudConfig, service: Service | None = None) -> None:
        self.config = config
        self.service = service or Service.open(config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(config, self.service),
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="on",
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("in-process uvicorn did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.service.close()
