"""TextEncoder -> Denoiser -> Decoder reproduces one diffusers WanPipeline call, seed for seed."""

import shutil

import diffusers
import numpy as np
import pytest
import torch

from serve.params import GenerationParams
from serve.pipeline.decoder import Decoder
from serve.pipeline.denoiser import Denoiser, DenoiseRequest
from serve.pipeline.stages import StagePipeline, encode_request, shape_of
from serve.pipeline.text_encoder import TextEncoder
from tests.pipeline.reference import reference_frames


@pytest.fixture(scope="module")
def reference(tiny_dir):
    return diffusers.WanPipeline.from_pretrained(tiny_dir)


@pytest.fixture(scope="module")
def stages(tiny_dir):
    return StagePipeline(tiny_dir)


@pytest.mark.parametrize("guidance", [5.0, 1.0])
def test_latents_match_wan_pipeline(reference, stages, small_params, guidance):
    params = small_params.model_copy(update={"guidance_scale": guidance})
    expected = reference_frames(reference, params, seed=11, output_type="latent")
    embeddings = encode_request(stages.text_encoder, params)
    latents = stages.denoiser.denoise(DenoiseRequest(embeddings, shape_of(params), seed=11))
    assert latents.shape == expected.shape == (1, 48, 3, 128 // 16, 256 // 16)
    torch.testing.assert_close(latents, expected, rtol=1e-5, atol=1e-5)


def test_frames_match_wan_pipeline(reference, stages, small_params):
    expected = reference_frames(reference, small_params, seed=3, output_type="np")[0]
    generation = stages.generate(small_params, seed=3)
    assert generation.frames.shape == expected.shape == (9, 128, 256, 3)
    np.testing.assert_allclose(generation.frames, expected, atol=1e-5)


def test_a_different_seed_gives_a_different_video(stages, small_params):
    first = stages.generate(small_params, seed=1).frames
    second = stages.generate(small_params, seed=2).frames
    assert np.abs(first - second).max() > 0.01


def test_a_batch_gives_each_request_its_own_seeds_latents(stages, small_params):
    embeddings = encode_request(stages.text_encoder, small_params)
    shape = shape_of(small_params)
    alone = stages.denoiser.denoise(DenoiseRequest(embeddings, shape, seed=5))
    batch = stages.denoiser.denoise_batch(
        [DenoiseRequest(embeddings, shape, seed=4), DenoiseRequest(embeddings, shape, seed=5)]
    )
    torch.testing.assert_close(batch[1], alone, rtol=1e-4, atol=1e-4)
    assert (batch[0] - alone).abs().max() > 0.1


def test_a_batch_of_mixed_shapes_is_refused(stages, small_params):
    embeddings = encode_request(stages.text_encoder, small_params)
    other = small_params.model_copy(update={"num_frames": 5})
    with pytest.raises(ValueError, match="one LatentShape"):
        stages.denoiser.denoise_batch([
            DenoiseRequest(embeddings, shape_of(small_params), 1),
            DenoiseRequest(embeddings, shape_of(other), 1),
        ])


def test_progress_callback_reports_every_step(stages, small_params):
    seen = []
    stages.generate(small_params, seed=0, on_step=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_dpm_solver_is_an_option_and_changes_the_sampling(stages, small_params):
    unipc = stages.generate(small_params, seed=9).frames
    dpm = stages.generate(small_params.model_copy(update={"scheduler": "dpm++"}), seed=9).frames
    assert dpm.shape == unipc.shape
    assert np.abs(dpm - unipc).max() > 1e-4


def test_each_stage_loads_only_its_own_parts(tiny_dir, tmp_path, small_params):
    def only(name, parts):
        root = tmp_path / name
        root.mkdir()
        for part in parts:
            source = tiny_dir / part
            (shutil.copytree if source.is_dir() else shutil.copy)(source, root / part)
        return root

    encoder = TextEncoder(only("te", ["tokenizer", "text_encoder"]))
    denoiser_dir = only("dn", ["transformer", "scheduler", "model_index.json"])
    (denoiser_dir / "vae").mkdir()
    shutil.copy(tiny_dir / "vae" / "config.json", denoiser_dir / "vae" / "config.json")
    denoiser = Denoiser(denoiser_dir)
    decoder = Decoder(only("vae", ["vae"]))

    params = GenerationParams(**{**small_params.model_dump(), "guidance_scale": 1.0})
    latents = denoiser.denoise(DenoiseRequest(encode_request(encoder, params), shape_of(params), 0))
    assert decoder.decode(latents).shape == (9, 128, 256, 3)
