"""The station's one configuration object: TOML file, defaults for every key, env overrides.

Each section is a frozen dataclass; a field's metadata may carry `min`, `max`, `choices` and `help`.
Validation runs in one pass before anything starts and reports every problem with its key, the line
in the file and the reason (ESPHome's habit), e.g. `station.toml:12: mqtt.port: 70000 is above 65535`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path("/etc/fieldstation/station.toml")
ENV_PREFIX = "FIELDSTATION_"
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1 << 20,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1 << 30,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1 << 40,
}


class ByteSize(int):
    """An int that may be written in the file as "4 MiB" or "512kB"."""


def opt(default: Any, *, help: str, **checks: Any) -> Any:
    """A config field with its default, a one-line help text and its checks (min, max, choices)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **checks})
    return field(default=default, metadata={"help": help, **checks})


@dataclass(frozen=True)
class StationSection:
    id: str = opt(
        "",
        help="station id used in MQTT topics and by the cloud; default: the host name",
        pattern=r"^$|^[a-z0-9][a-z0-9_-]{0,62}$",
    )
    name: str = opt("", help="human name shown in status")
    data_dir: str = opt(
        "", help="buffer and state folder; default $STATE_DIRECTORY or ./fieldstation-data"
    )


@dataclass(frozen=True)
class StorageSection:
    quota_bytes: ByteSize = opt(
        ByteSize(8 << 30), help="image bytes the buffer may hold before evicting", min=1 << 20
    )
    min_free_bytes: ByteSize = opt(
        ByteSize(256 << 20), help="disk space always left free; below it new captures get NAK"
    )
    check_on_start: bool = opt(True, help="run PRAGMA quick_check when the daemon starts")
    evict_interval_s: float = opt(60.0, help="how often the quota is enforced", min=1, max=3600)


@dataclass(frozen=True)
class IngestSection:
    max_capture_bytes: ByteSize = opt(
        ByteSize(4 << 20), help="largest JPEG accepted", min=1024, max=64 << 20
    )
    max_chunk_bytes: int = opt(16384, help="largest chunk_size a unit may use", min=64, max=65000)
    max_frame_payload: int = opt(
        16400, help="serial frames with a longer length field count as noise", min=128, max=65535
    )
    capture_timeout_s: float = opt(
        30.0, help="incomplete captures are discarded after this long", min=1, max=3600
    )
    max_open_captures: int = opt(8, help="concurrent incomplete captures per unit", min=1, max=256)


@dataclass(frozen=True)
class SerialSection:
    ports: list[str] = opt(
        [], help="serial ports with units on them, e.g. /dev/serial/by-id/usb-…-if00"
    )
    baudrate: int = opt(921600, help="UART speed (ignored by USB CDC)", min=1200, max=5_000_000)
    reopen_s: float = opt(2.0, help="wait before reopening a port that went away", min=0.1, max=300)


@dataclass(frozen=True)
class MqttSection:
    enabled: bool = opt(False, help="connect to an MQTT broker for Wi-Fi units")
    host: str = opt("127.0.0.1", help="broker host")
    port: int = opt(1883, help="broker port", min=1, max=65535)
    protocol: str = opt("5", help="MQTT protocol version", choices=["3.1.1", "5"])
    client_id: str = opt("", help="default: fieldstation-<station id>")
    username: str = opt("", help="broker user name")
    password_file: str = opt("", help="file holding the broker password")
    keepalive_s: int = opt(60, help="MQTT keepalive", min=5, max=3600)
    topic_root: str = opt("wildcam", help="first level of every topic", pattern=r"^[^+#/]+$")
    session_expiry_s: int = opt(
        7 * 86400, help="MQTT 5 session expiry, so queued captures survive a restart", min=0
    )
    tls_ca_file: str = opt("", help="CA bundle; set to use TLS")
    reconnect_max_s: float = opt(60.0, help="longest wait between reconnects", min=1, max=3600)


@dataclass(frozen=True)
class HttpSection:
    listen: str = opt(
        "127.0.0.1:8080",
        help="main listener: health, metrics, status and intake",
        pattern=r"^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$",
    )
    lan_listen: str = opt(
        "",
        help="optional second listener serving only the intake routes, e.g. 0.0.0.0:8081",
        pattern=r"^$|^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$",
    )
    token: str = opt("", help="when set, intake requests need Authorization: Bearer <token>")
    token_file: str = opt("", help="file holding the intake token (wins over token)")
    max_body_bytes: ByteSize = opt(
        ByteSize(5 << 20), help="largest intake request body", min=1024, max=128 << 20
    )


@dataclass(frozen=True)
class LogSection:
    level: str = opt("info", help="log level", choices=["debug", "info", "warning", "error"])


# Component sections import `opt` and `ByteSize` from here, so they are imported after those.
from agent.inference.settings import InferenceSection  # noqa: E402
from agent.upload.settings import UploadSection  # noqa: E402

