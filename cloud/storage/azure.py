"""Azure Blob Storage object store (azure-storage-blob; Azurite in tests)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from cloud.config import StorageConfig
from cloud.errors import BackendUnavailable, NotFound
from cloud.storage.base import ObjectStore, check_key

try:
    from azure.core.exceptions import (
        ResourceExistsError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )
    from azure.identity import DefaultAzureCredential
    from azure.storage.blob import BlobServiceClient, ContentSettings
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "Azure storage needs azure-storage-blob and azure-identity: "
        "pip install 'wildcam-fieldstation[cloud]'"
    ) from exc

_UNAVAILABLE = (ServiceRequestError, ServiceResponseError)


def _credential(config: StorageConfig) -> str | DefaultAzureCredential | None:
    """The account key if one is set; none for a SAS URL; else Azure's identity chain."""
    if config.account_key:
        return config.account_key
    if "sig=" in urlsplit(config.account_url).query:
        return None
    # Azure Workload Identity (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE), a
    # managed identity or `az login`; the token is fetched on the first request, not here
    return DefaultAzureCredential()


class AzureBlobStore(ObjectStore):
    def __init__(self, config: StorageConfig) -> None:
        self.prefix = config.prefix.strip("/")
        # Few, quick retries: the station retries the whole batch anyway after a 503.
        options: dict[str, Any] = {
            "retry_total": 2,
            "retry_backoff_factor": 0.2,
            "connection_timeout": 5,
        }
        if config.connection_string:
            service = BlobServiceClient.from_connection_string(config.connection_string, **options)
        else:
            service = BlobServiceClient(
                config.account_url, credential=_credential(config), **options
            )
        self.service = service
        self.container = service.get_container_client(config.container)
        self.container_name = config.container
        if config.create_bucket:
            try:
                self.container.create_container()
            except ResourceExistsError:
                pass
            except _UNAVAILABLE as exc:
                raise BackendUnavailable(f"{self.describe()}: {exc}") from exc

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        try:
            self.container.upload_blob(
                self._key(key),
                data,
                overwrite=True,
                content_settings=ContentSettings(content_type=content_type),
            )
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"{self.describe()}: {exc}") from exc

    def _download(self, key: str, offset: int | None = None, length: int | None = None) -> bytes:
        try:
            return self.container.download_blob(
                self._key(key), offset=offset, length=length
            ).readall()
        except ResourceNotFoundError as exc:
            raise NotFound(key) from exc
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"{self.describe()}: {exc}") from exc

    def get(self, key: str) -> bytes:
        return self._download(key)

    def read_range(self, key: str, start: int, end: int) -> bytes:
        return self._download(key, offset=start, length=end - start + 1)

    def size(self, key: str) -> int:
        try:
            return int(self.container.get_blob_client(self._key(key)).get_blob_properties().size)
        except ResourceNotFoundError as exc:
            raise NotFound(key) from exc
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"{self.describe()}: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self.container.delete_blob(self._key(key))
        except ResourceNotFoundError:
            pass
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"{self.describe()}: {exc}") from exc

    def ping(self) -> None:
        try:
            self.container.get_container_properties()
        except (ResourceNotFoundError, *_UNAVAILABLE) as exc:
            raise BackendUnavailable(f"{self.describe()}: {exc}") from exc

    def describe(self) -> str:
        return f"azure {self.service.url} container {self.container_name}"

    def close(self) -> None:
        self.service.close()
