"""The local actuator against a local HTTP server answering like the ingress's admin endpoint."""

from __future__ import annotations

import pytest

from operators.actuators import ActuatorError
from operators.actuators.local import LocalActuator
from serve.policy import DEFAULT_TIERS, FaultInjection, ServingPolicy
from tests.operators.conftest import FakeIngress

pytestmark = pytest.mark.asyncio(loop_scope="session")

REDUCED = ServingPolicy(tier=DEFAULT_TIERS[1], weights={"v1": 95, "v2": 5}, reason="load 0.9")


async def test_puts_the_policy_with_the_admin_key(ingress: FakeIngress, admin_key: str) -> None:
    applied = await LocalActuator(ingress.url, admin_key).apply(REDUCED)
    assert applied == REDUCED
    assert ingress.puts == [REDUCED.model_dump(mode="json")]
    assert ingress.auth_headers[-1] == f"Bearer {admin_key}"


async def test_same_policy_with_a_new_reason_is_not_put_again(ingress: FakeIngress, admin_key: str) -> None:
    actuator = LocalActuator(ingress.url, admin_key)
    await actuator.apply(REDUCED)
    assert await actuator.apply(REDUCED.model_copy(update={"reason": "still busy"})) is None
    assert len(ingress.puts) == 1


async def test_a_running_drill_keeps_its_faults(ingress: FakeIngress, admin_key: str) -> None:
    drill = (FaultInjection(model_version="v1", error_rate=0.5),)
    ingress.policy = ServingPolicy(faults=drill)
    await LocalActuator(ingress.url, admin_key).apply(REDUCED)
    assert ingress.policy.faults == drill
    assert ingress.policy.tier.name == "reduced"


async def test_wrong_key_says_how_to_fix_it(ingress: FakeIngress) -> None:
    with pytest.raises(ActuatorError, match="WANSERVE_ADMIN_KEY"):
        await LocalActuator(ingress.url, "wrong").apply(REDUCED)
    assert ingress.puts == []


async def test_unreachable_ingress_is_an_actuator_error() -> None:
    with pytest.raises(ActuatorError, match=r"127\.0\.0\.1:9"):
        await LocalActuator("http://127.0.0.1:9", timeout_seconds=1).current()
