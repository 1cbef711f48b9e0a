"""The station's configuration: one TOML file, a default for every key, env overrides, and one
validation pass that names the file:line (or variable), the key path and the reason for every problem,
e.g. `station.toml:12: mqtt.port: 70000 is above the maximum 65535`.

- `machinery`: `opt`, `ByteSize`, `Problem`, `ConfigError`, `read_secret`, conversion, key lines;
  imports nothing from the station, so any component's section can import it.
- `station`: the station's own sections; components keep theirs beside their code
  (`agent/upload/settings.py`, `agent/inference/settings.py`).
- `load`: `Config` (one typed attribute per section), `load_config`, `parse_config`.

To add a section: write a frozen dataclass of `opt(...)` fields in your component
(`agent/power/settings.py`, importing from `agent.config.machinery`), then add one line to `Config`
in `load.py`: `power: PowerSection = section(PowerSection)`. Rules across keys go in a
`check(self)` method yielding (key, reason); they run in the same pass and get lines too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.config.machinery import (
    ByteSize,
    ComponentConfigError,
    ConfigError,
    Problem,
    SecretError,
    opt,
    read_secret,
    section,
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

if TYPE_CHECKING:
    from agent.config.load import (
        DEFAULT_PATH,
        ENV_PREFIX,
        SECTIONS,
        Config,
        example_config,
        load_config,
        parse_config,
    )

# The composition imports every component's section, and those import the machinery above, so it
# is loaded on first use: importing `agent.config` for `opt` never pulls in the components.
_LAZY = {
    "Config",
    "load_config",
    "parse_config",
    "example_config",
    "SECTIONS",
    "DEFAULT_PATH",
    "ENV_PREFIX",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        from agent.config import load

        return getattr(load, name)
    raise AttributeError(f"module 'agent.config' has no attribute {name!r}")


__all__ = [
    "ByteSize",
    "ComponentConfigError",
    "Config",
    "ConfigError",
    "DEFAULT_PATH",
    "ENV_PREFIX",
    "HttpSection",
    "IngestSection",
    "LogSection",
    "MqttSection",
    "Problem",
    "SECTIONS",
    "SecretError",
    "SerialSection",
    "StationSection",
    "StorageSection",
    "example_config",
    "load_config",
    "opt",
    "parse_config",
    "read_secret",
    "section",
]
