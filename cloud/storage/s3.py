"""S3-compatible object store (AWS S3, MinIO, moto, GCS interoperability) via boto3."""

from __future__ import annotations

from cloud.config import StorageConfig
from cloud.errors import BackendUnavailable, NotFound
from cloud.storage.base import ObjectStore, check_key

try:
    import boto3
    import botocore.config
    import botocore.exceptions
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("S3 storage needs boto3: pip install 'wildcam-fieldstation[cloud]'") from exc

_UNAVAILABLE = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
)


class S3Store(ObjectStore):
    def __init__(self, config: StorageConfig) -> None:
        self.bucket = config.bucket
        self.prefix = config.prefix.strip("/")
        self.endpoint = config.endpoint_url or None
        # boto3 clients are thread-safe; one is shared by all worker threads.
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=config.region or "us-east-1",
            aws_access_key_id=config.access_key_id or None,
            aws_secret_access_key=config.secret_access_key or None,
            config=botocore.config.Config(
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
                max_pool_connections=50,
            ),
        )
        if config.create_bucket:
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except self.client.exceptions.BucketAlreadyOwnedByYou:
                pass
            except _UNAVAILABLE as exc:
                raise BackendUnavailable(f"{self.describe()}: {exc}") from exc

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
            )
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"{self.describe()}: {exc}") from exc

    def _get(self, key: str, range_header: str | None = None) -> bytes:
        kwargs = {"Range": range_header} if range_header else {}
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key), **kwargs)[
                "Body"
            ].read()
        except self.client.exceptions.NoSuchKey as exc:
            raise NotFound(key) from exc
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"{self.describe()}: {exc}") from exc

    def get(self, key: str) -> bytes:
        return self._get(key)

    def read_range(self, key: str, start: int, end: int) -> bytes:
        return self._get(key, f"bytes={start}-{end}")

    def size(self, key: str) -> int:
        try:
            return int(
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"]
            )
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise NotFound(key) from exc
            raise
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"{self.describe()}: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"{self.describe()}: {exc}") from exc

    def ping(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (botocore.exceptions.ClientError, *_UNAVAILABLE) as exc:
            raise BackendUnavailable(f"{self.describe()}: {exc}") from exc

    def describe(self) -> str:
        return f"s3 {self.endpoint or 'aws'} bucket {self.bucket}"

    def close(self) -> None:
        self.client.close()
