"""The statistical gates of a canary rollout: is the canary worse than the baseline, beyond a margin?

Pure functions over per-arm summaries (:class:`ArmStats`, read from ``genops_calls`` and the
scores by the rollout evaluator); no I/O, standard library only (``math.erfc``, ``math.lgamma``).

Every gate is a one-sided non-inferiority test::

    H0: canary <= baseline + margin    (no worse than tolerated)
    H1: canary >  baseline + margin    (worse than tolerated)

("worse" is higher for errors, latency, cost and safety findings, lower for scores). A gate
FAILS only when H0 is rejected, ``p < alpha``: a rollout is rolled back on evidence that the
canary is worse, never for lack of evidence that it is as good. A gate PASSES otherwise, and is
INSUFFICIENT below its minimum sample (``GatePolicy.min_calls`` / ``min_scores`` on either arm),
whatever the data look like.

Multiple testing: ``alpha`` is per gate and per evaluation, without a correction inside. By
Bonferroni the chance that a canary sitting exactly on its margins fails at least one of the five
gates in one evaluation is at most ``5 * alpha``. A healthy canary is usually as good as the
baseline, not on the margin, and there each gate's chance of a false failure is far below
``alpha`` (the margin moves H0's boundary away from the truth). Repeated looks add up the same
way: an evaluator that checks every minute of a step should lower ``alpha`` (e.g. ``alpha`` /
expected looks) or decide once per step. A false failure costs a rollback, the safe direction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

GATES = ("error_rate", "p95_latency", "cost_per_call", "score", "safety_findings")
# What must pass before a step advances; "score" may stay insufficient (few feedback scores),
# cost_per_call only when it was evaluated (evaluate_gates reports it as passed when disabled).
REQUIRED = ("error_rate", "p95_latency", "cost_per_call", "safety_findings")

# Share of calls above a p95 by definition: the p95 gate tests the canary's share against this + margin.
P95_SHARE = 0.05
# Above this many degrees of freedom Student's t is replaced by the normal (critical values differ < 0.2%).
T_NORMAL_DF = 1000.0


class ArmStats(NamedTuple):
    """What one arm (canary or baseline) did during the evaluation window."""

    calls: int = 0
    errors: int = 0                 # calls whose span status is ERROR
    p95_ms: float | None = None     # this arm's p95 call duration
    over_baseline_p95: int = 0      # canary arm only: its calls slower than the BASELINE arm's p95
    cost_n: int = 0                 # calls with a known cost
    cost_mean: float = 0.0          # USD per call
    cost_var: float = 0.0           # sample variance
    score_n: int = 0                # feedback / evaluation scores
    score_mean: float = 0.0
    score_var: float = 0.0
    flagged: int = 0                # calls with any safety finding


class GatePolicy(NamedTuple):
    """Minimum samples, significance and the tolerated degradation of each gate."""

    min_calls: int = 200            # per arm, before the error/latency/cost/safety gates may decide
    min_scores: int = 30            # per arm, before the score gate may decide
    alpha: float = 0.01             # one-sided significance per gate (module docstring: multiple testing)
    error_margin: float = 0.01      # tolerated absolute increase of the error rate (1 point)
    latency_margin: float = 0.05    # tolerated increase of the share of canary calls over the baseline p95 (0.05 -> 0.10)
    cost_margin: float | None = 0.25  # tolerated relative increase of the mean cost per call (+25%); None: no cost gate
    score_margin: float = 0.05      # tolerated absolute decrease of the mean score
    safety_margin: float = 0.01     # tolerated absolute increase of the flagged-call rate


class GateResult(NamedTuple):
    """One gate's decision, with the figures behind it."""

    name: str          # "error_rate" | "p95_latency" | "cost_per_call" | "score" | "safety_findings"
    verdict: str       # "pass" | "fail" | "insufficient"
    canary: float | None
    baseline: float | None
    p_value: float | None
    detail: str        # one line for a human: "error rate 20.3% vs 1.1% (+1.0 pt tolerated; p=3e-09 < 0.01)"


# -- distributions ---------------------------------------------------------------------

