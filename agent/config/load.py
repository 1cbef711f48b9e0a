"""The station's `Config`: every section as a typed attribute, loaded and validated in one pass."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config.machinery import (
    ConfigError,
    Problem,
    build,
    example_toml,
    parse_toml,
    section,
    section_dict,
    section_fields,
)
from agent.config.station import (
    HttpSection,
    IngestSection,
    LogSection,
    MqttSection,
    SerialSection,
    StationSection,
    StorageSection,
)
from agent.inference.settings import InferenceSection
from agent.modelsync.settings import ModelSyncSection
from agent.power.settings import PowerSection
from agent.upload.settings import UploadSection
from agent.web.settings import WebSection

DEFAULT_PATH = Path("/etc/fieldstation/station.toml")
ENV_PREFIX = "FIELDSTATION_"


@dataclass(frozen=True)
class Config:
    """Every section, validated: `config.mqtt.port` is an int. A new section is one line here."""

    station: StationSection = section(StationSection)
    storage: StorageSection = section(StorageSection)
    ingest: IngestSection = section(IngestSection)
    serial: SerialSection = section(SerialSection)
    mqtt: MqttSection = section(MqttSection)
    http: HttpSection = section(HttpSection)
    log: LogSection = section(LogSection)
    inference: InferenceSection = section(InferenceSection)
    upload: UploadSection = section(UploadSection)
    modelsync: ModelSyncSection = section(ModelSyncSection)
    power: PowerSection = section(PowerSection)
    web: WebSection = section(WebSection)
    source: str = "<defaults>"

    def replace(self, section: str, **changes: Any) -> Config:
        """A copy with some keys changed (command-line overrides such as --data-dir)."""
        changed = dataclasses.replace(getattr(self, section), **changes)
        return dataclasses.replace(self, **{section: changed})

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: section_dict(getattr(self, name)) for name in SECTIONS}

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


# Section name -> section dataclass, read off Config's attributes.
SECTIONS: dict[str, type] = section_fields(Config)


def _default_station_id() -> str:
    host = socket.gethostname().split(".")[0].lower()
    host = re.sub(r"[^a-z0-9_-]", "-", host).strip("-") or "station"
    return host[:63]


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
        return build(Config, {}, "", "<defaults>", env, ENV_PREFIX)
    text = path.read_text(encoding="utf-8")
    return parse_config(text, str(path), env)


def parse_config(text: str, source: str = "<string>", env: dict[str, str] | None = None) -> Config:
    """Validate config text (named `source` in errors) plus the given environment overrides."""
    data = parse_toml(text, source)
    env = {} if env is None else env
    return build(Config, data, text, source, env, ENV_PREFIX, extra={"source": source})


def example_config() -> str:
    """The full default config as commented TOML (the README's reference is made from it)."""
    return example_toml(SECTIONS, "fieldstation configuration: every key shown with its default")
