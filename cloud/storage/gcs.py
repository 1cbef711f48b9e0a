"""Google Cloud Storage object store (google-cloud-storage; gcp-storage-emulator in tests)."""

from __future__ import annotations

from cloud.config import StorageConfig
from cloud.errors import BackendUnavailable, NotFound
from cloud.storage.base import ObjectStore, check_key

try:
    import google.api_core.exceptions as gexc
    import requests
    from google.auth.exceptions import TransportError
    from google.cloud import storage
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "GCS storage needs google-cloud-storage: pip install 'wildcam-fieldstation[cloud]'"
    ) from exc

_UNAVAILABLE = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, TransportError)


class GCSStore(ObjectStore):
    def __init__(self, config: StorageConfig) -> None:
        self.prefix = config.prefix.strip("/")
        self.endpoint = config.endpoint_url or None
        if self.endpoint:
            # An emulator or private endpoint: no Google credentials involved.
            from google.auth.credentials import AnonymousCredentials

            self.client = storage.Client(
                project=config.project or "fieldstation",
                credentials=AnonymousCredentials(),
                client_options={"api_endpoint": self.endpoint},
            )
        else:
            self.client = storage.Client(project=config.project or None)
        self.bucket_name = config.bucket
        self.bucket = self.client.bucket(config.bucket)
        if config.create_bucket:
            try:
                self.client.create_bucket(config.bucket)
            except gexc.Conflict:
                pass
            except _UNAVAILABLE as exc:
                raise BackendUnavailable(f"{self.describe()}: {exc}") from exc

    def _blob(self, key: str) -> storage.Blob:
        check_key(key)
        return self.bucket.blob(f"{self.prefix}/{key}" if self.prefix else key)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        try:
            self._blob(key).upload_from_string(data, content_type=content_type, timeout=30)
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"{self.describe()}: {exc}") from exc

    def _download(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        try:
            return self._blob(key).download_as_bytes(start=start, end=end, timeout=30)
        except gexc.NotFound as exc:
            raise NotFound(key) from exc
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"{self.describe()}: {exc}") from exc

    def get(self, key: str) -> bytes:
        return self._download(key)

    def read_range(self, key: str, start: int, end: int) -> bytes:
        # google-cloud-storage's `end` is inclusive, like HTTP Range.
        return self._download(key, start, end)

    def size(self, key: str) -> int:
        try:
            blob = self.bucket.get_blob(self._blob(key).name, timeout=30)
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"{self.describe()}: {exc}") from exc
        if blob is None:
            raise NotFound(key)
        return int(blob.size)

    def delete(self, key: str) -> None:
        try:
            self._blob(key).delete(timeout=30)
        except gexc.NotFound:
            pass
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"{self.describe()}: {exc}") from exc

    def ping(self) -> None:
        try:
            if not self.bucket.exists(timeout=10):
                raise BackendUnavailable(f"{self.describe()}: bucket does not exist")
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"{self.describe()}: {exc}") from exc

    def describe(self) -> str:
        return f"gcs {self.endpoint or 'google'} bucket {self.bucket_name}"

    def close(self) -> None:
        self.client.close()
