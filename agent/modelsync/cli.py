"""`fieldstation models verify|activate|rollback|status`: model sync by hand, for a technician.

`verify` runs the same checks as the sync path on a package file (a USB stick: the `.tar.gz` with
its `.sig` beside it); a folder or a tar with no `.sig` gets every check but the signature, and
says so. `activate` and `rollback` switch the same atomic pointer the sync worker
does; a running station follows it within a second.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from agent.modelsync.versions import ModelVersions, PointerError


def add_model_commands(msub: Any, with_config: Any) -> None:
    """Add verify, activate, rollback and status under `fieldstation models`."""
    verify = msub.add_parser("verify", help="check a package file as model sync would")
    with_config(verify)
    verify.add_argument(
        "package", type=Path, metavar="PKG", help="the .tar.gz from the cloud, or a package folder"
    )
    verify.add_argument("--sig", type=Path, help="its signature file (default PKG.sig)")
    verify.add_argument(
        "--key", action="append", default=[], help="trusted public key (default: the config's)"
    )
    verify.add_argument(
        "--require-signature",
        action="store_true",
        help="fail when PKG has no .sig (default: check everything else and say it is unsigned)",
    )
    verify.set_defaults(func=cmd_verify)
    activate = msub.add_parser("activate", help="make an installed version active now")
    with_config(activate)
    activate.add_argument("version", help="the version to activate, as `models status` lists it")
    activate.set_defaults(func=cmd_activate)
    rollback = msub.add_parser("rollback", help="go back to the previous version")
    with_config(rollback)
    rollback.set_defaults(func=cmd_rollback)
    status = msub.add_parser("status", help="active, previous, installed and refused versions")
    with_config(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument(
        "--watch", action="store_true", help="follow the running station's download on a terminal"
    )
    status.set_defaults(func=cmd_status)


def _config(args: argparse.Namespace) -> Any:
    from agent.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise SystemExit(f"fieldstation: {exc}") from None
    if getattr(args, "data_dir", None):
        config = config.replace("station", data_dir=str(args.data_dir))
    return config


def _versions(config: Any) -> ModelVersions:
    from agent.store import BUFFER_FILE, Store

    name = config.modelsync.model
    if not name:
        raise SystemExit("fieldstation models: set [modelsync] model to the model name to manage")
    data_dir = Path(config.data_dir)
    return ModelVersions(data_dir, name, Store(data_dir / BUFFER_FILE))


def cmd_verify(args: argparse.Namespace) -> int:
    # cryptography and the inference runtime: paid by `verify` only, not by every command's --help
    from agent.modelsync.verify import Release, VerifyError, self_test, verify_package

    config = _config(args)
    s = config.modelsync
    keys = args.key or list(s.trusted_keys)
    sig = args.sig or args.package.with_name(args.package.name + ".sig")
    if not args.package.exists():
        print(
            f"fieldstation models verify: {args.package}: no such file or folder", file=sys.stderr
        )
        return 2
    signed = args.sig is not None or sig.exists()
    if not signed and args.require_signature:
        print(f"fieldstation models verify: {args.package}: no signature ({sig})", file=sys.stderr)
        return 1
    try:
        with tempfile.TemporaryDirectory(prefix="fieldstation-verify-") as tmp:
            if signed:
                release = Release.from_sig_file(sig)
                folder = verify_package(
                    args.package, release, keys, Path(tmp) / "pkg", int(s.max_package_bytes)
                )
                print(f"{release.id}: sha256 ok, signed by trusted key {release.key_id}, card ok")
            else:
                folder = _unsigned_folder(args.package, Path(tmp) / "pkg", int(s.max_package_bytes))
            package, ms = self_test(
                folder,
                latency_budget_ms=s.max_latency_ms,
                deadline_s=s.selftest_deadline_s,
                threads=config.inference.threads,
                xnnpack=config.inference.xnnpack,
            )
            name = package.card.id
            goldens = len(package.card.selftest)
            if not signed:
                print(f"{name}: card, model sha256 and shapes ok; NOT signed (no {sig.name})")
            print(f"{name}: {goldens} golden self-test(s) reproduce, {ms:.1f} ms per image")
    except VerifyError as exc:
        print(f"fieldstation models verify: {args.package}: {exc}", file=sys.stderr)
        return 1
    print(f"{name}: ok" if signed else f"{name}: ok, but unsigned: model sync would refuse it")
    return 0


def _unsigned_folder(package: Path, dest: Path, max_bytes: int) -> Path:
    """A package folder as it is, or a tar extracted with the same guards as the sync path."""
    from agent.modelsync import artifact as art
    from agent.modelsync.verify import VerifyError

    if package.is_dir():
        return package
    try:
        return art.safe_extract(package, dest, max_bytes)
    except art.ArtifactError as exc:
        raise VerifyError("verify", str(exc)) from None


def cmd_activate(args: argparse.Namespace) -> int:
    versions = _versions(_config(args))
    try:
        versions.forgive(args.version)  # a person chose it: the refusal no longer stands
        pointer = versions.switch(args.version, how="manual")
    except PointerError as exc:
        installed = ", ".join(versions.installed()) or "none"
        print(f"fieldstation models activate: {exc} (installed: {installed})", file=sys.stderr)
        return 1
    was = pointer.previous[0] if pointer.previous else "none"
    print(f"{versions.name}@{pointer.version} active (was {was})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    versions = _versions(_config(args))
    current = versions.pointer()
    if current is None or not current.previous:
        print("fieldstation models rollback: no previous version to go back to", file=sys.stderr)
        return 1
    target = current.previous[0]
    try:
        versions.switch(target, how="rollback")
    except PointerError as exc:
        print(f"fieldstation models rollback: {exc}", file=sys.stderr)
        return 1
    versions.mark(current.version, "rolled_back", "rolled back by hand")
    print(f"{versions.name}@{target} active (rolled back from {current.version})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    config = _config(args)
    versions = _versions(config)
    p = versions.pointer()
    installed = versions.installed()
    records = versions.records()
    doc = {
        "model": versions.name,
        "active": p.as_json() if p else None,
        "installed": installed,
        "versions": records,
        "job": _live_job(config),  # what the running station is doing, if one answers
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"model      {versions.name}")
    if p is None:
        print("active     none")
    else:
        watch = ", in probation" if p.probation else ""
        print(f"active     {p.version} ({p.how}{watch})")
        print(f"previous   {', '.join(p.previous) or 'none'}")
    print(f"installed  {', '.join(installed) or 'none'}")
    for r in records:
        if r["state"] == "installed":
            continue
        print(f"refused    {r['version']}: {r['state']}: {r['reason']}")
    job = doc["job"]
    if isinstance(job, dict):
        print(f"job        {_job_line(job)}")
        if args.watch and sys.stdout.isatty():
            _watch(config)
    return 0


BUSY = ("downloading", "verifying", "shadow")


def _live_job(config: Any) -> dict[str, Any] | None:
    """The running station's model sync job (None when no daemon answers)."""
    import requests

    host, _, port = config.http.listen.rpartition(":")
    host = "127.0.0.1" if host.strip("[]") in ("0.0.0.0", "::", "") else host
    try:
        doc = requests.get(f"http://{host}:{port}/api/status", timeout=1.5).json()
    except (requests.RequestException, ValueError):
        return None
    job = (doc.get("modelsync") or {}).get("job")
    return job if isinstance(job, dict) else None


def _job_line(job: dict[str, Any]) -> str:
    line = f"{job.get('version')} {job.get('state')}"
    if job.get("state") == "downloading" and job.get("size"):
        done, size = int(job.get("bytes") or 0), int(job["size"])
        line += f" {done / 2**20:.1f} of {size / 2**20:.1f} MiB ({done / size:.0%})"
    if job.get("reason"):
        line += f": {job['reason']}"
    return line


def _watch(config: Any, limit_s: float = 3600.0) -> None:
    """Redraw the job line until it leaves the busy states (bounded in time)."""
    import time

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        job = _live_job(config)
        if job is None:
            break
        sys.stdout.write(f"\r\033[Kjob        {_job_line(job)}")
        sys.stdout.flush()
        if job.get("state") not in BUSY:
            break
        time.sleep(0.5)
    sys.stdout.write("\n")
