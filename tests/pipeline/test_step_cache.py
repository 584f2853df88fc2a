"""Step caching (diffusers' FirstBlockCache hooks) per step group, on the tiny checkpoint in process.

A request with ``step_cache`` gets the hooks on its steps; one without gets the plain model. The hooks'
state never reaches another request: whatever ran before on the same Denoiser, a request's latents are
the ones it gets on a fresh Denoiser.
"""

from __future__ import annotations

import pytest
import torch

from serve.app.step_scheduler import StepJob, next_group
from serve.pipeline.denoiser import Denoiser, DenoiseRequest
from serve.pipeline.stages import StagePipeline, encode_request, shape_of
from serve.step_cache import StepCache

# Generous enough that the tiny model's first-block residual stays under it: steps really are skipped.
COARSE = StepCache(method="first_block", threshold=1.0)


@pytest.fixture(scope="module")
def stages(tiny_dir):
    return StagePipeline(tiny_dir)


@pytest.fixture
def params(small_params):
    return small_params.model_copy(update={"num_inference_steps": 6})


def _request(stages, params, seed):
    return DenoiseRequest(encode_request(stages.text_encoder, params), shape_of(params), seed)


def _fresh(tiny_dir, stages, params, seed):
    return Denoiser(tiny_dir).denoise(_request(stages, params, seed))


def test_a_cached_request_skips_work_and_gets_other_latents_than_full_quality(stages, params):
    cached = params.model_copy(update={"step_cache": COARSE})
    full = stages.denoiser.denoise(_request(stages, params, 3))
    approximate = stages.denoiser.denoise(_request(stages, cached, 3))
    assert not torch.equal(full, approximate)
    assert torch.isfinite(approximate).all()


def test_a_full_quality_request_after_a_cached_one_is_identical_to_one_on_a_fresh_denoiser(tiny_dir, stages, params):
    stages.denoiser.denoise(_request(stages, params.model_copy(update={"step_cache": COARSE}), 4))
    after_cached = stages.denoiser.denoise(_request(stages, params, 5))
    assert stages.denoiser.step_cache.setting is None
    assert torch.equal(after_cached, _fresh(tiny_dir, stages, params, 5))


def test_a_cached_request_never_reads_residuals_cached_for_another(tiny_dir, stages, params):
    cached = params.model_copy(update={"step_cache": COARSE})
    stages.denoiser.denoise(_request(stages, cached.model_copy(update={"prompt": "a red fox in the snow"}), 6))
    second = stages.denoiser.denoise(_request(stages, cached, 7))
    assert torch.equal(second, _fresh(tiny_dir, stages, cached, 7))


def test_full_quality_steps_interleaved_with_cached_ones_are_those_of_a_fresh_denoiser(tiny_dir, stages, params):
    denoiser = stages.denoiser
    cached = denoiser.start(_request(stages, params.model_copy(update={"step_cache": COARSE}), 8))
    full = denoiser.start(_request(stages, params, 9))
    while not full.finished:
        denoiser.step([cached])
        denoiser.step([full])
    assert torch.equal(denoiser.result(full), _fresh(tiny_dir, stages, params, 9))


def test_requests_of_different_cache_settings_never_share_a_transformer_batch(stages, params):
    denoiser = stages.denoiser
    cached = denoiser.start(_request(stages, params.model_copy(update={"step_cache": COARSE}), 1))
    full = denoiser.start(_request(stages, params, 2))
    with pytest.raises(ValueError, match="latent grid"):
        denoiser.step([cached, full])
    coarser = params.model_copy(update={"step_cache": StepCache(threshold=0.5)})
    assert shape_of(coarser).batch_key != shape_of(params.model_copy(update={"step_cache": COARSE})).batch_key


def test_the_step_scheduler_groups_only_batch_requests_of_one_cache_setting(params):
    plain, cached = shape_of(params), shape_of(params.model_copy(update={"step_cache": COARSE}))
    jobs = [StepJob("a", 1, 0, ("v1", plain.batch_key)), StepJob("b", 1, 1, ("v1", cached.batch_key)),
            StepJob("c", 1, 2, ("v1", plain.batch_key))]
    assert [job.job_id for job in next_group(jobs, 4)] == ["a", "c"]
    assert [job.job_id for job in next_group(jobs[1:2], 4)] == ["b"]
