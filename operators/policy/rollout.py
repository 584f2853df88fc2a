"""Canary rollouts (Flagger/Argo-style) and fixed A/B splits between a stable and a candidate version.

A canary moves the candidate's weight through ``steps`` (default 5, 25, 50, 100 %), one step per
``interval``. A step passes when the candidate served at least ``min_requests`` in the step's window
and its error rate and p95 latency stay within the configured ratios of the stable version's over
the same window. A breach at any time rolls back to 0 % (``Failed``); too little traffic or no data
holds; reaching 100 % (or passing the last step) is ``Promoted``. A fixed split never promotes.
"""

from __future__ import annotations

from collections.abc import Mapping

from operators.metrics.snapshot import MetricsSnapshot, VersionTraffic
from operators.policy.state import DecisionEvent, RolloutState
from operators.spec import RolloutSpec

EMPTY = VersionTraffic()


def stable_only(spec: RolloutSpec, reason: str) -> RolloutState:
    return RolloutState(weights={spec.stable_version: 100.0}, reason=reason)


def judge_window(candidate: VersionTraffic, stable: VersionTraffic, spec: RolloutSpec) -> tuple[str, str]:
    """("breach" | "pass" | "wait", why) for one step's window of traffic."""
    if candidate.requests < spec.min_requests:
        return "wait", f"{candidate.requests:.0f} of {spec.min_requests} requests on the candidate"
    if stable.requests <= 0:
        return "wait", "no stable traffic in the window to compare with"
    candidate_rate = candidate.error_rate or 0.0
    stable_rate = stable.error_rate or 0.0
    allowed_rate = max(stable_rate * spec.max_error_rate_ratio, spec.error_rate_floor)
    if candidate_rate > allowed_rate:
        return "breach", (
            f"error rate {candidate_rate:.1%} > {allowed_rate:.1%} "
            f"(stable {stable_rate:.1%} x {spec.max_error_rate_ratio})"
        )
    candidate_p95 = candidate.latency.quantile(0.95)
    stable_p95 = stable.latency.quantile(0.95)
    if candidate_p95 is None or stable_p95 is None:
        return "wait", "no latency observations in the window yet"
    if candidate_p95 > stable_p95 * spec.max_p95_latency_ratio:
        return "breach", (
            f"p95 {candidate_p95:.1f}s > {stable_p95 * spec.max_p95_latency_ratio:.1f}s "
            f"(stable {stable_p95:.1f}s x {spec.max_p95_latency_ratio})"
        )
    return "pass", (
        f"{candidate.requests:.0f} requests, error rate {candidate_rate:.1%}, p95 {candidate_p95:.1f}s "
        f"(stable {stable_rate:.1%}, {stable_p95:.1f}s)"
    )


def _step_weights(spec: RolloutSpec, candidate: str, percent: float) -> dict[str, float]:
    return {spec.stable_version: 100.0 - percent, candidate: percent}


def _start_step(
    spec: RolloutSpec, candidate: str, step: int, traffic: Mapping[str, VersionTraffic], now: float, why: str
) -> tuple[RolloutState, list[DecisionEvent]]:
    percent = spec.steps[step]
    if percent >= 100:
        reason = f"candidate {candidate} promoted to 100%: {why}"
        weights = _step_weights(spec, candidate, 100.0)
        return RolloutState(candidate, "Promoted", step, now, {}, weights, reason), [
            DecisionEvent("rollout-promote", reason)
        ]
    reason = f"candidate {candidate} at {percent:g}% (step {step + 1} of {len(spec.steps)}): {why}"
    baseline = {v: traffic.get(v, EMPTY) for v in (spec.stable_version, candidate)}
    state = RolloutState(candidate, "Progressing", step, now, baseline, _step_weights(spec, candidate, percent))
    return _with_reason(state, reason), [DecisionEvent("rollout-step", reason)]


def _with_reason(state: RolloutState, reason: str) -> RolloutState:
    return RolloutState(
        state.candidate, state.phase, state.step, state.step_started_at, state.baseline, state.weights, reason
    )


def decide_rollout(
    previous: RolloutState, snapshot: MetricsSnapshot, spec: RolloutSpec, now: float
) -> tuple[RolloutState, list[DecisionEvent]]:
    candidate = spec.candidate_version
    if candidate is None:
        return stable_only(spec, f"no candidate: {spec.stable_version} serves all traffic"), []
    if previous.candidate != candidate:
        previous = RolloutState(candidate=candidate, weights={spec.stable_version: 100.0})

    if spec.fixed_split is not None:
        weights = _step_weights(spec, candidate, spec.fixed_split)
        reason = f"fixed split: {spec.stable_version} {100 - spec.fixed_split:g}%, {candidate} {spec.fixed_split:g}%"
        state = RolloutState(candidate, "Fixed", -1, None, {}, weights, reason)
        changed = previous.phase != "Fixed" or dict(previous.weights) != weights
        return state, [DecisionEvent("rollout-fixed", reason)] if changed else []

    if previous.phase in ("Promoted", "Failed"):
        return previous, []
    if not snapshot.has_data:
        return _with_reason(previous, f"no metrics ({snapshot.error}): holding"), []
    if previous.phase == "Pending" or previous.step_started_at is None:
        return _start_step(spec, candidate, 0, snapshot.traffic, now, "rollout started")

    def window(version: str) -> VersionTraffic:
        return snapshot.traffic.get(version, EMPTY).minus(previous.baseline.get(version, EMPTY))

    verdict, why = judge_window(window(candidate), window(spec.stable_version), spec)
    if verdict == "breach":
        reason = f"candidate {candidate} rolled back at {spec.steps[previous.step]:g}%: {why}"
        weights = _step_weights(spec, candidate, 0.0)
        state = RolloutState(candidate, "Failed", previous.step, previous.step_started_at, {}, weights, reason)
        return state, [DecisionEvent("rollout-rollback", reason, "warning")]

    waited = now - previous.step_started_at
    if waited < spec.interval_seconds or verdict == "wait":
        percent = spec.steps[previous.step]
        due = max(0.0, spec.interval_seconds - waited)
        reason = f"candidate {candidate} at {percent:g}%: {why}" + (f"; next check in {due:.0f}s" if due else "")
        return _with_reason(previous, reason), []

    next_step = previous.step + 1
    if next_step >= len(spec.steps):
        reason = f"candidate {candidate} promoted to 100%: all {len(spec.steps)} steps passed ({why})"
        weights = _step_weights(spec, candidate, 100.0)
        state = RolloutState(candidate, "Promoted", previous.step, now, {}, weights, reason)
        return state, [DecisionEvent("rollout-promote", reason)]
    return _start_step(spec, candidate, next_step, snapshot.traffic, now, f"step passed: {why}")
