"""Fault injection is a drill tool: off unless the app is started with allow_fault_injection."""

import pytest

from serve.app.args import AppArgs
from serve.app.errors import ApiError
from serve.app.ingress import check_fault_injection
from serve.policy import FaultInjection, ServingPolicy

FAULTY = ServingPolicy(weights={"v1": 100}, faults=(FaultInjection(model_version="v1", error_rate=1.0),))


def test_fault_injection_is_off_by_default():
    assert AppArgs().allow_fault_injection is False


def test_a_policy_with_faults_is_refused_when_not_allowed():
    with pytest.raises(ApiError) as refused:
        check_fault_injection(FAULTY, allowed=False)
    assert refused.value.status == 400 and refused.value.code == "fault_injection_disabled"
    assert refused.value.param == "faults"


def test_a_policy_with_faults_is_accepted_when_allowed_and_one_without_always():
    check_fault_injection(FAULTY, allowed=True)
    check_fault_injection(ServingPolicy(weights={"v1": 100}), allowed=False)
