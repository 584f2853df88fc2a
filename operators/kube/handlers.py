"""kopf handlers for VideoServingPolicy: validate the spec, then one control step per interval.

The handlers only move data: parse the spec, read metrics, call the pure engine, patch the
RayService, post Events, write the status. Run them with ``wanserve-operator kubernetes``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import kopf

from operators.actuators import ActuatorError
from operators.actuators.serve_config import Candidate
from operators.kube import GROUP, PLURAL, VERSION
from operators.kube.connection import load_connection
from operators.kube.rayservice import RayServiceActuator
from operators.kube.status import condition, decision_status, event_reason, initial_status, previous_condition
from operators.metrics.sources import source_for
from operators.policy import decide, load_state
from operators.spec import PolicySpec, SpecError, parse_spec
from operators.telemetry import DEFAULT_PORT, DecisionMetrics

# The timer wakes every tick and acts when the spec's controlIntervalSeconds has passed: kopf fixes
# a timer's interval when the handler is registered, while the spec may change at any time.
TICK_SECONDS = float(os.environ.get("WANSERVE_OPERATOR_TICK_SECONDS", "1.0"))
METRICS_PORT = int(os.environ.get("WANSERVE_OPERATOR_METRICS_PORT", str(DEFAULT_PORT)))
RAY_SERVE_PORT = 8000


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Serve the namespaces given on the command line as they are, without listing or watching all
    # namespaces and CRDs: the RBAC then needs no cluster-wide read access.
    settings.scanning.disabled = True
    memo["metrics"] = DecisionMetrics()
    if METRICS_PORT:
        memo["metrics"].serve(METRICS_PORT)


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    # The same resolution the RayService client uses, so both talk to one cluster as one identity.
    return load_connection().to_kopf()


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@kopf.on.resume(GROUP, VERSION, PLURAL)
async def accept_spec(
    spec: kopf.Spec, status: kopf.Status, body: kopf.Body, patch: kopf.Patch, **_: Any
) -> None:
    """A valid spec gets a filled status at once; a bad one is refused with the field named."""
    now = time.time()
    try:
        policy_spec = parse_spec(dict(spec))
    except SpecError as error:
        kopf.warn(body, reason="InvalidSpec", message=str(error))
        patch.status["conditions"] = [
            condition("SpecValid", False, "Invalid", str(error), now, previous_condition(status, "SpecValid"))
        ]
        raise kopf.PermanentError(str(error)) from None
    if not status.get("tier"):
        patch.status.update(initial_status(policy_spec, now))


def _scrape_url(spec: PolicySpec, namespace: str) -> str | None:
    # KubeRay puts the Serve apps behind "<rayservice>-serve-svc" on port 8000.
    if not spec.ray_service_name:
        return None
    return f"http://{spec.ray_service_name}-serve-svc.{namespace}.svc:{RAY_SERVE_PORT}/metrics"


@kopf.timer(GROUP, VERSION, PLURAL, id="control", interval=TICK_SECONDS)
async def control(
    spec: kopf.Spec, status: kopf.Status, body: kopf.Body, namespace: str | None, memo: kopf.Memo,
    patch: kopf.Patch, logger: kopf.Logger, **_: Any,
) -> None:
    """One control step when the spec's interval has passed: metrics -> engine -> RayService."""
    if not status.get("tier"):
        return  # accept_spec fills the status first; acting before it would race its patch
    try:
        policy_spec = parse_spec(dict(spec))
    except SpecError:
        return  # accept_spec has refused it and said why; nothing to control until it is fixed
    now = time.time()
    if now - memo.get("last_step", 0.0) < policy_spec.control_interval_seconds:
        return
    memo["last_step"] = now

    # The in-memory state is the freshest; the status copy carries it over an operator restart.
    state = memo.get("state") or load_state(status.get("engineState"))
    namespace = namespace or "default"  # the CRD is namespaced; this only satisfies the type
    source = source_for(policy_spec.metrics, _scrape_url(policy_spec, namespace))
    snapshot = await source.read(now)
    decision = decide(state, snapshot, policy_spec, now)
    memo["state"] = decision.state

    apply_error = ""
    if policy_spec.ray_service_name:
        rollout = policy_spec.rollout
        candidate = (
            Candidate(rollout.candidate_version, rollout.candidate_model_dir) if rollout.candidate_version else None
        )
        try:
            if "connection" not in memo:
                memo["connection"] = load_connection()
            actuator = RayServiceActuator(memo["connection"])
            await actuator.apply(namespace, policy_spec.ray_service_name, policy_spec.application_name,
                                 decision.policy, candidate)
        except ActuatorError as error:
            apply_error = str(error)
    else:
        apply_error = "spec.rayServiceName is not set: decisions are recorded but not applied"

    for event in decision.events:
        post = kopf.warn if event.severity == "warning" else kopf.info
        post(body, reason=event_reason(event.kind), message=event.reason)
    if apply_error and apply_error != memo.get("last_apply_error"):
        kopf.warn(body, reason="ApplyFailed", message=apply_error)
    memo["last_apply_error"] = apply_error
    if "metrics" in memo:
        memo["metrics"].record(decision, policy_spec)
    logger.info("%s", decision.policy.reason)
    patch.status.update(decision_status(decision, status, now, snapshot.error, apply_error))
