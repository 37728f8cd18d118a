"""The canary gates (collectors/rollouts/gates.py): decisions on clear cases, minimum samples, and
p-values checked against values worked out by hand from the formulas the docstrings cite."""

from __future__ import annotations

import math
import random

import pytest

from genops.collectors.rollouts.gates import (
    GATES,
    ArmStats,
    GatePolicy,
    GateResult,
    binomial_sf,
    evaluate_gates,
    proportion_p,
    restricted_proportions,
    t_sf,
    verdict,
    welch_p,
)

pytestmark = pytest.mark.unit

# A baseline and a canary that behaves exactly like it, with every gate above its minimum sample.
BASELINE = ArmStats(calls=300, errors=3, p95_ms=400.0, cost_n=300, cost_mean=0.002, cost_var=0.0005 ** 2,
                    score_n=50, score_mean=0.8, score_var=0.04, flagged=2)
HEALTHY = BASELINE._replace(over_baseline_p95=15)  # 5% of its calls above the baseline's p95, as by definition


def gate(results: list[GateResult], name: str) -> GateResult:
    (found,) = [r for r in results if r.name == name]
    return found


def test_every_gate_is_reported_in_order_and_a_healthy_canary_passes() -> None:
    results = evaluate_gates(HEALTHY, BASELINE)
    assert [r.name for r in results] == list(GATES)
    assert [r.verdict for r in results] == ["pass"] * 5, results
    assert all(r.p_value is not None and r.p_value > 0.5 for r in results)
    assert verdict(results) == "pass"


def test_twenty_percent_errors_against_one_percent_fails_the_error_rate_gate() -> None:
    results = evaluate_gates(HEALTHY._replace(errors=60), BASELINE)
    error = gate(results, "error_rate")
    assert error.verdict == "fail" and error.p_value is not None and error.p_value < 1e-9
    assert (error.canary, error.baseline) == (pytest.approx(0.2), pytest.approx(0.01))
    assert error.detail.startswith("error rate 20.0% vs 1.0%") and "< 0.01" in error.detail
    assert [r.name for r in results if r.verdict == "fail"] == ["error_rate"]
    assert verdict(results) == "fail"


def test_equal_error_rates_pass_and_a_rise_within_the_margin_passes() -> None:
    assert gate(evaluate_gates(HEALTHY, BASELINE), "error_rate").verdict == "pass"
    # 1.7% vs 1%: worse, but by less than the tolerated point.
    assert gate(evaluate_gates(HEALTHY._replace(errors=5), BASELINE), "error_rate").verdict == "pass"


def test_a_canary_twice_as_slow_fails_the_p95_gate_and_an_equal_one_passes() -> None:
    # Twice as slow: nearly every canary call is slower than the baseline's p95.
    slow = gate(evaluate_gates(HEALTHY._replace(p95_ms=800.0, over_baseline_p95=270), BASELINE), "p95_latency")
    assert slow.verdict == "fail" and (slow.canary, slow.baseline) == (800.0, 400.0)
    assert "90.0% of canary calls over the baseline p95 (10% tolerated" in slow.detail
    equal = gate(evaluate_gates(HEALTHY, BASELINE), "p95_latency")
    assert equal.verdict == "pass"
    # 8% over the baseline's p95 is within 5% + the 5-point margin.
    assert gate(evaluate_gates(HEALTHY._replace(over_baseline_p95=24), BASELINE), "p95_latency").verdict == "pass"


def test_double_cost_fails_with_a_25_percent_margin_and_passes_with_no_cost_gate() -> None:
    expensive = HEALTHY._replace(cost_mean=0.004, cost_var=0.001 ** 2)
    cost = gate(evaluate_gates(expensive, BASELINE), "cost_per_call")
    assert cost.verdict == "fail" and cost.detail.startswith("cost per call $0.004 vs $0.002 (+25% tolerated")
    results = evaluate_gates(expensive, BASELINE, GatePolicy(cost_margin=None))
    off = gate(results, "cost_per_call")
    assert off.verdict == "pass" and off.p_value is None and "not gated" in off.detail
    assert verdict(results) == "pass"
    # +20% is within the tolerated +25%.
    assert gate(evaluate_gates(HEALTHY._replace(cost_mean=0.0024), BASELINE), "cost_per_call").verdict == "pass"


def test_lower_scores_fail_and_similar_ones_pass() -> None:
    results = evaluate_gates(HEALTHY._replace(score_mean=0.6), BASELINE)
    score = gate(results, "score")
    assert score.verdict == "fail" and (score.canary, score.baseline) == (0.6, 0.8)
    assert verdict(results) == "fail"
    assert gate(evaluate_gates(HEALTHY._replace(score_mean=0.78), BASELINE), "score").verdict == "pass"
    # Higher scores are never a failure.
    assert gate(evaluate_gates(HEALTHY._replace(score_mean=0.95), BASELINE), "score").verdict == "pass"


def test_more_flagged_calls_fail_the_safety_gate() -> None:
    results = evaluate_gates(HEALTHY._replace(flagged=30), BASELINE)
    assert gate(results, "safety_findings").verdict == "fail" and verdict(results) == "fail"


