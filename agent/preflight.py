"""Checks of a valid config against this machine: what `run` would fail on, found before it runs.

The config's own pass (agent/config/) checks values and files; this adds what only the machine can
answer: can each listen address be bound, can the data folder be written, do the model packages
load. `config check` runs all of it; `run` runs the checks whose failure would stop it.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.config import Config, ConfigError, Problem
from agent.config.machinery import Positions


@dataclass(frozen=True)
class Finding:
    """One thing the machine refuses: the config key and, in words, why."""

    key: str
    reason: str


def listen_findings(config: Config, *, station_may_run: bool = False) -> Iterator[Finding]:
    """Each listen address that cannot be bound now (in use, no such address, port < 1024).

    `station_may_run`: an address held by a fieldstation that answers /healthz is fine (checking
    the config of the station that is running).
    """
    listeners = (("http.listen", config.http.listen), ("http.lan_listen", config.http.lan_listen))
    for key, listen in listeners:
        if listen:
            reason = bind_problem(listen)
            if reason and station_may_run and key == "http.listen" and station_answers(listen):
                continue
            if reason:
                yield Finding(key, reason)


def station_answers(listen: str) -> bool:
    """True when a fieldstation's /healthz answers at HOST:PORT."""
    import requests

    host, _, port = listen.rpartition(":")
    host = "127.0.0.1" if host in ("0.0.0.0", "[::]", "") else host
    try:
        return requests.get(f"http://{host}:{port}/healthz", timeout=1.5).text == "ok\n"
    except requests.RequestException:
        return False


def bind_problem(listen: str) -> str | None:
    """Why HOST:PORT cannot be bound, in words, or None when it can."""
    host, _, port_text = listen.rpartition(":")
    host, port = host.strip("[]"), int(port_text)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"{listen}: cannot resolve {host!r} ({exc.strerror})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        # the same option uvicorn sets, so a port in TIME_WAIT is not reported as taken
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"{listen} is already in use (another fieldstation or program listens there)"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"{listen}: no network interface here has the address {host}"
            if exc.errno == errno.EACCES:
                return f"{listen}: ports below 1024 need root or CAP_NET_BIND_SERVICE"
            return f"{listen} cannot be bound: {exc.strerror or exc}"
    return None


def data_dir_findings(config: Config) -> Iterator[Finding]:
    """The data folder when it can be neither created nor written by this user."""
    path = Path(config.data_dir)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        yield Finding("station.data_dir", f"{existing} is a file, not a folder")
    elif not os.access(existing, os.W_OK | os.X_OK):
        what = "is" if existing == path else f"cannot be created: {existing}"
        yield Finding("station.data_dir", f"{path} {what} not writable by this user")


def file_findings(config: Config) -> Iterator[Finding]:
    """Named files the config's own pass leaves to the machine (the MQTT CA bundle)."""
    ca = config.mqtt.tls_ca_file
    if config.mqtt.enabled and ca:
        if not Path(ca).is_file():
            yield Finding("mqtt.tls_ca_file", f"{ca} does not exist")
        elif not os.access(ca, os.R_OK):
            yield Finding("mqtt.tls_ca_file", f"{ca} is not readable by this user")


def package_findings(config: Config) -> Iterator[Finding]:
    """The configured detector, classifier and privacy packages that do not load."""
    s = config.inference
    if not s.enabled:
        return
    from agent.inference.card import PackageError
    from agent.inference.package import load_package
    from agent.inference.privacy import load_finders
    from agent.inference.settings import models_dir, resolve_package

    where = models_dir(s, Path(config.data_dir))
    for key, ref in (("inference.detector", s.detector), ("inference.classifier", s.classifier)):
        if not ref:
            continue
        path = resolve_package(ref, where)
        if not path.exists():
            yield Finding(key, f"{ref!r}: no package at {path}")
            continue
        try:
            load_package(path, threads=1, xnnpack=False)
        except PackageError as exc:
            yield Finding(key, str(exc))
    try:
        load_finders(s, where, threads=1, xnnpack=False)
    except PackageError as exc:
        yield Finding("inference.face_models/body_models/person_mask", str(exc))
    except (ImportError, OSError) as exc:
        yield Finding("inference.face_models/body_models/person_mask", str(exc))


def device_notes(config: Config) -> Iterator[Finding]:
    """Serial ports that are absent now: not a fault (a unit may be unplugged; `run` retries and
    raises an alarm), but worth saying when the config is checked."""
    for i, port in enumerate(config.serial.ports):
        if not Path(port).exists() and not port.startswith(("socket://", "rfc2217://")):
            yield Finding(
                f"serial.ports[{i}]",
                f"{port} does not exist now (unit unplugged?); the station retries every "
                f"{config.serial.reopen_s:g} s and shows an alarm meanwhile",
            )


def startup_findings(config: Config, *, station_may_run: bool = False) -> list[Finding]:
    """What would stop `run` at once: listeners, the data folder, named files."""
    return [
        *listen_findings(config, station_may_run=station_may_run),
        *data_dir_findings(config),
        *file_findings(config),
    ]


def as_config_error(config: Config, findings: list[Finding]) -> ConfigError:
    """Findings as a ConfigError that names the file and line of each key, like the config's pass."""
    try:
        text = Path(config.source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""
    positions = Positions(text)
    problems = []
    for f in findings:
        var = "FIELDSTATION_" + f.key.replace(".", "_").upper()
        if var in os.environ:  # the value came from the environment, not the file
            problems.append(Problem(f.key, None, f.reason, var))
        else:
            problems.append(Problem(f.key, positions.line(f.key), f.reason))
    return ConfigError(config.source, problems)
