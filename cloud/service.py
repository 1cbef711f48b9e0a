"""The service's parts, opened once from the config and passed to the API (one wiring place)."""

from __future__ import annotations

from dataclasses import dataclass

from cloud.config import CloudConfig
from cloud.db import Database, open_database
from cloud.ingest import BatchIngest
from cloud.metrics import ServiceMetrics
from cloud.ratelimit import Limiter, open_limiter
from cloud.storage import ObjectStore, open_store


@dataclass
class Service:
    config: CloudConfig
    db: Database
    store: ObjectStore
    metrics: ServiceMetrics
    limiter: Limiter
    ingest: BatchIngest

    @classmethod
    def open(cls, config: CloudConfig) -> Service:
        """Open the database and object store the config names (creating tables as needed)."""
        db = open_database(config.database_url())
        try:
            store = open_store(config)
        except BaseException:
            db.close()
            raise
        metrics = ServiceMetrics()
        limits = config.limits
        return cls(
            config=config,
            db=db,
            store=store,
            metrics=metrics,
            limiter=open_limiter(
                db.rate_buckets(), limits.rate_limit_per_minute, limits.rate_limit_burst
            ),
            ingest=BatchIngest(db, store, metrics, limits.max_item_bytes, limits.max_items),
        )

    def close(self) -> None:
        self.ingest.close()
        self.store.close()
        self.db.close()