# Section name -> dataclass. Later components add theirs here.
SECTIONS: dict[str, type] = {
    "station": StationSection,
    "storage": StorageSection,
    "ingest": IngestSection,
    "serial": SerialSection,
    "mqtt": MqttSection,
    "http": HttpSection,
    "log": LogSection,
    "inference": InferenceSection,
    "upload": UploadSection,
}


@dataclass(frozen=True)
class Problem:
    key: str
    line: int | None
    reason: str

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {self.key}: {self.reason}"


class ConfigError(ValueError):
    """A configuration that must not be run; lists every problem found."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.render(source) for p in problems))


class ComponentConfigError(ValueError):
    """A component refused its validated settings at start (e.g. a token file is missing)."""


class Config:
    """Every section, validated. Attribute access by section name: `config.mqtt.port`."""

    def __init__(self, sections: dict[str, Any], source: str) -> None:
        self._sections = sections
        self.source = source

    def __getattr__(self, name: str) -> Any:
        try:
            return self._sections[name]
        except KeyError:
            raise AttributeError(name) from None

    def replace(self, section: str, **changes: Any) -> Config:
        """A copy with some keys changed (command-line overrides such as --data-dir)."""
        sections = dict(self._sections)
        sections[section] = dataclasses.replace(sections[section], **changes)
        return Config(sections, self.source)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: _section_dict(sec) for name, sec in self._sections.items()}

    @property
    def station_id(self) -> str:
        return self.station.id or _default_station_id()

    @property
    def data_dir(self) -> Path:
        if self.station.data_dir:
            return Path(self.station.data_dir)
        state = os.environ.get("STATE_DIRECTORY")
        if state:
            # systemd may pass several colon-separated dirs; the first is ours
            return Path(state.split(":")[0])
        return Path("fieldstation-data")


def _section_dict(sec: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(sec):
        value = getattr(sec, f.name)
        if dataclasses.is_dataclass(value):
            value = _section_dict(value)
        elif isinstance(value, list):
            value = [_section_dict(v) if dataclasses.is_dataclass(v) else v for v in value]
        out[f.name] = value
    return out


def _default_station_id() -> str:
    host = socket.gethostname().split(".")[0].lower()
    host = re.sub(r"[^a-z0-9_-]", "-", host).strip("-") or "station"
    return host[:63]


# --- loading -------------------------------------------------------------------------------------


def load_config(
    path: Path | str | None = None,
    *,
    env: dict[str, str] | None = None,
    required: bool = False,
) -> Config:
    """Read and validate a config file plus FIELDSTATION_<SECTION>_<KEY> variables.

    With no path, the default path is read if it exists, and defaults are used if not; `required`
    makes a missing file an error (for `config check`).
    """
    env = dict(os.environ) if env is None else env
    path = DEFAULT_PATH if path is None else Path(path)
    if not path.exists():
        # the default path may be absent (every key has a default); a named file may not
        if required or path != DEFAULT_PATH:
            raise ConfigError(str(path), [Problem("(file)", None, "file does not exist")])
        return _build({}, "", "<defaults>", env)
    text = path.read_text(encoding="utf-8")
    return parse_config(text, str(path), env)


def parse_config(text: str, source: str = "<string>", env: dict[str, str] | None = None) -> Config:
    env = {} if env is None else env
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = int(match.group(1)) if match else None
        raise ConfigError(source, [Problem("(syntax)", line, f"not valid TOML: {exc}")]) from None
    return _build(data, text, source, env)


def _build(data: dict[str, Any], text: str, source: str, env: dict[str, str]) -> Config:
    lines = _KeyLines(text)
    problems: list[Problem] = []
    sections: dict[str, Any] = {}
    for name in data:
        if name not in SECTIONS:
            problems.append(
                Problem(
                    name,
                    lines.find(name, None),
                    f"unknown section [{name}]; known: {', '.join(SECTIONS)}",
                )
            )
    overrides = _env_overrides(env, problems)
    for name, cls in SECTIONS.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            problems.append(Problem(name, lines.find(name, None), "must be a table [section]"))
            raw = {}
        raw = {**raw, **overrides.get(name, {})}
        sections[name] = _build_section(name, cls, raw, lines, problems)
    if problems:
        raise ConfigError(source, problems)
    return Config(sections, source)


def _env_overrides(env: dict[str, str], problems: list[Problem]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        for name, cls in SECTIONS.items():
            if rest.startswith(name + "_"):
                key = rest[len(name) + 1 :]
                fields = {f.name: f for f in dataclasses.fields(cls)}
                if key not in fields:
                    problems.append(Problem(f"{name}.{key}", None, f"unknown key (from ${var})"))
                else:
                    out.setdefault(name, {})[key] = _EnvValue(value, var)
                break
    return out


class _EnvValue(str):
    """A string from the environment, converted to the field's type when checked."""

    def __new__(cls, value: str, var: str) -> _EnvValue:
        obj = super().__new__(cls, value)
        obj.var = var  # type: ignore[attr-defined]
        return obj


