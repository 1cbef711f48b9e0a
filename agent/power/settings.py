"""The `[power]` config section: sources, thresholds with hysteresis, policy per state, shutdown."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

from agent.config.machinery import opt
from agent.upload.settings import Window

STATES = ("normal", "eco", "critical")
SOURCE_KINDS = ("sysfs", "hwmon", "vedirect", "psutil")
CHEMISTRIES = ("lifepo4", "li-ion", "lead-acid")


@dataclass(frozen=True)
class SourceConfig:
    kind: str = opt("sysfs", help="sysfs, hwmon, vedirect or psutil", choices=list(SOURCE_KINDS))
    name: str = opt(
        "",
        help="sysfs: power_supply name (e.g. BAT0); hwmon: chip name (e.g. ina219); default: first",
    )
    port: str = opt("", help="vedirect: serial port, e.g. /dev/serial/by-id/usb-VictronEnergy…")
    baudrate: int = opt(19200, help="vedirect: serial speed (VE.Direct is 19200)", min=1200)
    stale_s: float = opt(300.0, help="a reading older than this is not used", min=1, max=7 * 86400)
    voltage_input: str = opt("in1_input", help="hwmon: bus voltage file, millivolts")
    current_input: str = opt("curr1_input", help="hwmon: current file, milliamps")
    current_sign: int = opt(
        1,
        help="hwmon: 1 if positive current charges the battery, -1 if it drains it",
        choices=[1, -1],
    )
    solar_channel: int = opt(
        0,
        help="hwmon: the channel on the panel side (in<N>_input, curr<N>_input, or power<N>_input); "
        "0 = none",
        min=0,
        max=16,
    )
    chemistry: str = opt(
        "lifepo4", help="hwmon: battery chemistry for the voltage curve", choices=list(CHEMISTRIES)
    )
    cells: int = opt(4, help="hwmon: cells in series (4 for a 12.8 V LiFePO4 pack)", min=1, max=24)
    internal_resistance_ohm: float = opt(
        0.05, help="hwmon: pack resistance for the rest-voltage correction under load", min=0, max=5
    )


@dataclass(frozen=True)
class StatePolicy:
    state: str = opt("normal", help="normal, eco or critical", choices=list(STATES))
    inference: str = opt(
        "all",
        help="all models, detector only, or paused (captures wait, analysed later)",
        choices=["all", "detector_only", "paused"],
    )
    uploads: str = opt(
        "any",
        help="any time, only in power.upload_windows, only while charging, or paused",
        choices=["any", "windows", "charging", "paused"],
    )
    capture_interval_s: int = opt(300, help="units' timer wake-up interval; 0 = PIR only", min=0)
    frame_size: int = opt(8, help="units' esp32-camera framesize_t (8 = VGA)", min=0, max=30)
    jpeg_quality: int = opt(12, help="units' JPEG quality, 0-63, lower is better", min=0, max=63)
    pir_enabled: bool = opt(True, help="units wake on PIR")
    quiet: str = opt(
        "", help='units\' quiet period in their local time, e.g. "22:00-05:00"; empty = none'
    )


DEFAULT_POLICIES = [
    StatePolicy("normal", "all", "any", 300, 8, 12, True, ""),
    StatePolicy("eco", "detector_only", "charging", 900, 8, 15, True, ""),
    StatePolicy("critical", "paused", "paused", 3600, 5, 20, True, "20:00-06:00"),
]


@dataclass(frozen=True)
class PowerSection:
    enabled: bool = opt(True, help="follow the battery and apply the policy of each state")
    sysfs_root: str = opt("/sys", help="where /class/power_supply and /class/hwmon are found")
    sources: list[SourceConfig] = opt(
        [], help="[[power.sources]] tables, in priority order; none = always NORMAL"
    )
    read_interval_s: float = opt(30.0, help="how often the sources are read in NORMAL", min=1)
    low_read_factor: float = opt(
        4.0, help="ECO and CRITICAL read the sources this many times less often", min=1, max=60
    )
    eco_enter_soc: float = opt(40.0, help="state of charge (%) at which ECO starts", min=0, max=100)
    eco_leave_soc: float = opt(50.0, help="state of charge (%) at which ECO ends", min=0, max=100)
    critical_enter_soc: float = opt(15.0, help="state of charge (%) of CRITICAL", min=0, max=100)
    critical_leave_soc: float = opt(25.0, help="CRITICAL ends above this (%)", min=0, max=100)
    hard_floor_soc: float = opt(
        8.0, help="below this (%) a technician's hold no longer keeps NORMAL", min=0, max=100
    )
    min_dwell_s: float = opt(
        300.0, help="least time in a state before the next transition", min=0, max=86400
    )
    charging_dwell_s: float = opt(
        60.0, help="a change of charging must last this long to count", min=0, max=86400
    )
    max_soc_rate_per_h: float = opt(
        60.0, help="a faster change of charge is a sensor fault, not the battery", min=1
    )
    stuck_after_s: float = opt(
        3600.0,
        help="a voltage and current that never change for this long are a stuck sensor",
        min=60,
    )
    policy: list[StatePolicy] = opt(
        DEFAULT_POLICIES, help="[[power.policy]] tables; a state not listed keeps its default"
    )
    upload_windows: list[Window] = opt(
        ["10:00-16:00"], help='local-time upload windows for uploads = "windows"'
    )
    battery_wh: float = opt(
        0.0, help="battery capacity in Wh, for runway from measured power; 0 = from the trend"
    )
    board_watts: float = opt(
        2.5,
        help="extra board power while one core is busy, turning CPU seconds into joules",
        min=0,
        max=100,
    )
    wake_command: list[str] = opt(
        ["rtcwake", "-m", "no", "-s", "{seconds}"],
        help="arms the wake-up before any shutdown ({seconds}, {epoch}); empty = none",
    )
    wake_after_s: int = opt(6 * 3600, help="wake the station this long after a shutdown", min=60)
    shutdown_command: list[str] = opt(
        [],
        help='run once per CRITICAL episode after the wake-up is armed, e.g. ["systemctl", "poweroff"]',
    )
    shutdown_grace_s: float = opt(
        300.0,
        help="after a start, CRITICAL waits this long before the shutdown (time for a hold)",
        min=0,
        max=86400,
    )
    history_interval_s: float = opt(
        300.0, help="store a reading in the power history at most this often", min=1
    )
    history_rows: int = opt(20000, help="power history rows kept (oldest dropped)", min=100)
    manage_units: bool = opt(
        True, help="push each state's unit settings with CONFIG (only with at least one source)"
    )
    unit_resend_s: float = opt(
        60.0,
        help="resend CONFIG to an awake unit that has not confirmed it after this long",
        min=1,
    )

    def check(self) -> Iterator[tuple[str, str]]:
        """Thresholds that overlap or are out of order, duplicate policies, bad quiet periods."""
        s = self
        pairs = (("eco_enter_soc", "eco_leave_soc"), ("critical_enter_soc", "critical_leave_soc"))
        for enter, leave in pairs:
            if getattr(s, enter) >= getattr(s, leave):
                yield enter, f"{getattr(s, enter)} must be below {leave} ({getattr(s, leave)})"
        if s.critical_enter_soc >= s.eco_enter_soc:
            yield (
                "critical_enter_soc",
                f"{s.critical_enter_soc} must be below eco_enter_soc ({s.eco_enter_soc})",
            )
        if s.critical_leave_soc > s.eco_leave_soc:
            yield (
                "critical_leave_soc",
                f"{s.critical_leave_soc} overlaps eco_leave_soc ({s.eco_leave_soc})",
            )
        if s.hard_floor_soc > s.critical_enter_soc:
            yield (
                "hard_floor_soc",
                f"{s.hard_floor_soc} is above critical_enter_soc ({s.critical_enter_soc})",
            )
        seen: set[str] = set()
        for i, p in enumerate(s.policy):
            if p.state in seen:
                yield f"policy[{i}].state", f"{p.state!r} has two [[power.policy]] tables"
            seen.add(p.state)
            if p.quiet:
                try:
                    Window(p.quiet)
                except ValueError as exc:
                    yield f"policy[{i}].quiet", str(exc)
        for i, src in enumerate(s.sources):
            if src.kind == "vedirect" and not src.port:
                yield f"sources[{i}].port", "a vedirect source needs its serial port"


def policy_for(section: PowerSection, state: str) -> StatePolicy:
    """The policy of one state: the configured table, or the default when none was written."""
    for p in section.policy:
        if p.state == state:
            return p
    return next(p for p in DEFAULT_POLICIES if p.state == state)


def policy_fields() -> list[str]:
    return [f.name for f in fields(StatePolicy)]


_DURATION_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | float) -> float:
    """Seconds from "30m", "2h", "90s", "1d" or a plain number of seconds; ValueError otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower()
        number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = raw[len(number) :] or "s"
        if unit not in _DURATION_UNITS or not number:
            raise ValueError(f'{text!r} is not a duration such as "30m", "2h" or "900"')
        try:
            seconds = float(number) * _DURATION_UNITS[unit]
        except ValueError:
            raise ValueError(f'{text!r} is not a duration such as "30m", "2h" or "900"') from None
    if not 0 <= seconds <= 7 * 86400:
        raise ValueError(f"a hold of {seconds:.0f} s is outside 0 s to 7 days")
    return seconds
