"""Build a tiny, offline Wan2.2-TI2V-5B checkpoint in the diffusers directory layout.

The real checkpoint (``Wan-AI/Wan2.2-TI2V-5B-Diffusers``) cannot be downloaded here, so tests and the
default local run use this stand-in: the same component classes and the same structure (48-channel
residual VAE with patch 2, 16x spatial and 4x temporal compression, ``expand_timesteps``, UniPC
flow-matching with shift 5.0), at toy width, with random but deterministic weights and a tokenizer
trained locally. ``diffusers.WanPipeline.from_pretrained(dir)`` loads it like the real one.
"""

from __future__ import annotations

import json
from pathlib import Path

# Bump when the layout or sizes change, so cached copies are rebuilt.
TINY_CHECKPOINT_VERSION = 2

_TOKENIZER_CORPUS = [
    "a golden retriever running through a sunny park",
    "a cat playing piano on a stage under warm lights",
    "a drone shot of waves crashing on a rocky coast at sunset",
    "an astronaut riding a horse on the surface of the moon",
    "time lapse of clouds moving over snowy mountains",
    "a red sports car driving along a coastal road in the rain",
    "two people dancing in a neon lit city street at night",
    "a close up of coffee being poured into a white cup",
    "low quality, blurry, static, worst quality, jpeg artifacts, ugly, deformed",
    "bright colors, overexposed, subtitles, still picture, extra fingers",
]


def _train_tokenizer(directory: Path, vocab_size: int) -> None:
    from tokenizers import SentencePieceUnigramTokenizer, Tokenizer
    from transformers import T5TokenizerFast

    corpus = [line for _ in range(20) for line in _TOKENIZER_CORPUS]
    spm = SentencePieceUnigramTokenizer()
    spm.train_from_iterator(
        corpus,
        vocab_size=vocab_size,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    # The trainer sums scores in parallel, so they differ run to run in the last bits: round them
    # (and sort ties by piece) so the same seed always writes the same tokenizer.
    spec = json.loads(spm._tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    specials, pieces = vocab[:3], [[piece, round(score, 6)] for piece, score in vocab[3:]]
    spec["model"]["vocab"] = specials + sorted(pieces, key=lambda item: (-item[1], item[0]))
    tokenizer = T5TokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=512,
    )
    tokenizer.save_pretrained(directory / "tokenizer")


def build_tiny_checkpoint(
    directory: str | Path, seed: int = 0, *, transformer_heads: int = 2, transformer_layers: int = 2,
    transformer_ffn_dim: int = 48,
) -> Path:
    """Write the tiny checkpoint to ``directory`` and return its path.

    The ``transformer_*`` knobs widen the denoiser only (the benchmarks use a heavier one so the
    denoiser's share of a video is closer to the real model's); the defaults write the tests' checkpoint.
    """
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from serve.pipeline.device import quiet_loading

    quiet_loading()
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    _train_tokenizer(root, vocab_size=256)
    from transformers import AutoTokenizer

    vocab_size = len(AutoTokenizer.from_pretrained(root / "tokenizer"))

    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=vocab_size,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            feed_forward_proj="gated-gelu",
            is_encoder_decoder=False,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    text_encoder.save_pretrained(root / "text_encoder")

    torch.manual_seed(seed + 1)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=transformer_heads,
        attention_head_dim=12,
        in_channels=48,
        out_channels=48,
        text_dim=32,
        freq_dim=32,
        ffn_dim=transformer_ffn_dim,
        num_layers=transformer_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    transformer.save_pretrained(root / "transformer")

    torch.manual_seed(seed + 2)
    generator = torch.Generator().manual_seed(seed + 3)
    latents_mean = (torch.randn(48, generator=generator) * 0.5).tolist()
    latents_std = (torch.rand(48, generator=generator) + 0.5).tolist()
    vae = AutoencoderKLWan(
        base_dim=8,
        decoder_base_dim=8,
        z_dim=48,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
        latents_mean=latents_mean,
        latents_std=latents_std,
    )
    vae.save_pretrained(root / "vae")

    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        num_train_timesteps=1000,
        flow_shift=5.0,
    )
    scheduler.save_pretrained(root / "scheduler")

    model_index = {
        "_class_name": "WanPipeline",
        "_diffusers_version": "0.42.1",
        "boundary_ratio": None,
        "expand_timesteps": True,
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "transformer_2": [None, None],
        "vae": ["diffusers", "AutoencoderKLWan"],
    }
    (root / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")
    (root / "TINY_CHECKPOINT").write_text(f"{TINY_CHECKPOINT_VERSION}\n")
    return root
