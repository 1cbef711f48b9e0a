"""Who may use the page: the station password (scrypt hash in a secret file), sessions, CSRF
tokens and the failed-login limit.

A station with no password serves the page to loopback clients only; with one, every listener
that serves the page asks for a login. Sessions live in memory: a restart logs everyone out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SCHEME = "scrypt"
# scrypt cost: about 50 ms and 16 MiB on a Raspberry Pi 4, so guessing offline stays slow
N, R, P = 1 << 14, 8, 1
COOKIE = "fs_session"
MIN_PASSWORD = 8


class PasswordError(ValueError):
    """A password that cannot be set, or a password file that cannot be read."""


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$salt$hash` (base64) for a password of at least MIN_PASSWORD characters."""
    if len(password) < MIN_PASSWORD:
        raise PasswordError(
            f"the password has {len(password)} characters; use {MIN_PASSWORD} or more"
        )
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    b64 = base64.b64encode
    return f"{SCHEME}${N}${R}${P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches a hash made by hash_password (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = stored.strip().split("$")
        if scheme != SCHEME:
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
            maxmem=64 << 20,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def write_password_file(path: Path, password: str) -> None:
    """Write the hash to `path`, readable by its owner only (atomic: no half-written file)."""
    text = hash_password(password) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_password_hash(path: str) -> str | None:
    """The stored hash, or None when no password file is configured or it holds no hash."""
    if not path:
        return None
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise PasswordError(f"web.password_file: cannot read {path}: {exc.strerror}") from None
    if not text.startswith(f"{SCHEME}$"):
        raise PasswordError(
            f"web.password_file: {path} holds no password hash (write it with `fieldstation web passwd`)"
        )
    return text


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass
class Session:
    token: str
    csrf: str
    expires: float
    user: str  # "technician" after a login, "loopback" on a station with no password
    notes: list[tuple[str, str]] = field(default_factory=list)  # (ok|error, text) for the next page
    used_forms: set[str] = field(default_factory=set)  # form ids already handled (double submits)

    def note(self, level: str, text: str) -> None:
        self.notes = [*self.notes[-4:], (level, text)]

    def take_notes(self) -> list[tuple[str, str]]:
        notes, self.notes = self.notes, []
        return notes

    def use_form(self, form_id: str) -> bool:
        """False when this form was handled already (a double submit)."""
        if not form_id or form_id in self.used_forms:
            return False
        if len(self.used_forms) > 500:
            self.used_forms.clear()
        self.used_forms.add(form_id)
        return True


@dataclass
class Sessions:
    """Live sessions by cookie token (in memory, bounded)."""

    lifetime_s: float
    clock: Callable[[], float] = time.time
    max_sessions: int = 256
    _by_token: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def open(self, user: str) -> Session:
        now = self.clock()
        s = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(24), now + self.lifetime_s, user
        )
        with self._lock:
            self._drop_expired(now)
            if len(self._by_token) >= self.max_sessions:  # the oldest goes first
                oldest = min(self._by_token.values(), key=lambda x: x.expires)
                del self._by_token[oldest.token]
            self._by_token[s.token] = s
        return s

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            s = self._by_token.get(token)
            if s is None:
                return None
            if s.expires < self.clock():
                del self._by_token[token]
                return None
            return s

    def close(self, token: str | None) -> None:
        with self._lock:
            self._by_token.pop(token or "", None)

    def _drop_expired(self, now: float) -> None:
        for token in [t for t, s in self._by_token.items() if s.expires < now]:
            del self._by_token[token]


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), (sent or "").encode())


@dataclass
class LoginLimit:
    """At most `attempts` failed logins per client address per `window_s`."""

    attempts: int
    window_s: float
    clock: Callable[[], float] = time.time
    _failures: dict[str, list[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_s(self, client: str) -> float:
        """Seconds until `client` may try again (0: now)."""
        now = self.clock()
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if t > now - self.window_s]
            self._failures[client] = recent
            if len(recent) < self.attempts:
                return 0.0
            return max(1.0, recent[0] + self.window_s - now)

    def failed(self, client: str) -> None:
        with self._lock:
            if len(self._failures) > 4096:  # a flood of addresses must not grow memory
                self._failures.clear()
            self._failures.setdefault(client, []).append(self.clock())

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