def test_below_the_minimum_sample_every_gate_is_insufficient_and_the_verdict_is_wait() -> None:
    # Terrible figures, but only 150 calls and 20 scores per arm.
    small = ArmStats(calls=150, errors=75, p95_ms=900.0, over_baseline_p95=150, cost_n=150, cost_mean=1.0, cost_var=0.01,
                     score_n=20, score_mean=0.1, score_var=0.01, flagged=75)
    results = evaluate_gates(small, BASELINE._replace(calls=150, cost_n=150, score_n=20))
    assert [r.verdict for r in results] == ["insufficient"] * 5
    assert all(r.p_value is None for r in results)
    assert gate(results, "error_rate").detail == "error rate: 150 canary and 150 baseline calls, 200 needed per arm"
    assert verdict(results) == "wait"
    # Enough calls but no known cost on the canary: the cost gate holds the step.
    unpriced = evaluate_gates(HEALTHY._replace(cost_n=0), BASELINE)
    assert gate(unpriced, "cost_per_call").verdict == "insufficient" and verdict(unpriced) == "wait"


def test_the_score_gate_may_stay_insufficient_while_the_others_pass() -> None:
    results = evaluate_gates(HEALTHY._replace(score_n=5), BASELINE)
    assert gate(results, "score").verdict == "insufficient"
    assert verdict(results) == "pass"


def test_verdict_requires_the_required_gates() -> None:
    passed = [GateResult(name, "pass", None, None, None, "") for name in GATES]
    assert verdict(passed) == "pass"
    assert verdict([r for r in passed if r.name != "p95_latency"]) == "wait"
    assert verdict([r for r in passed if r.name != "cost_per_call"]) == "pass"  # a caller that left the cost gate out
    assert verdict([r._replace(verdict="insufficient") if r.name == "safety_findings" else r for r in passed]) == "wait"
    assert verdict([*passed[:-1], passed[-1]._replace(verdict="fail")]) == "fail"
    assert verdict([]) == "wait"


# -- p-values by hand ---------------------------------------------------------------------------

def test_error_rate_p_value_by_hand_pooled_z_with_continuity_correction() -> None:
    """Margin 0: the Farrington-Manning score test is the pooled two-proportion z-test.

    30/200 vs 10/200: pooled p = 40/400 = 0.1, se = sqrt(0.1 * 0.9 * (1/200 + 1/200)) = 0.03,
    difference 0.15 - 0.05 = 0.10, continuity correction (1/200 + 1/200) / 2 = 0.005,
    z = 0.095 / 0.03 = 3.1667, p = erfc(z / sqrt 2) / 2 = 7.7098e-4.
    """
    assert proportion_p(30, 200, 10, 200, 0.0) == pytest.approx(7.7098e-4, rel=1e-4)
    policy = GatePolicy(min_calls=200, error_margin=0.0)
    result = gate(evaluate_gates(ArmStats(calls=200, errors=30), ArmStats(calls=200, errors=10), policy), "error_rate")
    assert result.p_value == pytest.approx(7.7098e-4, rel=1e-4) and result.verdict == "fail"


def test_restricted_proportions_maximise_the_likelihood_on_the_boundary() -> None:
    """Farrington-Manning's variance uses the MLE under p_c = p_b + margin: check it against a fine grid."""
    for x_c, n_c, x_b, n_b, delta in [(3, 300, 3, 300, 0.01), (60, 300, 3, 300, 0.01), (0, 250, 0, 400, 0.02),
                                      (7, 200, 12, 200, 0.05), (40, 200, 10, 200, 0.0)]:
        q_c, q_b = restricted_proportions(x_c, n_c, x_b, n_b, delta)
        assert q_c - q_b == pytest.approx(delta, abs=1e-12)

        def loglik(p_b: float, x_c: int = x_c, n_c: int = n_c, x_b: int = x_b, n_b: int = n_b, delta: float = delta) -> float:
            p_c = p_b + delta
            terms = [(x_c, p_c), (n_c - x_c, 1 - p_c), (x_b, p_b), (n_b - x_b, 1 - p_b)]
            return sum(k * math.log(p) for k, p in terms if k)

        grid = [i / 20_000 * (1 - delta) for i in range(1, 20_000)]
        best = max(grid, key=loglik)
        assert q_b == pytest.approx(best, abs=1e-4)
        assert loglik(q_b) >= loglik(best) - 1e-9
    assert restricted_proportions(40, 200, 10, 200, 0.0) == (pytest.approx(0.125), pytest.approx(0.125))  # pooled


def test_with_no_errors_on_either_arm_the_margin_keeps_the_variance_positive() -> None:
    assert proportion_p(0, 300, 0, 300, 0.01) > 0.5
    assert proportion_p(0, 300, 0, 300, 0.0) == 1.0


