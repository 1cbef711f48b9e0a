"""The [inference] section of station.toml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.config.machinery import opt


@dataclass(frozen=True)
class InferenceSection:
    enabled: bool = opt(True, help="analyse captures on the station; false passes them on as-is")
    detector: str = opt(
        "",
        help="model package (folder, tar or model.json) run on every capture; a bare name is "
        "looked up in models_dir; empty: captures are passed on unanalysed",
    )
    classifier: str = opt(
        "", help="optional package run on each detector crop of classify_groups (species)"
    )
    classify_groups: list[str] = opt(
        ["animal"], help="detector groups whose crops go to the classifier"
    )
    models_dir: str = opt("", help="installed model packages; default <data_dir>/models")
    threads: int = opt(2, help="interpreter threads per model", min=1, max=64)
    xnnpack: bool = opt(True, help="use LiteRT's XNNPACK CPU delegate")
    person_policy: str = opt(
        "blur",
        help="images with people: blur them before upload, drop (upload metadata only) or keep",
        choices=["blur", "drop", "keep"],
    )
    person_finders: str = opt(
        "both",
        help="which privacy finders below run (unless person_policy is keep): faces, bodies or "
        "both; the detector's own person results always count",
        choices=["faces", "bodies", "both"],
    )
    face_models: list[str] = opt(
        [], help="face packages run for the privacy policy, e.g. blazeface-full-range"
    )
    face_threshold: float = opt(0.6, help="minimum score of a face finder's result", min=0, max=1)
    # on by default: a person uploaded unblurred cannot be taken back; HOG ships in the wheel
    body_models: list[str] = opt(
        ["opencv-hog"],
        help='body finders run for the privacy policy: "opencv-hog" (OpenCV\'s HOG people '
        "detector, built in; the default) and/or packages such as blazepose-detector; [] for none",
    )
    body_threshold: float = opt(
        0.65,
        help="minimum score of a body package's result (BlazePose fires at 0.55 on a logo)",
        min=0,
        max=1,
    )
    hog_threshold: float = opt(
        0.3,
        help="minimum SVM margin of an opencv-hog result (a margin, not a probability)",
        min=-2,
        max=10,
    )
    person_mask: str = opt(
        "",
        help="segmentation package that turns each person region into a silhouette to blur, "
        "e.g. selfie-segmentation; empty: blur the region's box",
    )
    blur_quality: int = opt(90, help="JPEG quality of blurred images", min=30, max=100)
    batch_size: int = opt(8, help="captures taken from the buffer per round", min=1, max=1000)
    poll_interval_s: float = opt(
        1.0, help="wait between buffer checks when nothing is waiting", min=0.05, max=60
    )
    reload_interval_s: float = opt(
        30.0, help="how often changed or missing packages are retried", min=1, max=86400
    )
    max_pixels: int = opt(
        50_000_000, help="captures whose header claims more pixels are failed", min=1
    )
    min_side: int = opt(16, help="captures smaller than this on a side are failed", min=1)
    crop_margin: float = opt(
        0.1, help="context added around a box before classifying", min=0, max=1
    )


def resolve_package(ref: str, models_dir: Path) -> Path:
    """A package reference from the config as a path: as written if it exists, else in models_dir."""
    path = Path(ref).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return models_dir / ref


def models_dir(section: InferenceSection, data_dir: Path) -> Path:
    return Path(section.models_dir) if section.models_dir else data_dir / "models"
