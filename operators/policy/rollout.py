"""Canary rollouts (Flagger / Argo Rollouts style) and fixed A/B splits between a stable and a candidate.

**Steps.** The candidate's weight moves through ``steps`` (default 5, 25, 50, 100 %). A step advances
at the first check that passes once the step has lasted ``interval_seconds``; reaching a step of
100 %, or passing the last step, is ``Promoted``.

**Checks.** Every control interval the engine judges the traffic since the last check (the check
window). Once the candidate served ``min_requests`` there, the window passes or fails: its error rate
and p95 latency against the stable version's in the same window. ``failed_checks_threshold`` failed
checks over the rollout roll it back (``Failed``, the candidate at 0 %); one bad window does not.
Too few candidate requests (some, fewer than ``min_requests``) hold: the window grows until it has
enough.

**Missing data** (our stance, as Flagger's): a control interval with no metrics, or without a single
candidate request in the check window, is missing data. The rollout holds (``stalled``: the
RolloutStalled condition) for ``missing_data_intervals`` intervals; every further one counts as a failed
check, so a rollout whose evidence is gone rolls back instead of staying at a share nobody can judge.

**Edits.** When ``steps`` changes mid-rollout, the rollout goes on from the highest step at or below
the candidate's current weight; it never indexes past the list. **Memory.** A candidate that failed
is remembered outside the policy (``failed``, kept by the operator in the policy store); a rollout of
it is refused, even from a re-created policy, unless ``retry_failed_candidate`` is set.

A fixed split never promotes and never rolls back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from operators.metrics.snapshot import MetricsSnapshot, VersionTraffic
from operators.policy.state import DecisionEvent, RolloutState
from operators.spec import RolloutSpec

EMPTY = VersionTraffic()


def stable_only(spec: RolloutSpec, reason: str) -> RolloutState:
    return RolloutState(weights={spec.stable_version: 100.0}, reason=reason)


def judge_window(candidate: VersionTraffic, stable: VersionTraffic, spec: RolloutSpec) -> tuple[str, str]:
    """("breach" | "pass" | "wait", why) for one check window of traffic."""
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


def _weights(spec: RolloutSpec, candidate: str, percent: float) -> dict[str, float]:
    return {spec.stable_version: 100.0 - percent, candidate: percent}


def _start_step(
    spec: RolloutSpec, previous: RolloutState, candidate: str, step: int, traffic: Mapping[str, VersionTraffic],
    now: float, why: str,
) -> tuple[RolloutState, list[DecisionEvent]]:
    percent = spec.steps[step]
    if percent >= 100:
        return _promote(spec, previous, candidate, step, now, why)
    reason = f"candidate {candidate} at {percent:g}% (step {step + 1} of {len(spec.steps)}): {why}"
    state = replace(
        previous, candidate=candidate, phase="Progressing", step=step, step_started_at=now,
        baseline={v: traffic.get(v, EMPTY) for v in (spec.stable_version, candidate)},
        weights=_weights(spec, candidate, percent), reason=reason, missing_intervals=0,
    )
    return state, [DecisionEvent("rollout-step", reason)]


def _promote(
    spec: RolloutSpec, previous: RolloutState, candidate: str, step: int, now: float, why: str
) -> tuple[RolloutState, list[DecisionEvent]]:
    reason = f"candidate {candidate} promoted to 100%: {why}"
    state = replace(previous, candidate=candidate, phase="Promoted", step=step, step_started_at=now, baseline={},
                    weights=_weights(spec, candidate, 100.0), reason=reason, missing_intervals=0)
    return state, [DecisionEvent("rollout-promote", reason)]


def _roll_back(
    spec: RolloutSpec, previous: RolloutState, candidate: str, why: str
) -> tuple[RolloutState, list[DecisionEvent]]:
    percent = previous.weights.get(candidate, 0.0)
    reason = f"candidate {candidate} rolled back at {percent:g}%: {why}"
    state = replace(previous, phase="Failed", baseline={}, weights=_weights(spec, candidate, 0.0), reason=reason)
    return state, [DecisionEvent("rollout-rollback", reason, "warning")]


def _failed_check(
    spec: RolloutSpec, state: RolloutState, candidate: str, why: str
) -> tuple[RolloutState, list[DecisionEvent]]:
    count = state.failed_checks + 1
    if count >= spec.failed_checks_threshold:
        return _roll_back(spec, replace(state, failed_checks=count), candidate,
                          f"{count} failed checks (threshold {spec.failed_checks_threshold}), the last: {why}")
    reason = f"candidate {candidate}: failed check {count} of {spec.failed_checks_threshold}: {why}"
    return replace(state, failed_checks=count, reason=reason), [
        DecisionEvent("rollout-check-failed", reason, "warning")
    ]


def _missing(
    spec: RolloutSpec, previous: RolloutState, candidate: str, why: str
) -> tuple[RolloutState, list[DecisionEvent]]:
    missing = previous.missing_intervals + 1
    allowed = spec.missing_data_intervals
    if missing <= allowed:
        return replace(previous, missing_intervals=missing,
                       reason=f"{why}: holding ({missing} of {allowed} intervals without evidence)"), []
    return _failed_check(spec, replace(previous, missing_intervals=missing), candidate,
                         f"{why} for {missing} intervals (more than {allowed})")


def current_step(spec: RolloutSpec, state: RolloutState) -> int:
    """The state's step in ``spec.steps``; after an edit of the steps, the highest step at or below the
    candidate's current weight (or the first)."""
    percent = state.weights.get(state.candidate or "", 0.0)
    if 0 <= state.step < len(spec.steps) and spec.steps[state.step] == percent:
        return state.step
    below = [index for index, step in enumerate(spec.steps) if step <= percent]
    return below[-1] if below else 0


