"""Multipart parse benchmark: the cloud's parser against Starlette's form parser, same bodies.

    python bench/bench_multipart.py [--items 10] [--item-kib 50] [--rounds 200]

Raw baseline: one copy (`memoryview(body).tobytes()`) of each request body (the least any parser that hands out
bytes must do). Prints the time per batch body and its ratio to the raw copy for
`cloud.multipart.parse_parts` (finds the delimiters, slices the body without copying) and for
Starlette's `Request.form()` (python-multipart streaming parser, each file part spooled into an
`UploadFile`, read back as bytes). This is why the cloud has its own parser (cloud/multipart.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from starlette.datastructures import UploadFile  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.types import Message  # noqa: E402

from bench.figures import Figure  # noqa: E402
from cloud.multipart import parse_parts  # noqa: E402


def batch_body(items: int, item_bytes: int) -> tuple[bytes, str]:
    """A body shaped like the station's uploader sends: manifest part first, then the images."""
    boundary = "wildcam-" + os.urandom(12).hex()
    manifest = json.dumps({"station_id": "bench", "items": [{"n": i} for i in range(items)]})
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="manifest"\r\n'
        f"Content-Type: application/json\r\n\r\n{manifest}".encode()
    ]
    for i in range(items):
        parts.append(
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="i{i}"; '
            f'filename="i{i}.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
            + os.urandom(item_bytes)
        )
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def time_per_call(fn: object, rounds: int) -> float:
    """Seconds per call, the best of three runs of `rounds` calls."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(rounds):
            fn()  # type: ignore[operator]
        best = min(best, (time.perf_counter() - t0) / rounds)
    return best


def starlette_parse(body: bytes, content_type: str, max_part: int) -> dict[str, bytes]:
    """The parts as bytes via Starlette's form parser (what a FastAPI `UploadFile` route gets)."""

    async def run() -> dict[str, bytes]:
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/",
            "headers": [(b"content-type", content_type.encode())],
        }
        request = Request(scope, receive)
        out: dict[str, bytes] = {}
        async with request.form(max_files=1000, max_part_size=max_part) as form:
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    out[name] = await value.read()
                else:
                    out[name] = value.encode()
        return out

    return asyncio.run(run())


def run(quick: bool) -> list[Figure]:
    rounds = 40 if quick else 200
    body, ctype = batch_body(10, 50 * 1024)
    limit = 50 * 1024 + 4096
    raw = time_per_call(lambda: memoryview(body).tobytes(), rounds)
    cloud = time_per_call(lambda: parse_parts(ctype, body, limit, 11), rounds)
    star = time_per_call(lambda: starlette_parse(body, ctype, limit), max(1, rounds // 4))
    base = "one raw copy of the body"
    return [
        Figure("multipart split, cloud.multipart, 10 x 50 KiB", cloud * 1e6, "us", raw * 1e6, base),
        Figure("multipart split, Starlette form parser", star * 1e6, "us", raw * 1e6, base),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10)
    ap.add_argument("--item-kib", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    body, ctype = batch_body(args.items, args.item_kib * 1024)
    limit = args.item_kib * 1024 + 4096
    ours = parse_parts(ctype, body, limit, args.items + 1)
    theirs = starlette_parse(body, ctype, limit)
    assert {k: bytes(v.data) for k, v in ours.items()} == theirs, "the parsers disagree"

    raw = time_per_call(lambda: memoryview(body).tobytes(), args.rounds)
    cloud = time_per_call(lambda: parse_parts(ctype, body, limit, args.items + 1), args.rounds)
    star = time_per_call(lambda: starlette_parse(body, ctype, limit), max(1, args.rounds // 4))
    print(f"body: {len(body) / 1024:.0f} KiB, {args.items} images of {args.item_kib} KiB")
    print(f"raw copy of the body     {raw * 1e6:9.1f} us   1.00x")
    print(f"cloud.multipart         {cloud * 1e6:9.1f} us   {cloud / raw:5.2f}x raw")
    print(f"starlette form parser   {star * 1e6:9.1f} us   {star / raw:5.2f}x raw")
    print(f"starlette / cloud.multipart: {star / cloud:.1f}x")


if __name__ == "__main__":
    main()
