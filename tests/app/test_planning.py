"""plan_request: version routing, seeds, degradation tiers and cache keys, without Ray or Redis."""

from __future__ import annotations

import random

import pytest

from serve.app.api_models import VideoCreate
from serve.app.errors import ApiError
from serve.app.planning import Plan, plan_request
from serve.policy import DegradationTier, ServingPolicy, TierRoute
from serve.step_cache import StepCache
from serve.tenancy import compute_units

VERSIONS = ["stable", "candidate"]
POLICY = ServingPolicy(weights={"stable": 100})


def _plan(policy=POLICY, tenant="team-a", **fields):  # type: ignore[no-untyped-def]
    body = VideoCreate(prompt="a cat on a skateboard", size="512x256", num_frames=17, **fields)
    return plan_request(body.to_request(), tenant, policy, VERSIONS, random.Random(0))


def test_a_request_without_a_seed_gets_the_same_seed_every_time():
    assert _plan().params.seed == _plan().params.seed
    assert _plan().key == _plan().key


def test_the_seed_changes_the_cache_key_and_the_tenant_scopes_it():
    assert _plan(seed=1).key != _plan(seed=2).key
    assert _plan(tenant="team-a").key != _plan(tenant="team-b").key
    assert _plan(tenant="team-a", shared_cache=True).key == _plan(tenant="team-b", shared_cache=True).key


def test_weights_route_every_request_to_the_only_weighted_version():
    assert {_plan().model_version for _ in range(20)} == {"stable"}
    assert _plan(ServingPolicy(weights={"candidate": 100})).model_version == "candidate"


def test_an_unserved_model_is_a_400_naming_the_served_ones():
    with pytest.raises(ApiError) as refused:
        _plan(model="sora-2")
    assert refused.value.code == "model_not_found" and "stable, candidate" in refused.value.message


def test_a_tier_shrinks_what_is_served_but_not_what_was_requested():
    tier = DegradationTier(name="reduced", level=1, max_size="256x128", max_frames=9, max_steps=4)
    plan = _plan(ServingPolicy(weights={"stable": 100}, tier=tier), num_inference_steps=20)
    assert (plan.requested.width, plan.requested.height, plan.requested.num_frames) == (512, 256, 17)
    assert (plan.params.width, plan.params.height, plan.params.num_frames, plan.params.num_inference_steps) == (
        256, 128, 9, 4)
    assert plan.served is not None and plan.served.tier == "reduced"
    assert plan.key != _plan(num_inference_steps=20).key


def test_an_off_grid_size_is_a_400_on_the_size_param():
    with pytest.raises(ApiError) as refused:
        plan_request(VideoCreate(prompt="x", size="250x256").to_request(), "t", POLICY, VERSIONS, random.Random(0))
    assert refused.value.param == "size" and "multiple of 32" in refused.value.message


def _plan_size(size: str, policy: ServingPolicy = POLICY, **limits: int) -> Plan:
    request = VideoCreate(prompt="x", size=size, num_frames=17).to_request()
    return plan_request(request, "t", policy, VERSIONS, random.Random(0), **limits)


def test_a_frame_larger_than_the_native_area_is_a_400_naming_the_limit_and_sizes_that_fit():
    with pytest.raises(ApiError) as refused:
        _plan_size("1280x1280")
    error = refused.value
    assert (error.status, error.code, error.param) == (400, "invalid_request", "size")
    for text in ("1638400", "901120", "1280x704", "704x1280"):
        assert text in error.message


@pytest.mark.parametrize("size", ["1280x704", "704x1280", "1024x576"])
def test_the_native_area_in_either_orientation_is_accepted(size):
    assert _plan_size(size).requested.size == size


def test_the_frame_area_limit_is_configurable():
    assert _plan_size("1280x1280", max_frame_area=1280 * 1280).requested.size == "1280x1280"
    with pytest.raises(ApiError) as refused:
        _plan_size("1280x704", max_frame_area=512 * 256)
    assert refused.value.param == "size" and "131072" in refused.value.message


def test_the_frame_area_limit_applies_to_the_request_before_any_tier():
    tier = DegradationTier(name="reduced", level=1, max_size="256x128", max_frames=9, max_steps=4)
    with pytest.raises(ApiError):
        _plan_size("1280x1280", ServingPolicy(weights={"stable": 100}, tier=tier))


def test_the_plan_costs_what_was_requested_not_what_a_tier_serves():
    tier = DegradationTier(name="reduced", level=1, max_size="256x128", max_frames=9, max_steps=4)
    plan = _plan(ServingPolicy(weights={"stable": 100}, tier=tier), num_inference_steps=20)
    assert plan.compute_units == pytest.approx(compute_units(plan.requested))
    assert plan.compute_units == pytest.approx(512 * 256 / (1280 * 704) * 17 / 121 * 20 / 50)
    assert compute_units(plan.params) < plan.compute_units


# -- the quality ladder: step caching, a routed version, tiers per lane ----------------------------

FIRST_BLOCK = StepCache(method="first_block", threshold=0.1)
DISTILLED = DegradationTier(name="distilled", level=2, step_cache=FIRST_BLOCK, lanes=("realtime",),
                            route=TierRoute(model_version="candidate", num_inference_steps=4, guidance_scale=1.0))


def test_a_step_caching_tier_puts_its_setting_in_the_plan_the_served_record_and_the_cache_key():
    tier = DegradationTier(name="cached", level=1, step_cache=FIRST_BLOCK)
    plan = _plan(ServingPolicy(weights={"stable": 100}, tier=tier))
    assert plan.params.step_cache == FIRST_BLOCK and plan.requested.step_cache is None
    assert plan.served is not None and plan.served.step_cache == "first_block@0.1"
    assert plan.key != _plan().key


def test_a_tier_routes_realtime_requests_to_its_version_with_that_versions_steps_and_guidance():
    plan = _plan(ServingPolicy(weights={"stable": 100}, tier=DISTILLED), num_inference_steps=30)
    assert plan.model_version == "candidate"
    assert (plan.params.num_inference_steps, plan.params.guidance_scale) == (4, 1.0)
    assert plan.served is not None
    assert (plan.served.model_version, plan.served.tier, plan.served.num_inference_steps, plan.served.step_cache) == (
        "candidate", "distilled", 4, "first_block@0.1")
    assert plan.params.seed == _plan(num_inference_steps=30).params.seed


def test_batch_requests_keep_full_quality_under_a_realtime_only_tier():
    plan = _plan(ServingPolicy(weights={"stable": 100}, tier=DISTILLED), priority="batch", num_inference_steps=30)
    assert plan.model_version == "stable" and plan.served is None
    assert plan.params == _plan(priority="batch", num_inference_steps=30).params


def test_a_request_that_names_its_version_is_not_rerouted():
    plan = _plan(ServingPolicy(weights={"stable": 100}, tier=DISTILLED), model="stable")
    assert plan.model_version == "stable"
    assert plan.served is not None and plan.served.model_version == "stable"


def test_a_route_to_a_version_not_served_here_keeps_the_weighted_version():
    tier = DISTILLED.model_copy(update={"route": TierRoute(model_version="fastwan", num_inference_steps=4)})
    plan = _plan(ServingPolicy(weights={"stable": 100}, tier=tier), num_inference_steps=30)
    assert plan.model_version == "stable" and plan.params.num_inference_steps == 30
