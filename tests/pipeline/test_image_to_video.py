"""Image-to-video through the stages reproduces diffusers' WanImageToVideoPipeline, seed for seed."""

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from serve.pipeline.denoiser import DenoiseRequest
from serve.pipeline.reference_image import fit_reference_image
from serve.pipeline.stages import StagePipeline, encode_request, shape_of
from tests.pipeline.reference import reference_frames


def _picture(width, height, seed):
    """A noisy picture with a gradient, so every crop and every pixel of it differ."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    pixels = 0.5 * ramp + 0.5 * rng.uniform(0, 255, (height, width, 3))
    return Image.fromarray(pixels.astype(np.uint8))


@pytest.fixture(scope="module")
def reference(tiny_dir):
    pipe = diffusers.WanImageToVideoPipeline.from_pretrained(tiny_dir, image_encoder=None, image_processor=None)
    assert pipe.config.expand_timesteps, "the tiny checkpoint's model_index.json must set expand_timesteps"
    return pipe


@pytest.fixture(scope="module")
def stages(tiny_dir):
    return StagePipeline(tiny_dir)


@pytest.fixture
def picture():
    # 3:2, fitted into the 2:1 video: the rule has to crop.
    return _picture(300, 200, seed=0)


def _denoise(stages, params, image, seed):
    image_latents = None if image is None else stages.decoder.encode_image(image, params.width, params.height)
    request = DenoiseRequest(encode_request(stages.text_encoder, params), shape_of(params), seed, image_latents)
    return stages.denoiser.denoise(request)


@pytest.mark.parametrize("guidance", [5.0, 1.0])
def test_latents_match_wan_image_to_video_pipeline(reference, stages, small_params, picture, guidance):
    params = small_params.model_copy(update={"guidance_scale": guidance})
    first = fit_reference_image(picture, params.width, params.height)
    expected = reference_frames(reference, params, seed=11, output_type="latent", image=first)
    latents = _denoise(stages, params, picture, seed=11)
    assert latents.shape == expected.shape == (1, 48, 3, 128 // 16, 256 // 16)
    torch.testing.assert_close(latents, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("guidance", [5.0, 1.0])
def test_frames_match_wan_image_to_video_pipeline(reference, stages, small_params, picture, guidance):
    params = small_params.model_copy(update={"guidance_scale": guidance})
    first = fit_reference_image(picture, params.width, params.height)
    expected = reference_frames(reference, params, seed=3, output_type="np", image=first)[0]
    generation = stages.generate(params, seed=3, image=picture)
    assert generation.frames.shape == expected.shape == (9, 128, 256, 3)
    np.testing.assert_allclose(generation.frames, expected, atol=1e-5)


def test_the_image_latent_is_the_one_diffusers_prepares(reference, stages, small_params, picture):
    fitted = fit_reference_image(picture, small_params.width, small_params.height)
    pixels = reference.video_processor.preprocess(fitted, height=128, width=256).to(torch.float32)
    _, condition, first_frame_mask = reference.prepare_latents(
        pixels, 1, 48, 128, 256, 9, torch.float32, torch.device("cpu"), torch.Generator().manual_seed(0)
    )
    ours = stages.decoder.encode_image(picture, 256, 128)
    assert ours.shape == condition.shape == (1, 48, 1, 8, 16)
    torch.testing.assert_close(ours, condition, rtol=1e-6, atol=1e-6)
    assert first_frame_mask[0, 0, 0].abs().sum() == 0 and first_frame_mask[0, 0, 1:].min() == 1


def test_the_first_latent_frame_is_the_encoded_image(stages, small_params, picture):
    image_latents = stages.decoder.encode_image(picture, small_params.width, small_params.height)
    latents = _denoise(stages, small_params, picture, seed=5)
    assert torch.equal(latents[:, :, :1], image_latents)


def test_a_different_image_gives_a_different_video(stages, small_params, picture):
    first = _denoise(stages, small_params, picture, seed=7)
    second = _denoise(stages, small_params, _picture(300, 200, seed=1), seed=7)
    # Not only the first frame: the image reaches the other frames through attention.
    assert (first[:, :, 1:] - second[:, :, 1:]).abs().max() > 1e-3


def test_an_image_changes_the_video_of_the_same_seed(stages, small_params, picture):
    with_image = stages.generate(small_params, seed=2, image=picture).frames
    text_only = stages.generate(small_params, seed=2).frames
    assert np.abs(with_image - text_only).max() > 0.01


def test_a_batch_may_mix_image_and_text_requests(stages, small_params, picture):
    embeddings = encode_request(stages.text_encoder, small_params)
    shape = shape_of(small_params)
    image_latents = stages.decoder.encode_image(picture, small_params.width, small_params.height)
    text_alone = stages.denoiser.denoise(DenoiseRequest(embeddings, shape, seed=4))
    image_alone = stages.denoiser.denoise(DenoiseRequest(embeddings, shape, 5, image_latents))
    batch = stages.denoiser.denoise_batch(
        [DenoiseRequest(embeddings, shape, seed=4), DenoiseRequest(embeddings, shape, 5, image_latents)]
    )
    torch.testing.assert_close(batch[0], text_alone, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(batch[1], image_alone, rtol=1e-4, atol=1e-4)


def test_image_latents_of_another_size_are_refused(stages, small_params, picture):
    wrong = stages.decoder.encode_image(picture, 128, 128)
    request = DenoiseRequest(encode_request(stages.text_encoder, small_params), shape_of(small_params), 0, wrong)
    with pytest.raises(ValueError, match="encode the image at the request's width x height"):
        stages.denoiser.denoise(request)


def test_fitting_cuts_the_edges_outside_the_aspect_ratio():
    # 4:1 = red | green | blue quarters; into 2:1 the cover rule keeps the green middle only.
    bands = np.zeros((100, 400, 3), np.uint8)
    bands[:, :100, 0] = bands[:, 100:300, 1] = bands[:, 300:, 2] = 255
    fitted = np.asarray(fit_reference_image(Image.fromarray(bands), 256, 128)).astype(int)
    assert fitted.shape == (128, 256, 3)
    inner = fitted[:, 8:-8]  # Lanczos rings a few pixels at the cut
    assert inner[..., 1].min() >= 250 and inner[..., [0, 2]].max() <= 5


def test_fitting_keeps_the_aspect_ratio_of_a_portrait_image():
    # A centred square in a portrait picture stays square in a landscape video (no stretching).
    square = np.zeros((400, 200, 3), np.uint8)
    square[150:250, 50:150] = 255
    fitted = np.asarray(fit_reference_image(Image.fromarray(square), 256, 128))[..., 0] > 127
    rows, cols = np.nonzero(fitted)
    assert abs((rows.max() - rows.min()) - (cols.max() - cols.min())) <= 2
    assert abs(cols.mean() - 127.5) < 1.5


def test_fitting_an_image_of_the_right_size_changes_nothing(picture):
    fitted = fit_reference_image(picture, 256, 128)
    again = fit_reference_image(fitted, 256, 128)
    assert again.size == (256, 128)
    assert np.array_equal(np.asarray(again), np.asarray(fitted))