def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z: ``erfc(z / sqrt 2) / 2``."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exact.

    Terms ``C(n, i) p^i (1-p)^(n-i)`` are computed in log space (``math.lgamma``) and summed
    from ``k`` away from the mode, where they fall geometrically, until they no longer change
    the sum: a few hundred terms even for a million calls. When ``k`` is at or below the mode
    the lower tail P(X <= k-1) is summed instead and subtracted from 1.
    """
    if k <= 0 or p >= 1.0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    log_p, log_q, log_n = math.log(p), math.log1p(-p), math.lgamma(n + 1)

    def term(i: int) -> float:
        return math.exp(log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q)

    mode = math.floor((n + 1) * p)
    total = 0.0
    if k > mode:
        for i in range(k, n + 1):
            value = term(i)
            total += value
            if value <= total * 1e-17:
                break
        return min(1.0, total)
    for i in range(k - 1, -1, -1):
        value = term(i)
        total += value
        if value <= total * 1e-17:
            break
    return max(0.0, 1.0 - total)


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom: ``I_{df/(df+t^2)}(df/2, 1/2) / 2`` for t > 0.

    Normal above :data:`T_NORMAL_DF` degrees of freedom (and for an infinite ``df``).
    """
    if not math.isfinite(df) or df > T_NORMAL_DF:
        return normal_sf(t)
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


# -- tests -----------------------------------------------------------------------------

def restricted_proportions(x_c: int, n_c: int, x_b: int, n_b: int, delta: float) -> tuple[float, float]:
    """The maximum-likelihood (p_c, p_b) under the constraint ``p_c = p_b + delta`` (H0's boundary).

    The constrained log-likelihood ``x_c log(p_b+d) + (n_c-x_c) log(1-p_b-d) + x_b log p_b +
    (n_b-x_b) log(1-p_b)`` is concave in p_b, so its maximum is where the derivative changes sign:
    found by bisection over the feasible interval (Farrington & Manning 1990 solve the same
    equation as a cubic). With ``delta = 0`` it is the pooled proportion ``(x_c+x_b) / (n_c+n_b)``.
    """
    low, high = max(0.0, -delta), min(1.0, 1.0 - delta)

    def slope(p_b: float) -> float:
        p_c = p_b + delta
        value = 0.0
        if x_c:
            value += x_c / p_c
        if n_c - x_c:
            value -= (n_c - x_c) / (1.0 - p_c)
        if x_b:
            value += x_b / p_b
        if n_b - x_b:
            value -= (n_b - x_b) / (1.0 - p_b)
        return value

    for _ in range(100):
        middle = (low + high) / 2.0
        if slope(middle) > 0:
            low = middle
        else:
            high = middle
    p_b = (low + high) / 2.0
    return min(1.0, max(0.0, p_b + delta)), p_b


def proportion_p(x_c: int, n_c: int, x_b: int, n_b: int, margin: float) -> float:
    """One-sided p-value of H0: ``p_c - p_b <= margin`` (Farrington-Manning score test, continuity-corrected).

    ``z = (x_c/n_c - x_b/n_b - margin - cc) / sqrt(q_c (1-q_c) / n_c + q_b (1-q_b) / n_b)`` with
    (q_c, q_b) the restricted estimate at H0's boundary (:func:`restricted_proportions`), so the
    variance is the one H0 implies (neither pooled, which assumes equal rates, nor the unpooled
    Wald variance, which is zero when both arms have no errors); ``cc = (1/n_c + 1/n_b) / 2`` is
    Yates's continuity correction, which keeps the test conservative when counts are small.
    With ``margin = 0`` this is the pooled two-proportion z-test with continuity correction.
    p = P(Z > z).
    """
    if margin >= 1.0:
        return 1.0
    q_c, q_b = restricted_proportions(x_c, n_c, x_b, n_b, margin)
    variance = q_c * (1.0 - q_c) / n_c + q_b * (1.0 - q_b) / n_b
    excess = x_c / n_c - x_b / n_b - margin - 0.5 * (1.0 / n_c + 1.0 / n_b)
    if variance <= 0.0:
        return 0.0 if excess > 0 else 1.0
    return normal_sf(excess / math.sqrt(variance))


