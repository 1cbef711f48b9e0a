"""Camtrap DP 1.0 export (https://camtrap-dp.tdwg.org): deployments, media, observations.

Mapping: a deployment is one camera unit at one station (the station's location); a medium is a
capture whose image the cloud holds; an observation is one detection (media level), or one row
per capture without detections (blank / unclassified). Captures uploaded without an image get
event-level observations with no mediaID.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud.db import CaptureRow, Database
from cloud.export import ExportError
from cloud.storage import ObjectStore

VERSION_URL = "https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0"
PROFILE_URL = f"{VERSION_URL}/camtrap-dp-profile.json"
SCHEMA_DIR = Path(__file__).with_name("camtrap_dp_1_0")
TABLES = ("deployments", "media", "observations")

# Station detection groups -> Camtrap DP observationType vocabulary.
OBSERVATION_TYPE = {"animal": "animal", "person": "human", "vehicle": "vehicle", "other": "unknown"}
TIMELAPSE_TRIGGERS = {"timer", "timelapse", "time_lapse", "schedule", "scheduled"}
TIME_SOURCES = ("unit_clock", "unit_uptime", "file_name", "received")
# A Latin binomial (or genus) label can go to scientificName; common names cannot.
_SCIENTIFIC = re.compile(r"^[A-Z][a-z]+( [a-z]+){0,2}$")


@dataclass
class CamtrapOptions:
    project_title: str = "WildCAM field stations"
    contributor: str = "WildCAM field station network"
    sampling_design: str = "opportunistic"
    include_images: bool = False


def iso(ts: float) -> str:
    """UTC timestamp in the form the Camtrap DP schemas accept (%Y-%m-%dT%H:%M:%S%z)."""
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def safe_file_part(text: str) -> str:
    # filePath may not contain '..' nor start with '.', '/' or '~'.
    return re.sub(r"\.{2,}", "_", text).lstrip(".~/") or "_"


def time_source(row: CaptureRow) -> str:
    """How the station knows the capture's time: unit_clock, unit_uptime, file_name, received."""
    named = row.meta.get("time_source")
    if named in TIME_SOURCES:
        return str(named)
    if row.captured_at is None:
        return "received"
    # stations before the source was recorded set captured_at only from a unit clock
    return "unit_clock" if row.unit_time_kind in ("epoch_s", "epoch_ms") else "unknown"


def media_path(row: CaptureRow) -> str:
    return f"media/{safe_file_part(row.station_id)}/{safe_file_part(row.capture_id)}.jpg"


def export_camtrap_dp(
    db: Database,
    store: ObjectStore,
    out: Path,
    since: float | None = None,
    until: float | None = None,
    options: CamtrapOptions | None = None,
) -> dict[str, int]:
    """Write datapackage.json and the three CSV tables into `out`; return row counts."""
    options = options or CamtrapOptions()
    rows = db.query_captures(since=since, until=until)
    stations = {s["station_id"]: s for s in db.list_stations()}
    unlocated = sorted(
        {r.station_id for r in rows if stations.get(r.station_id, {}).get("latitude") is None}
    )
    if unlocated:
        raise ExportError(
            "Camtrap DP needs each deployment's latitude and longitude; set them with "
            + "; ".join(f"`fieldstation-cloud stations locate {s} LAT LON`" for s in unlocated)
        )
    out.mkdir(parents=True, exist_ok=True)
    deployments = _deployments(rows, stations)
    media, observations = [], []
    for row in rows:
        deployment_id = _deployment_id(row)
        media_id = None
        if row.image_key:
            media_id = f"{row.station_id}:{row.capture_id}"
            media.append(
                {
                    "mediaID": media_id,
                    "deploymentID": deployment_id,
                    "captureMethod": "timeLapse"
                    if (row.trigger or "").lower() in TIMELAPSE_TRIGGERS
                    else "activityDetection",
                    "timestamp": iso(row.time),
                    "filePath": media_path(row),
                    "filePublic": "false",
                    "fileName": f"{row.capture_id}.jpg",
                    "fileMediatype": "image/jpeg",
                    "mediaComments": f"variant={row.variant}; timestamp from {time_source(row)}",
                }
            )
            if options.include_images:
                target = out / media_path(row)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(store.get(row.image_key))
        observations.extend(_observations(row, deployment_id, media_id))
    _write_csv(out / "deployments.csv", "deployments", deployments)
    _write_csv(out / "media.csv", "media", media)
    _write_csv(out / "observations.csv", "observations", observations)
    descriptor = _descriptor(rows, deployments, observations, options)
    (out / "datapackage.json").write_text(json.dumps(descriptor, indent=2) + "\n", encoding="utf-8")
    return {"deployments": len(deployments), "media": len(media), "observations": len(observations)}


def _deployment_id(row: CaptureRow) -> str:
    return f"{row.station_id}:{row.unit_id}"


