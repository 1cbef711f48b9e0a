"""`fieldstation esp32 simulate`: virtual units (the firmware's C core) sending real JPEGs."""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from agent import protocol as p
from agent.esp32.host_unit import CoreVirtualUnit
from agent.esp32.units import virtual_unit
from agent.esp32.virtual import MqttUnitLink, PtySerialLink, UnitLink, VirtualUnit, load_images

log = logging.getLogger(__name__)


@dataclass
class SimTotals:
    cycles: int = 0
    acked: int = 0
    failed: int = 0
    duplicates: int = 0  # acknowledged, but the station already held that unit's capture id


def default_prefix() -> str:
    """sim-<4 hex>: two simulators started side by side never share unit ids (nor MACs)."""
    return f"sim-{secrets.token_hex(2)}"


def parse_mqtt_url(url: str) -> tuple[str, int]:
    u = urlparse(url if "://" in url else f"mqtt://{url}")
    if u.scheme not in ("mqtt", "tcp") or not u.hostname:
        raise ValueError(f"--mqtt {url!r} must look like mqtt://127.0.0.1:1883")
    return u.hostname, u.port or 1883


def _serial_link(path: str, say: Callable[[str], None]) -> PtySerialLink:
    link = PtySerialLink()
    if path != "auto":
        target = Path(path)
        if target.is_symlink():
            target.unlink()
        elif target.exists():
            raise FileExistsError(f"{path} exists and is not a symlink this command made")
        target.symlink_to(link.slave_path)
        say(f"  serial {path} -> {link.slave_path}")
    else:
        say(f"  serial {link.slave_path}")
    return link


def make_units(
    *,
    serial: str | None,
    mqtt: str | None,
    units: int,
    station: str,
    images: list[bytes],
    prefix: str = "sim",
    unit_id: str | None = None,
    say: Callable[[str], None] = print,
    clock: Callable[[], float] = time.time,
) -> list[VirtualUnit]:
    if unit_id and units != 1:
        raise ValueError("--unit-id names one unit; use --prefix with --units")
    out: list[VirtualUnit] = []
    # numbered from the clock, as a unit's NVS counter would have moved on: a rerun with the
    # same ids sends new capture ids rather than ones the station already holds
    first = int(clock()) & 0x3FFFFFFF
    for i in range(units):
        unit_id_i = unit_id or f"{prefix}-{i + 1:02d}"
        p.check_unit_id(unit_id_i)
        link: UnitLink
        if serial:
            path = serial if units == 1 or serial == "auto" else f"{serial}{i}"
            link = _serial_link(path, say)
        else:
            assert mqtt
            host, port = parse_mqtt_url(mqtt)
            link = MqttUnitLink(host, port, station, unit_id_i)
        unit = virtual_unit(unit_id_i, link, chunk_size=4096, images=images, first_capture_id=first)
        out.append(unit)
    return out


def run_unit(
    unit: VirtualUnit,
    images: list[bytes],
    interval_s: float,
    count: int,
    stop: threading.Event,
    totals: SimTotals,
    lock: threading.Lock,
    say: Callable[[str], None],
) -> None:
    """The unit's life: wake on its timer, capture, send, wait for the ACK, sleep, repeat."""
    n = 0
    unit.hello()
    while not stop.is_set() and (count == 0 or n < count):
        t0 = time.monotonic()
        if isinstance(unit, CoreVirtualUnit):
            before, dups = unit.stats["acks"], unit.duplicate_acks
            sleep = unit.run_cycle("timer")
            ok = unit.stats["acks"] > before
            duplicate = unit.duplicate_acks > dups
            detail = f"sleep {sleep.seconds or 'until PIR'} s"
        else:
            res = unit.send_capture(images[n % len(images)], trigger=p.Trigger.TIMER)
            unit.poll_commands(0.1)
            ok, duplicate = res.acked, res.duplicate
            detail = f"{res.attempts} attempt(s)"
        n += 1
        with lock:
            totals.cycles += 1
            totals.acked += ok
            totals.failed += not ok
            totals.duplicates += ok and duplicate
        ms = (time.monotonic() - t0) * 1000
        outcome = ("DUPLICATE" if duplicate else "acked") if ok else "NOT ACKED"
        say(f"  {unit.unit_id}  cycle {n:>4}  {outcome:9}  {ms:7.1f} ms  {detail}")
        stop.wait(interval_s)


def simulate(
    *,
    serial: str | None,
    mqtt: str | None,
    images_dir: Path,
    rate: float = 6.0,
    units: int = 1,
    station: str = "station",
    count: int = 0,
    duration: float = 0.0,
    prefix: str | None = None,
    unit_id: str | None = None,
    say: Callable[[str], None] = print,
    clock: Callable[[], float] = time.time,
) -> int:
    """Run virtual units until count captures each, duration seconds, or Ctrl-C."""
    if bool(serial) == bool(mqtt):
        raise ValueError("give exactly one of --serial PATH|auto and --mqtt URL")
    if rate <= 0 or units < 1:
        raise ValueError("--rate must be > 0 and --units >= 1")
    images = load_images(images_dir)
    say(
        f"simulating {units} unit(s), {rate:g} capture(s)/min each, {len(images)} images from {images_dir}"
    )
    fleet = make_units(
        serial=serial,
        mqtt=mqtt,
        units=units,
        station=station,
        images=images,
        prefix=prefix or default_prefix(),
        unit_id=unit_id,
        say=say,
        clock=clock,
    )
    say("  units  " + ", ".join(f"{u.unit_id} ({u.mac})" for u in fleet))
    say(
        f"  engine {fleet[0].engine} (firmware core)"
        if fleet[0].engine == "c-core"
        else "  engine pure-Python fallback (no C compiler)"
    )
    stop = threading.Event()
    totals = SimTotals()
    lock = threading.Lock()
    threads = [
        threading.Thread(
            target=run_unit,
            args=(u, images, 60.0 / rate, count, stop, totals, lock, say),
            name=f"sim-{u.unit_id}",
            daemon=True,
        )
        for u in fleet
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + duration if duration else None
    try:
        while any(t.is_alive() for t in threads):
            if deadline and time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        say("stopping")
    stop.set()
    for t in threads:
        t.join(timeout=60)
    for u in fleet:
        u.close()
    if serial and serial != "auto":
        for i in range(units):
            link_path = Path(serial if units == 1 else f"{serial}{i}")
            if link_path.is_symlink():
                os.unlink(link_path)
    new = totals.acked - totals.duplicates
    say(f"done: {totals.cycles} captures, {new} acknowledged as new, {totals.failed} not")
    if totals.duplicates:
        say(
            f"  {totals.duplicates} acknowledged as DUPLICATES: the station already held those "
            "capture ids (another simulator or unit with the same id?); they were not stored again"
        )
    return 0 if totals.failed == 0 and totals.duplicates == 0 and totals.cycles > 0 else 1
