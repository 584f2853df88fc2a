"""serveConfigV2 rewriting: the Ingress user_config gets the policy, everything else stays."""

from __future__ import annotations

import pytest
import yaml

from operators.actuators import ActuatorError
from operators.actuators.serve_config import Candidate, current_policy, needs_update, with_policy
from serve.policy import DEFAULT_TIERS, FaultInjection, ServingPolicy

CONFIG = yaml.safe_dump({
    "applications": [{
        "name": "wanserve", "import_path": "serve.app:build_app", "args": {"model_dir": "/m/v1"},
        "deployments": [{"name": "Decoder", "num_replicas": 1}],
    }],
})
POLICY = ServingPolicy(tier=DEFAULT_TIERS[1], weights={"v1": 100.0}, reason="busy")


def test_adds_an_ingress_entry_when_there_is_none() -> None:
    app = yaml.safe_load(with_policy(CONFIG, "wanserve", POLICY, None))["applications"][0]
    assert app["deployments"][0] == {"name": "Decoder", "num_replicas": 1}
    assert app["deployments"][1]["name"] == "Ingress"
    assert ServingPolicy.model_validate(app["deployments"][1]["user_config"]["policy"]) == POLICY
    assert app["args"] == {"model_dir": "/m/v1"}


def test_candidate_args_are_set_and_removed() -> None:
    with_candidate = with_policy(CONFIG, "wanserve", POLICY, Candidate("v2", "/m/v2"))
    args = yaml.safe_load(with_candidate)["applications"][0]["args"]
    assert args["candidate"] == {"name": "v2", "model_dir": "/m/v2"}
    without = with_policy(with_candidate, "wanserve", POLICY, None)
    assert "candidate" not in yaml.safe_load(without)["applications"][0]["args"]


def test_needs_update_ignores_a_new_reason_only() -> None:
    applied = with_policy(CONFIG, "wanserve", POLICY, None)
    assert not needs_update(applied, "wanserve", POLICY.model_copy(update={"reason": "other"}), None)
    assert needs_update(applied, "wanserve", POLICY.model_copy(update={"tier": DEFAULT_TIERS[2]}), None)
    assert needs_update(applied, "wanserve", POLICY, Candidate("v2"))


def test_drill_faults_in_the_rayservice_are_kept() -> None:
    drill = POLICY.model_copy(update={"faults": (FaultInjection(model_version="v1", error_rate=1.0),)})
    with_drill = with_policy(CONFIG, "wanserve", drill, None)
    updated = with_policy(with_drill, "wanserve", POLICY.model_copy(update={"tier": DEFAULT_TIERS[2]}), None)
    policy = current_policy(updated, "wanserve")
    assert policy is not None
    assert (policy.tier.name, policy.faults) == ("minimal", drill.faults)


def test_unknown_application_names_the_ones_there_are() -> None:
    with pytest.raises(ActuatorError, match=r"no application named 'wan'.*\['wanserve'\]"):
        with_policy(CONFIG, "wan", POLICY, None)
