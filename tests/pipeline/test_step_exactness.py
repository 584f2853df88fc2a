"""A request's latents do not depend on how its steps were interleaved or batched with others.

The Denoiser works a step at a time (``start`` / ``step`` / ``result``); whatever order and grouping
the step scheduler picks, every request must end with the latents it gets alone, and those of one
``WanPipeline`` call, within the 1e-5 of the stage-split test.
"""

import diffusers
import pytest
import torch

from serve.pipeline.denoiser import DenoiseRequest
from serve.pipeline.stages import StagePipeline, encode_request, shape_of
from tests.pipeline.reference import reference_frames

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def stages(tiny_dir):
    return StagePipeline(tiny_dir)


@pytest.fixture(scope="module")
def reference(tiny_dir):
    return diffusers.WanPipeline.from_pretrained(tiny_dir)


def _request(stages, params, seed, image_latents=None):
    return DenoiseRequest(encode_request(stages.text_encoder, params), shape_of(params), seed, image_latents)


def test_interleaved_requests_of_different_seeds_and_step_counts_match_each_alone(stages, reference, small_params):
    short = small_params.model_copy(update={"num_inference_steps": 3, "guidance_scale": 5.0})
    long = small_params.model_copy(update={"prompt": "a red fox in the snow", "num_inference_steps": 5,
                                           "guidance_scale": 3.5, "scheduler": "dpm++"})
    denoiser = stages.denoiser
    a, b = denoiser.start(_request(stages, short, seed=1)), denoiser.start(_request(stages, long, seed=2))
    # a alone, b alone, both in one batch at different steps, b alone, both, then b to its end.
    for group in ([a], [b], [a, b], [b], [a, b], [b]):
        denoiser.step(group)
    assert a.finished and b.finished
    for state, params, seed in ((a, short, 1), (b, long, 2)):
        alone = denoiser.denoise(_request(stages, params, seed))
        torch.testing.assert_close(denoiser.result(state), alone, **TOLERANCE)
    torch.testing.assert_close(denoiser.result(a), reference_frames(reference, short, 1, "latent"), **TOLERANCE)


def test_a_request_that_joins_a_running_batch_midway_gets_its_own_latents(stages, reference, small_params):
    params = small_params.model_copy(update={"num_inference_steps": 4})
    denoiser = stages.denoiser
    first, second = denoiser.start(_request(stages, params, 5)), denoiser.start(_request(stages, params, 6))
    third = denoiser.start(_request(stages, params, 7))
    denoiser.step([first, second])
    denoiser.step([first, second])
    denoiser.step([first, second, third])  # third joins at step 0 of its own
    denoiser.step([first, second, third])  # first and second are done after this one: they leave
    denoiser.step([third])
    denoiser.step([third])
    assert first.finished and second.finished and third.finished
    for state, seed in ((first, 5), (second, 6), (third, 7)):
        expected = reference_frames(reference, params, seed, "latent")
        torch.testing.assert_close(denoiser.result(state), expected, **TOLERANCE)


def test_image_and_text_requests_interleave_exactly(stages, small_params):
    from tests.pipeline.test_image_to_video import _picture

    denoiser = stages.denoiser
    image_latents = stages.decoder.encode_image(_picture(300, 200, seed=0), small_params.width, small_params.height)
    image, text = _request(stages, small_params, 3, image_latents), _request(stages, small_params, 4)
    states = [denoiser.start(image), denoiser.start(text)]
    denoiser.step(states[:1])
    denoiser.step(states)
    denoiser.step(states)
    denoiser.step(states[1:])
    torch.testing.assert_close(denoiser.result(states[0]), denoiser.denoise(image), **TOLERANCE)
    torch.testing.assert_close(denoiser.result(states[1]), denoiser.denoise(text), **TOLERANCE)


def test_requests_of_another_grid_or_guidance_do_not_share_a_step(stages, small_params):
    denoiser = stages.denoiser
    guided = denoiser.start(_request(stages, small_params, 1))
    unguided = denoiser.start(_request(stages, small_params.model_copy(update={"guidance_scale": 1.0}), 1))
    shorter = denoiser.start(_request(stages, small_params.model_copy(update={"num_frames": 5}), 1))
    for group in ([guided, unguided], [guided, shorter]):
        with pytest.raises(ValueError, match="one latent grid, all guided or all unguided"):
            denoiser.step(group)
    assert guided.done == unguided.done == shorter.done == 0


def test_a_finished_request_is_not_stepped_again(stages, small_params):
    denoiser = stages.denoiser
    state = denoiser.start(_request(stages, small_params.model_copy(update={"num_inference_steps": 1}), 1))
    denoiser.step([state])
    with pytest.raises(ValueError, match="finished"):
        denoiser.step([state])
