"""The proxy's memory of the calls it just served (feedback that arrives before the span is stored)."""

from __future__ import annotations

import pytest

from genops.proxy.recent import RecentCalls
from genops.storage.scores import SpanRef

pytestmark = pytest.mark.unit


def ref(n: int, trace: int | None = None) -> SpanRef:
    return SpanRef(f"{trace if trace is not None else n:032x}", f"{n:016x}")


def test_the_oldest_calls_are_forgotten_first_and_a_repeated_id_counts_as_new() -> None:
    recent = RecentCalls(capacity=3)
    for n in range(3):
        recent.add(f"req-{n}", ref(n))
    recent.add("req-0", ref(10))  # served again: now the newest, with its new span
    recent.add("req-3", ref(3))
    assert recent.request("req-1") is None, "the oldest one went"
    assert recent.request("req-0") == ref(10) and recent.request("req-2") == ref(2) and recent.request("req-3") == ref(3)
    assert not recent.has_trace(f"{1:032x}") and recent.has_trace(f"{10:032x}")


def test_a_trace_seen_again_stays_while_older_traces_go() -> None:
    recent = RecentCalls(capacity=2)
    recent.add("a", ref(1, trace=7))
    recent.add("b", ref(2, trace=8))
    recent.add("c", ref(3, trace=7))  # the agent's trace 7 again: it is recent, 8 is the oldest now
    recent.add("d", ref(4, trace=9))
    assert recent.has_trace(f"{7:032x}") and recent.has_trace(f"{9:032x}") and not recent.has_trace(f"{8:032x}")


def test_long_churn_keeps_exactly_the_latest_calls() -> None:
    recent = RecentCalls(capacity=1000)
    for n in range(100_000):  # a hundred times the capacity, as a busy proxy does within minutes
        recent.add(f"req-{n}", ref(n))
    assert recent.request("req-98999") is None and recent.request("req-99000") == ref(99000)
    assert recent.request("req-99999") == ref(99999)
    assert len(recent._requests) == len(recent._traces) == 1000  # the bound itself


def test_a_reports_calls_are_remembered_as_if_added_one_by_one() -> None:
    """A worker's report adds its calls in one go; the memory ends exactly as with one add per call:
    repeated ids keep their distinct spans and users, traces their users, and the bound holds."""
    # four ids served again and again (they keep several calls), nine traces (more than the bound)
    served = [[f"req-{n % 4}", f"{n % 9:032x}", f"{n:016x}", *(["alice"] if n % 3 else [])] for n in range(40)]
    one_by_one, batched = RecentCalls(capacity=6), RecentCalls(capacity=6)
    for request_id, trace_id, span_id, *user in served:
        one_by_one.add(request_id, SpanRef(trace_id, span_id), user[0] if user else "")
    batched.add_served(served[:13])
    batched.add_served(served[13:])
    assert list(batched._requests.items()) == list(one_by_one._requests.items())
    assert list(batched._traces.items()) == list(one_by_one._traces.items())
    assert len(batched._requests) == 4 and len(batched._traces) == 6
    assert len(batched.calls("req-1")) > 1 and {c.user_id for c in batched.calls("req-1")} == {"", "alice"}


def test_a_malformed_served_call_is_refused_and_the_ones_before_it_are_kept() -> None:
    recent = RecentCalls()
    with pytest.raises(ValueError, match="3 or 4 strings"):
        recent.add_served([["req-a", "1" * 32, "2" * 16], ["req-b", 7, "3" * 16], ["req-c", "4" * 32, "5" * 16]])
    assert recent.request("req-a") == SpanRef("1" * 32, "2" * 16)
    assert recent.request("req-b") is None and recent.request("req-c") is None
    with pytest.raises(ValueError):
        recent.add_served([["req-d", "1" * 32]])
