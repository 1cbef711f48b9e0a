"""Object stores for images and model artifacts: one module per backend behind `ObjectStore`."""

from __future__ import annotations

from cloud.config import CloudConfig
from cloud.db import sqlite_path
from cloud.storage.base import ObjectStore, check_key


def open_store(config: CloudConfig) -> ObjectStore:
    """Open the object store the config names; backend libraries are imported only when used."""
    storage = config.storage
    if storage.backend == "local":
        from cloud.storage.local import LocalStore

        return LocalStore(config.storage_path(), fsync=storage.fsync)
    if storage.backend == "pack":
        from cloud.storage.pack import PackStore

        # On SQLite the index rows commit with the capture rows: one sync for both.
        index = sqlite_path(config.database_url())
        return PackStore(config.storage_path(), fsync=storage.fsync, index=index)
    if storage.backend == "s3":
        from cloud.storage.s3 import S3Store

        return S3Store(storage)
    if storage.backend == "azure":
        from cloud.storage.azure import AzureBlobStore

        return AzureBlobStore(storage)
    if storage.backend == "gcs":
        from cloud.storage.gcs import GCSStore

        return GCSStore(storage)
    raise ValueError(f"[storage] backend = {storage.backend!r}: no such backend")


__all__ = ["ObjectStore", "check_key", "open_store"]