def test_binomial_tail_by_hand() -> None:
    """P(X >= 4) for X ~ Bin(10, 0.1) = 1 - sum_{i<4} C(10,i) 0.1^i 0.9^(10-i)
    = 1 - (0.3486784401 + 0.3874204890 + 0.1937102445 + 0.0573956280) = 0.0127951984."""
    assert binomial_sf(4, 10, 0.1) == pytest.approx(0.0127951984, rel=1e-9)
    assert binomial_sf(1, 10, 0.1) == pytest.approx(1 - 0.9 ** 10, rel=1e-12)  # the lower-tail branch
    assert binomial_sf(0, 10, 0.1) == 1.0 and binomial_sf(11, 10, 0.1) == 0.0
    assert binomial_sf(10, 10, 0.1) == pytest.approx(1e-10)
    # The p95 gate with a tiny minimum: 4 of 10 canary calls over the baseline p95, tested against 5% + 5 points.
    policy = GatePolicy(min_calls=10)
    result = gate(evaluate_gates(ArmStats(calls=10, over_baseline_p95=4), ArmStats(calls=10), policy), "p95_latency")
    assert result.p_value == pytest.approx(0.0127951984, rel=1e-9) and result.verdict == "pass"


def test_student_t_tail_against_closed_forms_and_tables() -> None:
    """df = 1 (Cauchy): P(T > t) = 1/2 - atan(t)/pi; df = 2: P(T > t) = 1/2 - t / (2 sqrt(t^2 + 2))."""
    assert t_sf(1.0, 1) == pytest.approx(0.25, rel=1e-10)
    assert t_sf(3.0, 1) == pytest.approx(0.5 - math.atan(3.0) / math.pi, rel=1e-10)
    assert t_sf(math.sqrt(2), 2) == pytest.approx(0.5 - math.sqrt(2) / 4, rel=1e-10)
    assert t_sf(-1.5, 2) == pytest.approx(0.5 + 1.5 / (2 * math.sqrt(1.5 ** 2 + 2)), rel=1e-10)
    # Printed tables: t(0.99, 29) = 2.462, t(0.95, 10) = 1.812, t(0.975, 60) = 2.000.
    assert t_sf(2.462, 29) == pytest.approx(0.01, abs=2e-5)
    assert t_sf(1.812, 10) == pytest.approx(0.05, abs=1e-4)
    assert t_sf(2.000, 60) == pytest.approx(0.025, abs=1e-4)
    assert t_sf(3.0, 1e9) == pytest.approx(0.5 * math.erfc(3.0 / math.sqrt(2)))


def test_welch_p_value_by_hand() -> None:
    """Canary costs {3, 5} (mean 4, variance 2), baseline {1, 3} (mean 2, variance 2), margin 0:
    t = (4 - 2) / sqrt(2/2 + 2/2) = sqrt 2, Welch df = 2^2 / (1^2/1 + 1^2/1) = 2,
    p = 1/2 - sqrt(2) / (2 sqrt(2 + 2)) = 0.1464466."""
    assert welch_p(4.0, 2.0, 2, 2.0, 2.0, 2) == pytest.approx(0.5 - math.sqrt(2) / 4, rel=1e-10)
    policy = GatePolicy(min_calls=2, cost_margin=0.0)
    result = gate(evaluate_gates(ArmStats(calls=2, cost_n=2, cost_mean=4.0, cost_var=2.0),
                                 ArmStats(calls=2, cost_n=2, cost_mean=2.0, cost_var=2.0), policy), "cost_per_call")
    assert result.p_value == pytest.approx(0.1464466, rel=1e-6) and result.verdict == "pass"
    # The relative margin scales the baseline: H0 mean_c <= 1.5 * 2 = 3, t = (4 - 3) / sqrt(1 + 2.25) ...
    v_a, v_b = 2.0 / 2, 1.5 ** 2 * 2.0 / 2
    df = (v_a + v_b) ** 2 / (v_a ** 2 + v_b ** 2)
    assert welch_p(4.0, 2.0, 2, 2.0, 2.0, 2, scale=1.5) == pytest.approx(t_sf(1 / math.sqrt(v_a + v_b), df), rel=1e-12)
    # Zero variance: the difference alone decides.
    assert welch_p(2.0, 0.0, 5, 1.0, 0.0, 5) == 0.0 and welch_p(1.0, 0.0, 5, 1.0, 0.0, 5) == 1.0


# -- operating characteristics, seeded ------------------------------------------------------------

def _errors(rng: random.Random, calls: int, rate: float) -> int:
    return sum(rng.random() < rate for _ in range(calls))


def test_healthy_canaries_almost_never_fail_and_bad_ones_almost_always_do() -> None:
    rng = random.Random(21)
    healthy = [proportion_p(_errors(rng, 300, 0.02), 300, _errors(rng, 300, 0.02), 300, 0.01) < 0.01 for _ in range(300)]
    assert sum(healthy) <= 1  # at equal rates the 1-point margin keeps false failures far below alpha
    bad = [proportion_p(_errors(rng, 1000, 0.07), 1000, _errors(rng, 1000, 0.01), 1000, 0.01) < 0.01 for _ in range(100)]
    assert sum(bad) >= 95
