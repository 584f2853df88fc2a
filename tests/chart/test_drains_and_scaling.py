"""Drains sized for minute-long generations, and the scaling knobs of each stage."""

from __future__ import annotations

import pytest

DEPLOYMENTS = ("Ingress", "TextEncoder", "Denoiser", "Decoder")


def test_every_serve_deployment_drains_for_three_minutes(rendered):
    for name, app in rendered.applications.items():
        for deployment in app["deployments"]:
            assert deployment["graceful_shutdown_timeout_s"] == 180, (name, deployment["name"])


def test_ray_pods_outlive_the_drain_of_their_replicas(rendered):
    drain = max(d["graceful_shutdown_timeout_s"] for app in rendered.applications.values() for d in app["deployments"])
    for name, spec in rendered.pod_specs():
        if name.startswith("RayService"):
            assert spec["terminationGracePeriodSeconds"] == 210, name
            assert spec["terminationGracePeriodSeconds"] >= drain + 20, name


def test_a_grace_period_shorter_than_the_drain_is_refused(render_error):
    message = render_error("drain.terminationGracePeriodSeconds=190")
    assert "must be at least drain.gracefulShutdownTimeoutSeconds (180) + 20" in message


def test_each_stage_has_upscale_and_downscale_delays(rendered):
    for name in DEPLOYMENTS[1:]:
        autoscaling = rendered.deployment(name)["autoscaling_config"]
        assert autoscaling["upscale_delay_s"] == 30, name
        assert autoscaling["downscale_delay_s"] == 600, name
        assert "initial_replicas" not in autoscaling, name


def test_knobs_are_per_stage(render):
    rendered = render(set_values=("stages.denoiser.autoscaling.initialReplicas=2",
                                  "stages.denoiser.autoscaling.downscaleDelaySeconds=1800",
                                  "stages.decoder.autoscaling.upscaleDelaySeconds=5"))
    denoiser = rendered.deployment("Denoiser")["autoscaling_config"]
    assert (denoiser["initial_replicas"], denoiser["downscale_delay_s"], denoiser["upscale_delay_s"]) == (2, 1800, 30)
    decoder = rendered.deployment("Decoder")["autoscaling_config"]
    assert (decoder["upscale_delay_s"], decoder["downscale_delay_s"]) == (5, 600)
    assert "initial_replicas" not in rendered.deployment("TextEncoder")["autoscaling_config"]


def test_initial_replicas_outside_min_and_max_are_refused(render_error):
    assert "initialReplicas (9) must lie between" in render_error("stages.denoiser.autoscaling.initialReplicas=9")


@pytest.mark.parametrize("strategy", ["NewCluster", "None"])
def test_the_upgrade_strategy_is_the_chosen_one(render, strategy):
    rendered = render(set_values=(f"ray.upgradeStrategy.type={strategy}",))
    assert rendered.rayservice["spec"]["upgradeStrategy"] == {"type": strategy}


def test_the_default_upgrade_is_blue_green(rendered):
    assert rendered.rayservice["spec"]["upgradeStrategy"]["type"] == "NewCluster"
