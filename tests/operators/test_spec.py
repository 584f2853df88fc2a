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
