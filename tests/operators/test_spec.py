"""The policy spec: defaults from the issue, camelCase fields, errors that name the field."""

from __future__ import annotations

import pytest

from operators.spec import SpecError, parse_spec
from serve.policy import DEFAULT_TIERS


def test_defaults_match_the_data_plane_tiers() -> None:
    spec = parse_spec({})
    assert tuple(t.to_degradation_tier(level) for level, t in enumerate(spec.tiers)) == DEFAULT_TIERS
    assert [(t.enter_load, t.exit_load) for t in spec.tiers] == [(None, None), (0.8, 0.6), (1.2, 0.9)]
    assert (spec.failover.consecutive_failures, spec.rollout.steps) == (3, (5, 25, 50, 100))


def test_camel_case_fields_are_read() -> None:
    spec = parse_spec({
        "rayServiceName": "wan", "controlIntervalSeconds": 2,
        "metrics": {"source": "prometheus", "prometheusUrl": "http://prom:9090"},
        "failover": {"consecutiveFailures": 5, "recoveryWindowSeconds": 30},
        "rollout": {"stableVersion": "a", "candidateVersion": "b", "candidateModelDir": "/m/b", "fixedSplit": 10},
    })
    assert (spec.ray_service_name, spec.control_interval_seconds) == ("wan", 2)
    assert (spec.failover.consecutive_failures, spec.rollout.fixed_split) == (5, 10)


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ({"tiers": [{"name": "full"}, {"name": "r", "enterLoad": 0.5, "exitLoad": 0.7}]}, "tiers[1].exitLoad"),
        ({"tiers": [{"name": "full"}, {"name": "r", "enterLoad": 0.8}]}, "tiers[1] (r) needs both"),
        ({"tiers": [{"name": "full", "enterLoad": 0.1}]}, "tiers[0]"),
        ({"tiers": [{"name": "full"}, {"name": "a", "enterLoad": 1, "exitLoad": 0.5},
                    {"name": "b", "enterLoad": 0.9, "exitLoad": 0.5}]}, "tiers[2].enterLoad"),
        ({"tiers": [{"name": "full"}, {"name": "r", "maxSize": "big", "enterLoad": 1, "exitLoad": 0.5}]},
         "tiers.1.maxSize"),
        ({"rollout": {"steps": [50, 25]}}, "rollout.steps[1]"),
        ({"rollout": {"fixedSplit": 10}}, "rollout.fixedSplit needs rollout.candidateVersion"),
        ({"metrics": {"source": "prometheus"}}, "metrics.prometheusUrl"),
        ({"failover": {"consecutiveFailures": 0}}, "failover.consecutiveFailures"),
        ({"controlInterval": 5}, "controlInterval: Extra inputs are not permitted"),
    ],
)
def test_bad_spec_names_the_field(raw: dict[str, object], names: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(raw)
    assert names in str(error.value)


def test_a_tier_with_step_caching_a_route_and_lanes_reaches_the_data_plane_tier() -> None:
    spec = parse_spec({"tiers": [
        {"name": "full"},
        {"name": "fast", "enterLoad": 1.0, "exitLoad": 0.5, "lanes": ["realtime"],
         "stepCache": {"method": "first_block", "threshold": 0.1},
         "route": {"modelVersion": "fastwan", "numInferenceSteps": 4, "guidanceScale": 1.0}},
    ]})
    tier = spec.tiers[1].to_degradation_tier(1)
    assert tier.lanes == ("realtime",)
    assert tier.step_cache is not None and tier.step_cache.label == "first_block@0.1"
    assert tier.route is not None
    assert (tier.route.model_version, tier.route.num_inference_steps, tier.route.guidance_scale) == ("fastwan", 4, 1.0)


@pytest.mark.parametrize(
    ("tier", "names"),
    [
        ({"stepCache": {"threshold": 0}}, "stepCache.threshold"),
        ({"stepCache": {"method": "teacache"}}, "stepCache.method"),
        ({"route": {"numInferenceSteps": 4}}, "route.modelVersion"),
        ({"lanes": ["interactive"]}, "lanes.0"),
    ],
)
def test_a_bad_quality_knob_names_its_field(tier: dict[str, object], names: str) -> None:
    with pytest.raises(SpecError) as error:
        parse_spec({"tiers": [{"name": "full"}, {"name": "x", "enterLoad": 1, "exitLoad": 0.5, **tier}]})
    assert names in str(error.value)
