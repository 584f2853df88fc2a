"""The tiny checkpoint: the Wan2.2-TI2V-5B structure at toy size, loadable by plain diffusers."""

import hashlib
import json

import diffusers

from serve.pipeline.checkpoint import REQUIRED_PARTS, check_model_dir
from serve.pipeline.tiny_checkpoint import build_tiny_checkpoint


def test_plain_wan_pipeline_loads_it_with_the_wan22_structure(tiny_dir):
    pipe = diffusers.WanPipeline.from_pretrained(tiny_dir)
    vae = pipe.vae.config
    assert (vae.z_dim, vae.is_residual, vae.patch_size) == (48, True, 2)
    assert (vae.scale_factor_spatial, vae.scale_factor_temporal) == (16, 4)
    assert len(vae.latents_mean) == len(vae.latents_std) == 48
    assert pipe.config.expand_timesteps is True
    assert pipe.transformer.config.in_channels == pipe.transformer.config.out_channels == 48
    assert tuple(pipe.transformer.config.patch_size) == (1, 2, 2)
    assert pipe.transformer.config.text_dim == pipe.text_encoder.config.d_model
    assert pipe.scheduler.config.flow_shift == 5.0
    assert pipe.scheduler.config.prediction_type == "flow_prediction"


def test_the_layout_is_the_diffusers_one(tiny_dir):
    assert check_model_dir(tiny_dir) == tiny_dir
    index = json.loads((tiny_dir / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline"
    assert all((tiny_dir / part).exists() for part in REQUIRED_PARTS)


def test_weights_are_deterministic(tmp_path):
    first = build_tiny_checkpoint(tmp_path / "a")
    second = build_tiny_checkpoint(tmp_path / "b")
    for weights in ("transformer/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                    "text_encoder/model.safetensors", "tokenizer/tokenizer.json"):
        digest_a = hashlib.sha256((first / weights).read_bytes()).hexdigest()
        digest_b = hashlib.sha256((second / weights).read_bytes()).hexdigest()
        assert digest_a == digest_b, weights


def test_a_directory_missing_parts_is_refused_naming_them(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    try:
        check_model_dir(tmp_path)
    except FileNotFoundError as error:
        assert "missing tokenizer, text_encoder, transformer, vae, scheduler" in str(error)
    else:
        raise AssertionError("an incomplete directory was accepted")
