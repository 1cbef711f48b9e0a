"""Two `fieldstation-cloud serve` replicas on one PostgreSQL and one S3 bucket (moto), as the
HorizontalPodAutoscaler runs them: every capture stored once, the same answers from both."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import requests

from cloud.auth import issue_token
from cloud.db import open_database
from cloud.db.postgres import PostgresDatabase
from cloud.process import CloudService
from tests.cloud.cloud_helpers import auth, item, statuses, upload
from tests.cloud.cloud_services import Postgres, moto_s3, postgres_server
from tests.helpers import jpeg

STATION = "st-ridge"
BURST = 20  # per station over all replicas; the batch test (14 requests) stays below it


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with postgres_server() as pg:
        yield pg


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with moto_s3() as url:
        yield url


def start_together(count: int, tmp_path: Path, env: dict[str, str]) -> list[CloudService]:
    """Start `count` replicas at the same moment (their schema set-up overlaps)."""
    barrier = threading.Barrier(count)
    started: list[CloudService | BaseException] = [RuntimeError("not started")] * count

    def start(i: int) -> None:
        barrier.wait()
        try:
            started[i] = CloudService.start(tmp_path / f"replica-{i}", env=env)
        except BaseException as exc:  # noqa: BLE001 - reported below, after the others stop
            started[i] = exc

    threads = [threading.Thread(target=start, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    services = [s for s in started if isinstance(s, CloudService)]
    if len(services) != count:
        for s in services:
            s.stop()
        errors = [s for s in started if not isinstance(s, CloudService)]
        pytest.fail(f"{len(errors)} of {count} replicas did not start: {errors[0]}")
    return services


def cloud_env(postgres: Postgres, s3: str, bucket: str, **limits: int) -> dict[str, str]:
    env = {
        "FIELDSTATION_CLOUD_DATABASE_URL": postgres.create_database(),
        "FIELDSTATION_CLOUD_STORAGE_BACKEND": "s3",
        "FIELDSTATION_CLOUD_STORAGE_ENDPOINT_URL": s3,
        "FIELDSTATION_CLOUD_STORAGE_BUCKET": bucket,
        "FIELDSTATION_CLOUD_STORAGE_REGION": "us-east-1",
        "FIELDSTATION_CLOUD_STORAGE_ACCESS_KEY_ID": "testing",
        "FIELDSTATION_CLOUD_STORAGE_SECRET_ACCESS_KEY": "testing",
        "FIELDSTATION_CLOUD_STORAGE_CREATE_BUCKET": "true",
        "FIELDSTATION_CLOUD_SERVER_LOG_LEVEL": "warning",
    }
    env.update({f"FIELDSTATION_CLOUD_LIMITS_{k.upper()}": str(v) for k, v in limits.items()})
    return env


def test_schema_is_created_once_when_replicas_open_the_database_together(
    postgres: Postgres,
) -> None:
    url = postgres.create_database()
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def open_database() -> None:
        barrier.wait()
        try:
            PostgresDatabase(url).close()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=open_database) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # without the advisory lock, five of six fail on pg_type_typname_nsp_index
    assert errors == []


@dataclass
class Replicas:
    a: CloudService
    b: CloudService
    env: dict[str, str]
    bucket: str

    def token(self, station_id: str | None, role: str = "station") -> str:
        """A token from the shared database (what `fieldstation-cloud stations add` does)."""
        db = open_database(self.env["FIELDSTATION_CLOUD_DATABASE_URL"])
        try:
            if station_id is not None:
                db.add_station(station_id)
            return issue_token(db, station_id, role=role)
        finally:
            db.close()


@pytest.fixture(scope="module")
def replicas(
    postgres: Postgres, s3: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    """Two replicas started at the same moment on a fresh database and bucket."""
    bucket = "replicas-" + uuid.uuid4().hex[:8]
    env = cloud_env(postgres, s3, bucket, rate_limit_per_minute=1, rate_limit_burst=BURST)
    a, b = start_together(2, tmp_path_factory.mktemp("replicas"), env)
    yield Replicas(a, b, env, bucket)
    a.stop()
    b.stop()


def test_the_same_batches_sent_to_both_replicas_are_stored_once(
    replicas: Replicas, s3: str
) -> None:
    a, b = replicas.a, replicas.b
    token = replicas.token(STATION)
    batches = [
        [item(f"cap-{n:02d}-{i:02d}", jpeg(n * 100 + i)) for i in range(8)] for n in range(6)
    ]
    answers: Counter[tuple[str, str]] = Counter()
    with ThreadPoolExecutor(2) as pool:
        for batch in batches:
            both = pool.map(
                lambda url, batch=batch: upload(url, token, STATION, batch), (a.url, b.url)
            )
            for response in both:
                for entry, status in zip(batch, statuses(response), strict=True):
                    answers[(entry[0]["capture_id"], status)] += 1
    ids = [entry["capture_id"] for batch in batches for entry, _data in batch]
    # each capture: one replica said "stored", the other "duplicate"
    assert all(answers[(cid, "stored")] == 1 and answers[(cid, "duplicate")] == 1 for cid in ids)
    assert sum(answers.values()) == 2 * len(ids)

    held = [
        requests.post(f"{r.url}/v1/captures/lookup", json={"capture_ids": ids}, headers=auth(token), timeout=30).json()["held"]
        for r in (a, b)
    ]  # fmt: skip
    assert held[0] == held[1] and set(held[0]) == set(ids)

    admin = replicas.token(None, role="admin")
    listed = requests.get(f"{b.url}/v1/captures", params={"limit": 1000}, headers=auth(admin), timeout=30).json()  # fmt: skip
    assert sorted(c["capture_id"] for c in listed["captures"]) == sorted(ids)

    client = boto3.client(
        "s3", endpoint_url=s3, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip
    objects = client.list_objects_v2(Bucket=replicas.bucket).get("Contents", [])
    assert len(objects) == len(ids)


def test_rate_limit_is_shared_by_the_replicas(replicas: Replicas) -> None:
    token = replicas.token("st-busy")

    def lookup(replica: CloudService) -> requests.Response:
        return requests.post(f"{replica.url}/v1/captures/lookup", json={"capture_ids": ["x"]}, headers=auth(token), timeout=30)  # fmt: skip

    # twice the burst at once, half to each replica: the bucket in PostgreSQL lets the burst
    # through once in all (at 1 a minute, the refill during the test is far below one token)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lookup, [replicas.a, replicas.b] * BURST))
    codes = Counter(r.status_code for r in answers)
    assert codes == {200: BURST, 429: BURST}
    refused = [r for r in answers if r.status_code == 429]
    assert all("'st-busy' is over its rate limit" in r.json()["detail"] for r in refused)
    assert all(1 <= int(r.headers["Retry-After"]) <= 60 for r in refused)
    assert lookup(replicas.a).status_code == lookup(replicas.b).status_code == 429
