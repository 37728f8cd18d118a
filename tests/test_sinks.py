"""The pipeline's sinks declare their abilities in the :class:`Sink` protocol; nothing probes a sink for them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from genops.storage.forward import ForwardingSink
from genops.storage.otlp_sink import OtlpSink
from genops.storage.pipeline import SpanPipeline
from genops.storage.sinks import JSON, ClickHouseSink, Sink
from genops.storage.spool import Spool

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
ABILITIES = ("accepts_parts", "accepts_regions", "forwards", "python_fallbacks", "span_fallbacks")


@pytest.mark.parametrize("sink, expected", [
    (ClickHouseSink(None, "db"), (False, False, False, 0, 0)),
    (ForwardingSink("http://127.0.0.1:1", "secret"), (True, True, True, 0, 0)),
    (OtlpSink("http://127.0.0.1:1"), (False, False, False, 0, 0)),
])
def test_every_sink_declares_its_abilities(sink: Sink, expected: tuple[object, ...]) -> None:
    assert Sink in type(sink).__mro__  # declared, not merely shaped alike
    assert tuple(getattr(sink, name) for name in ABILITIES) == expected
    assert sink.ping() is False  # nothing answers: no store, port 1


class MinimalSink(Sink):
    """A sink that declares nothing: the protocol's defaults apply."""

    def __init__(self) -> None:
        self.batches: list[tuple[bytes, str, str, int]] = []

    def insert(self, payload: bytes, token: str, kind: str = JSON, spans: int = 0) -> None:  # type: ignore[override]
        self.batches.append((payload, token, kind, spans))


def test_a_sink_that_declares_nothing_gets_whole_batches_and_a_probe_that_says_no(tmp_path: Path) -> None:
    sink = MinimalSink()
    assert (sink.accepts_parts, sink.accepts_regions, sink.forwards, sink.python_fallbacks, sink.ping()) == \
        (False, False, False, 0, False)
    spool = Spool(tmp_path, max_bytes=1 << 20, cache_bytes=0)  # nothing cached: read back from disk
    pipeline = SpanPipeline(sink, spool, batch_size=2, interval_s=0.05)
    pipeline.start()
    try:
        assert pipeline.submit([{"n": 1}, {"n": 2}], "test") == 2
        assert pipeline.flush(10)
    finally:
        pipeline.shutdown(1)
    assert [(type(payload), kind, spans) for payload, _, kind, spans in sink.batches] == [(bytes, JSON, 2)]


def _probes(path: Path) -> list[str]:
    """``getattr``/``hasattr`` calls on something named ``sink`` (``sink``, ``self.sink``, ``pipeline.sink``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
                and node.args):
            target = node.args[0]
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            if name == "sink":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_sink_is_probed_for_an_ability() -> None:
    probes = [probe for folder in ("storage", "collectors") for path in sorted((ROOT / folder).rglob("*.py"))
              for probe in _probes(path)]
    assert probes == []

