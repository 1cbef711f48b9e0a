"""The [modelsync] section of station.toml: which model follows the cloud's rollouts, and how."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

from agent.config.machinery import ByteSize, opt


@dataclass(frozen=True)
class ModelSyncSection:
    enabled: bool = opt(False, help="follow the cloud's model rollouts for `model`")
    model: str = opt(
        "",
        help="model name to follow (the card's name); its active version becomes the detector",
        pattern=r"^$|^[a-z0-9][a-z0-9._-]{0,63}$",
        form="a lower-case card name such as wildcam-det",
    )
    endpoint: str = opt("", help="[[upload.endpoints]] name to fetch from; empty = the first")
    trusted_keys: list[str] = opt(
        [], help="ed25519 public keys (base64, from `fieldstation-cloud models keygen`); several "
        "so keys can rotate"
    )  # fmt: skip
    poll_interval_s: float = opt(
        300.0, help="how often the manifest is fetched", min=0.05, max=86400
    )
    download_attempts: int = opt(3, help="tries per poll (each resumes by Range)", min=1, max=20)
    download_deadline_s: float = opt(
        1800.0, help="longest a download may take in one poll", min=1, max=86400
    )
    selftest_deadline_s: float = opt(300.0, help="longest the self-test may take", min=1, max=3600)
    shadow_deadline_s: float = opt(
        600.0, help="longest the shadow run may take (judged on what it did)", min=1, max=86400
    )
    chunk_bytes: ByteSize = opt(ByteSize(256 << 10), help="download read size", min=4096)
    max_package_bytes: ByteSize = opt(
        ByteSize(512 << 20), help="refuse packages larger than this", min=1024
    )
    max_latency_ms: float = opt(
        2000.0, help="self-test latency budget per image on this hardware", min=0.1, max=600000
    )
    shadow_captures: int = opt(
        50, help="recent captures (images still buffered) the shadow run compares on", min=0
    )
    min_agreement: float = opt(
        0.0, help="empty/non-empty agreement with the active model below which a version is "
        "refused (a rollout may ask for more)", min=0, max=1
    )  # fmt: skip
    probation_s: float = opt(
        3600.0, help="how long a new version is watched after activation", min=0, max=30 * 86400
    )
    probation_min_captures: int = opt(
        10, help="captures needed before the detection rate is judged", min=1
    )
    max_error_rate: float = opt(
        0.2, help="share of inference errors in probation that rolls back", min=0, max=1
    )
    collapse_ratio: float = opt(
        0.25,
        help="roll back when the non-empty rate falls below this share of the shadow run's",
        min=0,
        max=1,
    )
    download_when_power: bool = opt(
        True, help="downloads allowed now (until the power manager decides)"
    )
    activate_when_power: bool = opt(
        True, help="activations allowed now (until the power manager decides)"
    )

    def check(self) -> Iterator[tuple[str, str]]:
        if self.enabled and not self.model:
            yield "model", "model sync is enabled but no model name is set"
        if self.enabled and not self.trusted_keys:
            yield "trusted_keys", "model sync is enabled but no public key is pinned"
        for i, key in enumerate(self.trusted_keys):
            try:
                raw = base64.b64decode(key, validate=True)
            except ValueError:
                raw = b""
            if len(raw) != 32:
                yield f"trusted_keys[{i}]", "not an ed25519 public key (base64 of 32 bytes)"