def _build_section(
    name: str, cls: type, raw: dict[str, Any], lines: _KeyLines, problems: list[Problem]
) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{name}.{key}"
        line = lines.find(name, key)
        if key not in fields:
            problems.append(
                Problem(full, line, f"unknown key; [{name}] takes: {', '.join(fields)}")
            )
            continue
        try:
            values[key] = _check(hints[key], fields[key], value, full, lines, problems)
        except ValueError as exc:
            src = f" (from ${value.var})" if isinstance(value, _EnvValue) else ""
            problems.append(Problem(full, line, f"{exc}{src}"))
    try:
        return cls(**values)
    except TypeError as exc:
        problems.append(Problem(name, lines.find(name, None), str(exc)))
        return cls()


def _check(
    hint: Any,
    f: dataclasses.Field,
    value: Any,
    full: str,
    lines: _KeyLines,
    problems: list[Problem],
) -> Any:
    meta = f.metadata
    value = _convert(hint, value, full, lines, problems)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "min" in meta and value < meta["min"]:
            raise ValueError(f"{value} is below the minimum {meta['min']}")
        if "max" in meta and value > meta["max"]:
            raise ValueError(f"{value} is above the maximum {meta['max']}")
    if "choices" in meta and value not in meta["choices"]:
        raise ValueError(f"{value!r} is not one of {', '.join(map(str, meta['choices']))}")
    if "pattern" in meta and isinstance(value, str) and not re.match(meta["pattern"], value):
        raise ValueError(f"{value!r} is not of the form {meta['pattern']}")
    return value


def _convert(hint: Any, value: Any, full: str, lines: _KeyLines, problems: list[Problem]) -> Any:
    from_env = isinstance(value, _EnvValue)
    origin = typing.get_origin(hint)
    if hint is bool:
        if from_env:
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{value!r} is not a boolean (true/false)")
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {_tname(value)}")
        return value
    if hint is ByteSize:
        return ByteSize(_parse_size(value))
    if hint is int:
        if from_env:
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an integer") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, got {_tname(value)}")
        return value
    if hint is float:
        if from_env:
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number, got {_tname(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {_tname(value)}")
        return str(value)
    if origin is list:
        (item,) = typing.get_args(hint)
        if from_env:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ValueError(f"must be a list, got {_tname(value)}")
        if dataclasses.is_dataclass(item):
            out = []
            for i, entry in enumerate(value):
                if not isinstance(entry, dict):
                    raise ValueError(f"entry {i} must be a table, got {_tname(entry)}")
                sub_problems: list[Problem] = []
                built = _build_section(f"{full}[{i}]", item, entry, lines, sub_problems)
                problems.extend(sub_problems)
                out.append(built)
            return out
        return [_convert(item, v, full, lines, problems) for v in value]
    if isinstance(hint, types.UnionType) or origin is typing.Union:
        raise ValueError("union fields are not supported")  # keep sections simple
    if isinstance(hint, type) and issubclass(hint, str):
        return hint(value)
    raise ValueError(f"unsupported field type {hint!r}")


def _parse_size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError('must be a size in bytes, e.g. 4194304 or "4 MiB", got a boolean')
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            unit = m.group(2).lower()
            if unit in _SIZE_UNITS:
                return int(float(m.group(1)) * _SIZE_UNITS[unit])
        raise ValueError(f'{value!r} is not a size such as 4194304, "512 KiB" or "8 GiB"')
    raise ValueError(f"must be a size in bytes, got {_tname(value)}")


def _tname(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


class _KeyLines:
    """Finds the line a key was written on, since tomllib does not keep positions."""

    _TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-\.\"']+)\s*=")

    def __init__(self, text: str) -> None:
        self.index: dict[tuple[str, str | None], int] = {}
        table = ""
        for number, line in enumerate(text.splitlines(), start=1):
            m = self._TABLE.match(line)
            if m:
                table = m.group(1).replace('"', "").replace("'", "")
                self.index.setdefault((table.split(".")[0], None), number)
                continue
            m = self._KEY.match(line)
            if m:
                key = m.group(1).replace('"', "").replace("'", "")
                full = f"{table}.{key}" if table else key
                section, _, rest = full.partition(".")
                self.index.setdefault((section, rest or None), number)
                # dotted top-level keys such as `mqtt.port = 1` also name their section
                self.index.setdefault((section, None), number)

    def find(self, section: str, key: str | None) -> int | None:
        section = section.split("[")[0]
        if key is not None and (section, key) in self.index:
            return self.index[(section, key)]
        if key is not None:
            for (sec, k), line in self.index.items():
                if sec == section and k and k.endswith("." + key):
                    return line
        return self.index.get((section, None))


def example_config() -> str:
    """The full default config as commented TOML (the README's reference is made from it)."""
    out = ["# fieldstation configuration: every key shown with its default"]
    for name, cls in SECTIONS.items():
        out.append(f"\n[{name}]")
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out.append(f"# {f.metadata.get('help', '')}")
            out.append(f"{f.name} = {_toml_value(default)}")
    return "\n".join(out) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        if value and dataclasses.is_dataclass(value[0]):
            return "[]"
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
