"""``genops serve --workers N``: processes share the port, one supervisor keeps the store."""

from __future__ import annotations

import signal

import openai
import pytest
from conftest import start_proxy
from test_cli import genops

pytestmark = pytest.mark.e2e


def test_two_workers_share_the_port_and_every_span_is_stored(tmp_path, fake_upstream):
    proc = start_proxy(tmp_path / "data", {"GENOPS_OPENAI_BASE_URL": fake_upstream.url}, args=("--workers", "2"))
    try:
        for i in range(30):  # a new client (connection) per call lets the kernel spread them
            with openai.OpenAI(base_url=proc.url + "/v1", api_key="sk-worker-secret", max_retries=0) as client:
                result = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"n{i}"}])
                assert result.choices[0].message.content.endswith(f"n{i}")
        stream = openai.OpenAI(base_url=proc.url + "/v1", api_key="sk-x").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "s"}], stream=True)
        assert len(list(stream)) > 3
        # Admin paths on the public port are answered by the supervisor (the store's owner).
        rows = proc.wait_rows("SELECT ResourceAttributes['service.instance.id'] AS worker FROM otel_traces", 31)
        assert len({r["worker"] for r in rows}) == 2
    finally:
        assert proc.stop(signal.SIGTERM) == 0
    result = genops("sql", "-f", "json", "SELECT count() AS n FROM otel_traces WHERE SpanName = 'chat gpt-4o-mini'",
                    env={"GENOPS_DATA_DIR": str(tmp_path / "data")})
    assert result.stdout.strip().replace(" ", "").replace("\n", "") == '[{"n":31}]'
    assert "sk-worker-secret" not in proc.logs()
