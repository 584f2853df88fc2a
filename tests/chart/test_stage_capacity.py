"""The router's capacity is derived from the stages the chart deploys (serve/app/capacity.py), never a
constant: the inputs ride in the Ingress user_config, so scaling a stage reconfigures the router."""

from __future__ import annotations

from serve.app.args import AppArgs
from serve.app.capacity import StageCapacity, lane_capacity


def _capacity(rendered) -> StageCapacity:
    (ingress,) = rendered.application["deployments"]
    return StageCapacity.model_validate(ingress["user_config"]["capacity"])


def test_capacity_inputs_are_the_stable_denoisers_and_their_batch(rendered):
    capacity = _capacity(rendered)
    denoiser = rendered.deployment("Denoiser")
    assert capacity.denoiser_replicas == denoiser["autoscaling_config"]["max_replicas"]
    assert capacity.batch_max_size == denoiser["user_config"]["batch_max_size"]
    assert capacity.router_replicas == rendered.deployment("Ingress")["autoscaling_config"]["min_replicas"]
    # The router batches as the Denoiser does, and a Denoiser replica takes a whole batch of calls.
    assert AppArgs.model_validate(rendered.application["args"]).lanes.batch_max_size == capacity.batch_max_size
    assert denoiser["max_ongoing_requests"] >= capacity.batch_max_size


def test_sixteen_denoisers_admit_sixty_four_generations_not_two(render):
    # values-02: up to 16 Denoiser replicas batching 4; the router used to stop at lanes.capacity = 2.
    capacity = _capacity(render("values-02-gpu-pools.yaml"))
    assert (capacity.denoiser_replicas, capacity.batch_max_size) == (16, 4)
    assert lane_capacity(capacity) == 64


def test_capacity_follows_the_values(render):
    rendered = render(set_values=("stages.denoiser.autoscaling.maxReplicas=3", "stages.denoiser.workers.maxReplicas=3",
                                  "lanes.batchMaxSize=2", "ingress.autoscaling.minReplicas=2"))
    assert lane_capacity(_capacity(rendered)) == 3  # 3 x 2 over 2 router replicas


def test_scaling_the_denoiser_restarts_neither_the_router_nor_the_stable_stages_code(render):
    before = render()
    after = render(set_values=("stages.denoiser.autoscaling.maxReplicas=8", "stages.denoiser.workers.maxReplicas=8"))
    # Args are hashed into the code version: unchanged args, no restart; the capacity is a user_config.
    assert after.application["args"] == before.application["args"]
    assert after.stage_app()["args"] == before.stage_app()["args"]
    assert lane_capacity(_capacity(after)) == 2 * lane_capacity(_capacity(before))


def test_the_canary_does_not_count_toward_the_stable_capacity(render):
    rendered = render("values-05-canary-rollout.yaml")
    stable_denoisers = rendered.deployment("Denoiser")["autoscaling_config"]["max_replicas"]
    assert _capacity(rendered).denoiser_replicas == stable_denoisers


def test_every_stage_takes_what_the_router_admits_at_its_fewest_replicas(rendered):
    capacity = _capacity(rendered)
    admitted = capacity.denoiser_replicas * capacity.batch_max_size
    for name in ("TextEncoder", "Denoiser", "Decoder"):
        deployment = rendered.deployment(name)
        queued = deployment["max_queued_requests"]
        held = deployment["autoscaling_config"]["min_replicas"] * deployment["max_ongoing_requests"] + queued
        assert queued == -1 or held >= admitted, name


def test_stage_queues_too_short_for_the_capacity_are_refused(render_error):
    message = render_error("stages.denoiser.autoscaling.maxReplicas=16", "stages.denoiser.workers.maxReplicas=16")
    # The first stage that falls short: one Denoiser replica (4 calls) + 32 queued, against 16 x 4.
    assert "stages.denoiser holds 36 calls at its fewest replicas" in message
    assert "raise stages.denoiser.maxQueuedRequests to at least 60" in message
