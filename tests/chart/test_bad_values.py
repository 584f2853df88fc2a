"""Wrong values fail `helm template` (and so `helm install`) with a message that names the problem."""

from __future__ import annotations

import pytest


def test_unknown_stage_is_refused(render_error):
    message = render_error("stages.upscaler.replica.numCpus=1")
    assert "/stages" in message
    assert "'upscaler' not allowed" in message


def test_negative_worker_replicas_are_refused(render_error):
    message = render_error("stages.denoiser.workers.minReplicas=-1")
    assert "/stages/denoiser/workers/minReplicas" in message
    assert "minimum" in message


def test_negative_serve_replicas_are_refused(render_error):
    message = render_error("stages.decoder.autoscaling.minReplicas=-2")
    assert "/stages/decoder/autoscaling/minReplicas" in message


def test_gpu_count_as_a_string_is_refused(render_error):
    message = render_error(set_string=("stages.textEncoder.workers.gpu.count=2",))
    assert "/stages/textEncoder/workers/gpu/count" in message
    assert "got string, want integer" in message


def test_fractional_gpu_count_is_refused(render_error):
    message = render_error("stages.denoiser.workers.gpu.count=1.5")
    assert "/stages/denoiser/workers/gpu/count" in message


def test_replica_needing_more_gpus_than_its_pod_is_refused(render_error):
    message = render_error("stages.denoiser.replica.numGpus=2")
    assert "stages.denoiser.replica.numGpus (2) is more than the 1 GPUs of one worker pod" in message


def test_gpu_replica_on_gpuless_pods_is_refused(render_error):
    message = render_error("stages.decoder.workers.gpu.count=0")
    assert "stages.decoder.workers.gpu.count is 0" in message


def test_more_serve_replicas_than_the_group_holds_is_refused(render_error):
    message = render_error("stages.denoiser.autoscaling.maxReplicas=9")
    assert "stages.denoiser needs room for 9 replicas" in message
    assert "raise stages.denoiser.workers.maxReplicas" in message


def test_canary_without_room_for_the_candidate_is_refused(render_error):
    message = render_error(
        "policy.rollout.enabled=true",
        "policy.rollout.candidateVersion=ft1",
        "policy.rollout.candidateModelDir=/models/ft1",
    )
    assert ("stages.textEncoder needs room for 4 replicas (autoscaling.maxReplicas 2 of the stable version + 2 of "
            "the canary's candidate") in message


def test_a_canary_with_a_smaller_candidate_fits_the_groups_as_they_are(render):
    rendered = render(set_values=(
        "policy.rollout.enabled=true", "policy.rollout.candidateVersion=ft1",
        "policy.rollout.candidateModelDir=/models/ft1",
        "stages.textEncoder.autoscaling.maxReplicas=1", "stages.decoder.autoscaling.maxReplicas=1",
        "stages.denoiser.autoscaling.maxReplicas=3",
        "policy.rollout.candidateStages.textEncoder.autoscaling.maxReplicas=1",
        "policy.rollout.candidateStages.denoiser.autoscaling.maxReplicas=1",
        "policy.rollout.candidateStages.decoder.autoscaling.maxReplicas=1",
    ))
    assert "wanserve-ft1-primary" in rendered.applications


def test_backup_without_room_on_its_own_groups_is_refused(render_error):
    message = render_error("backup.enabled=true", "backup.stages.denoiser.workers.maxReplicas=1")
    assert "backup.stages.denoiser needs room for 4 replicas" in message
    assert "on worker group denoiser-backup" in message


def test_backup_replica_needing_more_gpus_than_its_pod_is_refused(render_error):
    message = render_error("backup.enabled=true", "backup.stages.decoder.replica.numGpus=2")
    assert "backup.stages.decoder.replica.numGpus (2) is more than the 1 GPUs of one worker pod" in message


def test_the_old_backup_instance_switch_is_refused_by_name(render_error):
    message = render_error("policy.failover.backupInstance=true")
    assert "backupInstance" in message


def test_min_above_max_is_refused(render_error):
    message = render_error("stages.textEncoder.workers.minReplicas=3")
    assert "stages.textEncoder.workers.minReplicas (3) is above maxReplicas (2)" in message


def test_model_dir_outside_the_mount_is_refused(render_error):
    message = render_error("model.dir=/weights/wan")
    assert "model.dir (/weights/wan) must be a directory under model.mountPath (/models)" in message


def test_external_redis_without_url_is_refused(render_error):
    message = render_error("redis.mode=external")
    assert "redis.external.url is empty" in message


def test_unknown_redis_mode_is_refused(render_error):
    message = render_error("redis.mode=sentinel")
    assert "/redis/mode" in message


def test_prometheus_source_without_url_is_refused(render_error):
    message = render_error("policy.metrics.source=prometheus")
    assert "policy.metrics.prometheusUrl is required" in message


def test_candidate_equal_to_stable_is_refused(render_error):
    message = render_error(
        "policy.rollout.enabled=true",
        "policy.rollout.candidateVersion=wan2.2-ti2v-5b",
        "policy.rollout.candidateModelDir=/models/x",
        "stages.textEncoder.workers.maxReplicas=4",
        "stages.denoiser.workers.maxReplicas=8",
        "stages.decoder.workers.maxReplicas=4",
    )
    assert "candidateVersion equals model.version" in message


@pytest.mark.parametrize("key", ["ingress.maxOngoingRequests=0", "policy.controlIntervalSeconds=0"])
def test_zero_where_at_least_one_is_needed_is_refused(render_error, key):
    message = render_error(key)
    assert key.split("=")[0].replace(".", "/") in message