def _deployments(rows: list[CaptureRow], stations: dict[str, Any]) -> list[dict[str, Any]]:
    spans: dict[str, tuple[CaptureRow, float, float]] = {}
    for row in rows:
        key = _deployment_id(row)
        first, start, end = spans.get(key, (row, row.time, row.time))
        spans[key] = (first, min(start, row.time), max(end, row.time))
    out = []
    for key, (row, start, end) in sorted(spans.items()):
        station = stations[row.station_id]
        out.append(
            {
                "deploymentID": key,
                "locationID": row.station_id,
                "locationName": row.station_id,
                "latitude": station["latitude"],
                "longitude": station["longitude"],
                "deploymentStart": iso(start),
                "deploymentEnd": iso(end),
                "cameraID": row.unit_id,
                "deploymentTags": f"station:{row.station_id}",
            }
        )
    return out


def _observations(
    row: CaptureRow, deployment_id: str, media_id: str | None
) -> list[dict[str, Any]]:
    base = {
        "deploymentID": deployment_id,
        "mediaID": media_id or "",
        "eventID": f"{row.station_id}:{row.capture_id}",
        "eventStart": iso(row.time),
        "eventEnd": iso(row.time),
        "observationLevel": "media" if media_id else "event",
        "observationComments": f"timestamp from {time_source(row)}",
    }
    if not row.detections:
        kind = "unclassified" if row.empty is None else ("blank" if row.empty else "unknown")
        return [
            {
                **base,
                "observationID": f"{row.station_id}:{row.capture_id}:0",
                "observationType": kind,
            }
        ]
    out = []
    for idx, det in enumerate(row.detections):
        label = det["label"]
        obs = {
            **base,
            "observationID": f"{row.station_id}:{row.capture_id}:{idx}",
            "observationType": OBSERVATION_TYPE[det["group"]],
            "scientificName": label
            if det["group"] == "animal" and _SCIENTIFIC.match(label) and label != "Animal"
            else "",
            "count": 1 if det["box"] else "",
            "classificationMethod": "machine",
            "classifiedBy": " ".join(p for p in (det["model"], det["model_version"]) if p),
            "classificationTimestamp": iso(row.uploaded_at),
            "classificationProbability": round(float(det["score"]), 6),
            "observationTags": f"label:{label}",
        }
        if det["box"]:
            x, y, w, h = det["box"]
            # Clip into the schema's ranges: width/height must be > 0 and the box inside the image.
            x, y = min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0)
            w, h = max(min(w, 1.0 - x), 1e-6), max(min(h, 1.0 - y), 1e-6)
            obs.update(
                bboxX=round(x, 6), bboxY=round(y, 6), bboxWidth=round(w, 6), bboxHeight=round(h, 6)
            )
        out.append(obs)
    return out


def _fields(table: str) -> list[str]:
    schema = json.loads((SCHEMA_DIR / f"{table}-table-schema.json").read_text(encoding="utf-8"))
    return [f["name"] for f in schema["fields"]]


def _write_csv(path: Path, table: str, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=_fields(table), extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def _descriptor(
    rows: list[CaptureRow],
    deployments: list[dict[str, Any]],
    observations: list[dict[str, Any]],
    options: CamtrapOptions,
) -> dict[str, Any]:
    lats = [d["latitude"] for d in deployments]
    lons = [d["longitude"] for d in deployments]
    times = [r.time for r in rows] or [dt.datetime.now(dt.UTC).timestamp()]
    if lats:
        west, east, south, north = min(lons), max(lons), min(lats), max(lats)
    else:
        west = east = south = north = 0.0
    names = sorted({o["scientificName"] for o in observations if o.get("scientificName")})
    triggers = {
        m
        for m in ("timeLapse",)
        if any((r.trigger or "").lower() in TIMELAPSE_TRIGGERS for r in rows)
    }
    return {
        "profile": PROFILE_URL,
        "name": "wildcam-fieldstation-export",
        "id": str(uuid.uuid4()),
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "title": f"{options.project_title}: captures exported by fieldstation-cloud",
        "contributors": [{"title": options.contributor, "role": "publisher"}],
        "version": "1.0",
        # No "licenses": the operator chooses them (Camtrap DP then wants one for data and media).
        "project": {
            "title": options.project_title,
            "samplingDesign": options.sampling_design,
            "captureMethod": sorted({"activityDetection"} | triggers),
            "individualAnimals": False,
            "observationLevel": ["media", "event"],
        },
        "spatial": {
            "type": "Polygon",
            "bbox": [west, south, east, north],
            "coordinates": [
                [[west, south], [east, south], [east, north], [west, north], [west, south]]
            ],
        },
        "temporal": {
            "start": dt.datetime.fromtimestamp(min(times), tz=dt.UTC).date().isoformat(),
            "end": dt.datetime.fromtimestamp(max(times), tz=dt.UTC).date().isoformat(),
        },
        "taxonomic": [{"scientificName": n} for n in names],
        "resources": [
            {
                "name": table,
                "path": f"{table}.csv",
                "profile": "tabular-data-resource",
                "format": "csv",
                "mediatype": "text/csv",
                "encoding": "utf-8",
                "schema": f"{VERSION_URL}/{table}-table-schema.json",
            }
            for table in TABLES
        ],
    }


def vendored_schema(table: str) -> Path:
    """Local copy of the official Camtrap DP 1.0 table schema (for offline validation)."""
    return SCHEMA_DIR / f"{table}-table-schema.json"


__all__ = ["CamtrapOptions", "export_camtrap_dp", "time_source", "vendored_schema"]
