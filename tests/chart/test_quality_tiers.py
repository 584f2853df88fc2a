"""Tiers with the quality ladder's knobs (step caching, a route, lanes) from values to the operator's spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from operators.spec import parse_spec

TIERS: list[dict[str, Any]] = [
    {"name": "full"},
    {"name": "cached", "stepCache": {"method": "first_block", "threshold": 0.1}, "enterLoad": 0.8, "exitLoad": 0.6},
    {"name": "distilled", "lanes": ["realtime"], "enterLoad": 1.2, "exitLoad": 0.9,
     "route": {"modelVersion": "wan2.2-ti2v-5b-distill", "numInferenceSteps": 4, "guidanceScale": 1.0}},
]


def _values(tmp_path: Path, tiers: list[dict[str, Any]]) -> Path:
    path = tmp_path / "tiers.yaml"
    path.write_text(yaml.safe_dump({"policy": {"tiers": tiers}}))
    return path


def test_the_quality_knobs_reach_the_policy_and_the_data_plane_tier(render, tmp_path, policy_validator):
    policy = render(values_files=(_values(tmp_path, TIERS),)).one("VideoServingPolicy")
    assert policy["spec"]["tiers"] == TIERS
    assert list(policy_validator.iter_errors(policy)) == []
    spec = parse_spec(policy["spec"])
    cached, distilled = (tier.to_degradation_tier(level) for level, tier in enumerate(spec.tiers) if level)
    assert cached.step_cache is not None and cached.step_cache.threshold == 0.1
    assert distilled.lanes == ("realtime",) and distilled.route is not None
    assert distilled.route.model_version == "wan2.2-ti2v-5b-distill"


def test_the_values_schema_refuses_a_threshold_outside_0_to_1(render_error, tmp_path):
    bad = [TIERS[0], {**TIERS[1], "stepCache": {"threshold": 2}}]
    assert "threshold" in render_error(values_file=_values(tmp_path, bad))