def decide_rollout(
    previous: RolloutState,
    snapshot: MetricsSnapshot,
    spec: RolloutSpec,
    now: float,
    failed: Mapping[str, str] | None = None,
) -> tuple[RolloutState, list[DecisionEvent]]:
    """One control interval of the rollout. ``failed``: candidates that failed before, and why."""
    candidate = spec.candidate_version
    if candidate is None:
        return stable_only(spec, f"no candidate: {spec.stable_version} serves all traffic"), []
    if previous.candidate != candidate:
        previous = RolloutState(candidate=candidate, weights={spec.stable_version: 100.0})

    if spec.fixed_split is not None:
        weights = _weights(spec, candidate, spec.fixed_split)
        reason = f"fixed split: {spec.stable_version} {100 - spec.fixed_split:g}%, {candidate} {spec.fixed_split:g}%"
        state = RolloutState(candidate, "Fixed", -1, None, {}, weights, reason)
        changed = previous.phase != "Fixed" or dict(previous.weights) != weights
        return state, [DecisionEvent("rollout-fixed", reason)] if changed else []

    if previous.phase in ("Promoted", "Failed"):
        return previous, []
    earlier = (failed or {}).get(candidate)
    if earlier is not None and not spec.retry_failed_candidate:
        reason = (f"candidate {candidate} failed an earlier rollout ({earlier}): not retried; give the fixed "
                  "checkpoint a new candidateVersion, or set rollout.retryFailedCandidate: true")
        state = replace(previous, phase="Failed", baseline={}, weights=_weights(spec, candidate, 0.0), reason=reason)
        return state, [DecisionEvent("rollout-refused", reason, "warning")]

    if previous.phase == "Pending" or previous.step_started_at is None:
        if not snapshot.has_data:
            missing = previous.missing_intervals + 1
            return replace(previous, missing_intervals=missing,
                           reason=f"no metrics ({snapshot.error}): waiting to start ({missing} intervals)"), []
        return _start_step(spec, previous, candidate, 0, snapshot.traffic, now, "rollout started")

    step = current_step(spec, previous)
    if spec.steps[step] != previous.weights.get(candidate):
        traffic = snapshot.traffic if snapshot.has_data else previous.baseline
        return _start_step(spec, previous, candidate, step, traffic, now, "rollout.steps changed")

    if not snapshot.has_data:
        return _missing(spec, previous, candidate, f"no metrics ({snapshot.error})")

    def window(version: str) -> VersionTraffic:
        return snapshot.traffic.get(version, EMPTY).minus(previous.baseline.get(version, EMPTY))

    candidate_window = window(candidate)
    if candidate_window.requests <= 0:
        return _missing(spec, previous, candidate, f"no requests on candidate {candidate} since the last check")
    verdict, why = judge_window(candidate_window, window(spec.stable_version), spec)
    percent = spec.steps[step]
    if verdict == "wait":
        return replace(previous, missing_intervals=0, reason=f"candidate {candidate} at {percent:g}%: {why}"), []

    checked = replace(previous, step=step, missing_intervals=0,
                      baseline={v: snapshot.traffic.get(v, EMPTY) for v in (spec.stable_version, candidate)})
    if verdict == "breach":
        return _failed_check(spec, checked, candidate, why)

    waited = now - (previous.step_started_at if previous.step_started_at is not None else now)
    if waited < spec.interval_seconds:
        due = spec.interval_seconds - waited
        reason = f"candidate {candidate} at {percent:g}%: check passed ({why}); next step in {due:.0f}s"
        return replace(checked, reason=reason), []
    if step + 1 >= len(spec.steps):
        return _promote(spec, checked, candidate, step, now, f"all {len(spec.steps)} steps passed ({why})")
    return _start_step(spec, checked, candidate, step + 1, snapshot.traffic, now, f"step passed: {why}")
