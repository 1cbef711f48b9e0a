"""The upload worker alone in a process, so a test can SIGKILL it mid-batch.

Usage: python upload_child.py CONFIG.toml BUFFER.sqlite3 RESULT.json
On SIGTERM it stops and writes its item counts by status to RESULT.json.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

from agent.config import parse_config
from agent.metrics import Metrics
from agent.store import Store
from agent.upload.worker import Uploader


def main() -> None:
    config_path, buffer_path, result_path = sys.argv[1:4]
    config = parse_config(Path(config_path).read_text(), config_path)
    store = Store(Path(buffer_path), check_on_start=False)
    metrics = Metrics()
    uploader = Uploader(store, config, metrics)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    uploader.run(stop)
    counts: dict[str, float] = {}
    for metric in metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "fieldstation_upload_items_total":
                key = sample.labels["status"]
                counts[key] = counts.get(key, 0) + sample.value
    Path(result_path).write_text(json.dumps(counts))


if __name__ == "__main__":
    main()
