"""A proxy worker's span pipeline takes the export settings the store's own pipeline takes."""

from __future__ import annotations

from pathlib import Path

import pytest

from genops.config import Settings
from genops.runtime.workers import worker_pipeline
from genops.storage.forward import ForwardingSink
from genops.storage.pipeline import build_pipeline
from genops.storage.spool import Spool

pytestmark = pytest.mark.unit


def test_worker_pipeline_uses_the_export_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), export_probe_interval_ms=123, export_batch_size=77,
                        export_interval_ms=450, export_queue_size=999, export_timeout_s=7.0)
    spool = Spool(tmp_path / "spool-worker", max_bytes=1 << 20)
    pipeline = worker_pipeline(settings, "http://127.0.0.1:9", "secret", spool)
    try:
        assert isinstance(pipeline.sink, ForwardingSink) and pipeline.sink.timeout_s == 7.0
        # the same values the store's pipeline gets from the same settings
        store = build_pipeline(settings, sink=pipeline.sink, start=False)
        try:
            for name in ("probe_interval_s",):
                assert getattr(pipeline, name) == getattr(store, name) == 0.123
        finally:
            store.spool.close()
    finally:
        spool.close()
