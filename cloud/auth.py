"""Bearer tokens: issued once, stored as salted HMAC-SHA256 digests, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from cloud.db import Database

# fsc_<16 hex token id>_<secret>: the id finds the row, the secret is what is verified.
_TOKEN = re.compile(r"^fsc_([0-9a-f]{16})_([A-Za-z0-9_-]{20,128})$")


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: one station, or an operator (admin)."""

    role: str  # "station" | "admin"
    station_id: str | None


def _digest(salt: bytes, secret: str) -> bytes:
    return hmac.new(salt, secret.encode("ascii"), hashlib.sha256).digest()


def issue_token(db: Database, station_id: str | None, role: str = "station") -> str:
    """Create a token for a station (or an admin token) and return it; only its digest is kept."""
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    db.add_token(token_id, station_id, role, salt, _digest(salt, secret))
    return f"fsc_{token_id}_{secret}"


def verify_token(db: Database, token: str, admin_token: str = "") -> Principal | None:
    """The principal a presented token stands for, or None when it is unknown or revoked."""
    if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal("admin", None)
    match = _TOKEN.match(token)
    if not match:
        return None
    row = db.get_token(match.group(1))
    if row is None or row.revoked:
        return None
    if not hmac.compare_digest(_digest(row.salt, match.group(2)), row.digest):
        return None
    return Principal(row.role, row.station_id)