def welch_p(mean_a: float, var_a: float, n_a: int, mean_b: float, var_b: float, n_b: int, *,
            scale: float = 1.0, shift: float = 0.0) -> float:
    """One-sided p-value of H0: ``mean_a <= scale * mean_b + shift`` (Welch's t-test, unequal variances).

    ``t = (mean_a - scale mean_b - shift) / sqrt(v_a + v_b)`` with ``v_a = var_a / n_a``,
    ``v_b = scale^2 var_b / n_b``; Welch-Satterthwaite degrees of freedom
    ``(v_a + v_b)^2 / (v_a^2 / (n_a-1) + v_b^2 / (n_b-1))``; p = P(T > t) (:func:`t_sf`, normal
    for large df). Zero variance on both arms: p is 0 when the difference is positive, else 1.
    """
    diff = mean_a - scale * mean_b - shift
    v_a = max(var_a, 0.0) / n_a
    v_b = scale * scale * max(var_b, 0.0) / n_b
    variance = v_a + v_b
    if variance <= 0.0:
        return 0.0 if diff > 0 else 1.0
    denominator = (v_a * v_a / (n_a - 1) if n_a > 1 else 0.0) + (v_b * v_b / (n_b - 1) if n_b > 1 else 0.0)
    df = variance * variance / denominator if denominator > 0 else math.inf
    return t_sf(diff / math.sqrt(variance), df)


# -- the gates -------------------------------------------------------------------------

def _decided(name: str, canary: float | None, baseline: float | None, p: float, alpha: float, text: str) -> GateResult:
    failed = p < alpha
    return GateResult(name, "fail" if failed else "pass", canary, baseline, p,
                      f"{text}; p={p:.2g} {'<' if failed else '>='} {alpha:g})")


def _insufficient(name: str, what: str, canary: int, baseline: int, needed: int) -> GateResult:
    return GateResult(name, "insufficient", None, None, None,
                      f"{name.replace('_', ' ')}: {canary} canary and {baseline} baseline {what}, {needed} needed per arm")


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def error_rate_gate(canary: ArmStats, baseline: ArmStats, policy: GatePolicy) -> GateResult:
    """Share of calls with an ERROR status: :func:`proportion_p` against ``error_margin`` (absolute)."""
    if canary.calls < policy.min_calls or baseline.calls < policy.min_calls:
        return _insufficient("error_rate", "calls", canary.calls, baseline.calls, policy.min_calls)
    rate_c, rate_b = canary.errors / canary.calls, baseline.errors / baseline.calls
    p = proportion_p(canary.errors, canary.calls, baseline.errors, baseline.calls, policy.error_margin)
    return _decided("error_rate", rate_c, rate_b, p, policy.alpha,
                    f"error rate {rate_c:.1%} vs {rate_b:.1%} (+{policy.error_margin * 100:g} pt tolerated")


def p95_latency_gate(canary: ArmStats, baseline: ArmStats, policy: GatePolicy) -> GateResult:
    """Canary calls slower than the baseline's p95: exact binomial test of that share against 0.05 + ``latency_margin``.

    If the canary were as fast as the baseline, 5% of its calls would land above the baseline's
    p95; H0 is ``share <= 0.05 + latency_margin`` and p = P(X >= over | calls, 0.05 + margin)
    (:func:`binomial_sf`). The baseline's p95 is itself an estimate; with ``min_calls`` baseline
    calls its noise is small next to the margin. Reports both arms' p95 in ms.
    """
    if canary.calls < policy.min_calls or baseline.calls < policy.min_calls:
        return _insufficient("p95_latency", "calls", canary.calls, baseline.calls, policy.min_calls)
    over = min(max(canary.over_baseline_p95, 0), canary.calls)
    limit = min(1.0, P95_SHARE + policy.latency_margin)
    p = binomial_sf(over, canary.calls, limit)
    return _decided("p95_latency", canary.p95_ms, baseline.p95_ms, p, policy.alpha,
                    f"p95 latency {_ms(canary.p95_ms)} vs {_ms(baseline.p95_ms)}: {over / canary.calls:.1%} of canary calls "
                    f"over the baseline p95 ({limit:.0%} tolerated")


