"""kopf handlers for VideoServingPolicy: validate the spec, then one control step per interval.

The handlers only move data: hold the policy's Lease, parse the spec, read metrics, call the pure
engine, publish the policy to the policy store (Redis) the router replicas follow, post Events, write
the status. They never write the RayService: Helm owns it. Run them with ``wanserve-operator kubernetes``;
its settings arrive in kopf's memo (``OperatorConfig``), not in module globals.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from operators.actuators import ActuatorError
from operators.actuators.policy_store import REDIS_URL_ENV, StoreActuator, store_from_env
from operators.kube import GROUP, PLURAL, VERSION
from operators.kube.connection import load_connection
from operators.kube.lease import LeaseError, LeaseKeeper, default_identity, lease_name, lease_seconds
from operators.kube.status import condition, decision_status, event_reason, initial_status, previous_condition
from operators.metrics.sources import source_for
from operators.policy import decide, load_state
from operators.spec import PolicySpec, SpecError, parse_spec
from operators.telemetry import DEFAULT_PORT, DecisionMetrics
from serve.policy_store import PolicyVersion

# The timer wakes every tick and acts when the spec's controlIntervalSeconds has passed: kopf fixes
# a timer's interval when the handler is registered, while the spec may change at any time.
TICK_SECONDS = float(os.environ.get("WANSERVE_OPERATOR_TICK_SECONDS", "1.0"))
RAY_SERVE_PORT = 8000


@dataclass(frozen=True)
class OperatorConfig:
    """What ``wanserve-operator kubernetes`` was started with."""

    metrics_port: int = DEFAULT_PORT
    # Who holds the policies' Leases: this pod.
    identity: str = field(default_factory=default_identity)
    # Labels a policy must carry for this operator to control it (the chart: its release's), so two
    # releases in one namespace each control their own policy.
    policy_labels: Mapping[str, str] = field(default_factory=dict)

    def selects(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.policy_labels.items())


def _config(memo: kopf.Memo) -> OperatorConfig:
    config = memo.get("config")
    return config if isinstance(config, OperatorConfig) else OperatorConfig()


def _ours(labels: Mapping[str, str], memo: kopf.Memo, **_: Any) -> bool:
    return _config(memo).selects(labels)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Serve the namespaces given on the command line as they are, without listing or watching all
    # namespaces and CRDs: the RBAC then needs no cluster-wide read access.
    settings.scanning.disabled = True
    memo["metrics"] = DecisionMetrics()
    port = _config(memo).metrics_port
    if port:
        memo["metrics"].serve(port)


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    # The same resolution the Lease client uses, so both talk to one cluster as one identity.
    return load_connection().to_kopf()


@kopf.on.create(GROUP, VERSION, PLURAL, when=_ours)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", when=_ours)
@kopf.on.resume(GROUP, VERSION, PLURAL, when=_ours)
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


def _actuator(memo: kopf.Memo, spec: PolicySpec, config: OperatorConfig) -> StoreActuator | None:
    cached = memo.get("actuator")
    if isinstance(cached, StoreActuator) and cached.store.key == spec.policy_key:
        return cached
    store = store_from_env(spec.policy_key)
    memo["actuator"] = StoreActuator(store, writer=f"operator/{config.identity}") if store is not None else None
    return memo["actuator"]


async def _hold_lease(memo: kopf.Memo, namespace: str, name: str, spec: PolicySpec, logger: kopf.Logger,
                      now: float) -> bool:
    """Whether this operator controls the policy now; a standby forgets its in-memory state."""
    config = _config(memo)
    if "leases" not in memo:
        memo["leases"] = LeaseKeeper(load_connection(), config.identity)
    try:
        held, holder = await memo["leases"].hold(namespace, lease_name(name), lease_seconds(
            spec.control_interval_seconds), now)
    except LeaseError as error:
        logger.warning("cannot confirm this operator controls the policy, skipping the step: %s", error)
        return False
    if not held:
        if memo.get("standby_for") != holder:
            logger.info("policy %s is controlled by %s: standing by", name, holder)
        memo["standby_for"] = holder
        memo.pop("state", None)  # the holder's decisions are in the status from now on
        return False
    memo.pop("standby_for", None)
    return True


@kopf.timer(GROUP, VERSION, PLURAL, id="control", interval=TICK_SECONDS, when=_ours)
async def control(
    spec: kopf.Spec, status: kopf.Status, body: kopf.Body, name: str | None, namespace: str | None,
    memo: kopf.Memo, patch: kopf.Patch, logger: kopf.Logger, **_: Any,
) -> None:
    """One control step when the spec's interval has passed: metrics -> engine -> policy store."""
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
    namespace = namespace or "default"  # the CRD is namespaced; this only satisfies the type
    if not await _hold_lease(memo, namespace, name or "", policy_spec, logger, now):
        return

    config = _config(memo)
    # The in-memory state is the freshest; the status copy carries it over an operator restart.
    state = memo.get("state") or load_state(status.get("engineState"))
    source = source_for(policy_spec.metrics, _scrape_url(policy_spec, namespace))
    snapshot = await source.read(now)
    actuator = _actuator(memo, policy_spec, config)
    failed: dict[str, str] = {}
    delivered: PolicyVersion | None = None
    delivery_error = ""
    if actuator is None:
        delivery_error = f"no policy store: ${REDIS_URL_ENV} is not set, so decisions are recorded, not delivered"
    else:
        try:
            failed = await actuator.failed_candidates()
        except ActuatorError as error:
            delivery_error = str(error)
    decision = decide(state, snapshot, policy_spec, now, failed)
    memo["state"] = decision.state
    if actuator is not None and not delivery_error:
        try:
            delivered = await actuator.apply(decision.policy)
            rollout = decision.state.rollout
            # Level-triggered: a failure the store missed (it was down) is remembered at the next step.
            if rollout.phase == "Failed" and rollout.candidate and rollout.candidate not in failed:
                await actuator.remember_failed(rollout.candidate, rollout.reason)
        except ActuatorError as error:
            delivery_error = str(error)

    for event in decision.events:
        post = kopf.warn if event.severity == "warning" else kopf.info
        post(body, reason=event_reason(event.kind), message=event.reason)
    if delivery_error and delivery_error != memo.get("last_delivery_error"):
        kopf.warn(body, reason="DeliveryFailed", message=delivery_error)
    memo["last_delivery_error"] = delivery_error
    if "metrics" in memo:
        memo["metrics"].record(decision, policy_spec)
    logger.info("%s", decision.policy.reason)
    patch.status.update(decision_status(decision, policy_spec, status, now, snapshot.error, delivered,
                                        delivery_error))