def cost_gate(canary: ArmStats, baseline: ArmStats, policy: GatePolicy) -> GateResult:
    """Mean USD per call: Welch's t-test of H0 ``mean_c <= (1 + cost_margin) mean_b`` (relative margin).

    Counts only calls with a known cost (``cost_n``). With ``cost_margin`` None the gate is off
    and reports the means as passed, so it never holds a step back.
    """
    if policy.cost_margin is None:
        mean_c = canary.cost_mean if canary.cost_n else None
        mean_b = baseline.cost_mean if baseline.cost_n else None
        shown = " vs ".join("n/a" if m is None else f"${m:.4g}" for m in (mean_c, mean_b))
        return GateResult("cost_per_call", "pass", mean_c, mean_b, None, f"cost per call {shown} (not gated: cost_margin None)")
    if canary.cost_n < policy.min_calls or baseline.cost_n < policy.min_calls:
        return _insufficient("cost_per_call", "calls with a known cost", canary.cost_n, baseline.cost_n, policy.min_calls)
    p = welch_p(canary.cost_mean, canary.cost_var, canary.cost_n, baseline.cost_mean, baseline.cost_var, baseline.cost_n,
                scale=1.0 + policy.cost_margin)
    return _decided("cost_per_call", canary.cost_mean, baseline.cost_mean, p, policy.alpha,
                    f"cost per call ${canary.cost_mean:.4g} vs ${baseline.cost_mean:.4g} (+{policy.cost_margin:.0%} tolerated")


def score_gate(canary: ArmStats, baseline: ArmStats, policy: GatePolicy) -> GateResult:
    """Mean feedback/evaluation score: Welch's t-test of H0 ``mean_c >= mean_b - score_margin`` (absolute margin)."""
    if canary.score_n < policy.min_scores or baseline.score_n < policy.min_scores:
        return _insufficient("score", "scores", canary.score_n, baseline.score_n, policy.min_scores)
    # Worse is lower: the evidence is baseline - canary > margin, i.e. mean_b > mean_c + margin.
    p = welch_p(baseline.score_mean, baseline.score_var, baseline.score_n, canary.score_mean, canary.score_var,
                canary.score_n, shift=policy.score_margin)
    return _decided("score", canary.score_mean, baseline.score_mean, p, policy.alpha,
                    f"mean score {canary.score_mean:.3g} vs {baseline.score_mean:.3g} (-{policy.score_margin:g} tolerated")


def safety_gate(canary: ArmStats, baseline: ArmStats, policy: GatePolicy) -> GateResult:
    """Share of calls with a safety finding: :func:`proportion_p` against ``safety_margin`` (absolute)."""
    if canary.calls < policy.min_calls or baseline.calls < policy.min_calls:
        return _insufficient("safety_findings", "calls", canary.calls, baseline.calls, policy.min_calls)
    flagged_c, flagged_b = min(canary.flagged, canary.calls), min(baseline.flagged, baseline.calls)
    rate_c, rate_b = flagged_c / canary.calls, flagged_b / baseline.calls
    p = proportion_p(flagged_c, canary.calls, flagged_b, baseline.calls, policy.safety_margin)
    return _decided("safety_findings", rate_c, rate_b, p, policy.alpha,
                    f"flagged calls {rate_c:.1%} vs {rate_b:.1%} (+{policy.safety_margin * 100:g} pt tolerated")


DEFAULT_POLICY = GatePolicy()


def evaluate_gates(canary: ArmStats, baseline: ArmStats, policy: GatePolicy = DEFAULT_POLICY) -> list[GateResult]:
    """Every gate, in the order of :data:`GATES` (the cost gate too when disabled: it passes)."""
    return [error_rate_gate(canary, baseline, policy), p95_latency_gate(canary, baseline, policy),
            cost_gate(canary, baseline, policy), score_gate(canary, baseline, policy), safety_gate(canary, baseline, policy)]


def verdict(results: Sequence[GateResult]) -> str:
    """"fail" if any gate failed; "pass" if every required gate passed ("score" may be insufficient); else "wait".

    Required: error_rate, p95_latency, safety_findings, and cost_per_call when it is among the results.
    """
    if any(r.verdict == "fail" for r in results):
        return "fail"
    by_name = {r.name: r.verdict for r in results}
    required = [name for name in REQUIRED if name != "cost_per_call" or name in by_name]
    return "pass" if all(by_name.get(name) == "pass" for name in required) else "wait"
