"""Full size on a GPU: the real Wan2.2-TI2V-5B architecture with random bf16 weights.

Builds UMT5-XXL, the 5B ``WanTransformer3DModel`` (30 layers, 24 heads x 128, ffn 14336, 48
channels, text_dim 4096, patch (1,2,2)) and the 48-channel residual ``AutoencoderKLWan`` straight on
the GPU (no weights to download), wraps them in ``diffusers.WanPipeline(expand_timesteps=True)`` and
measures, at 1280x704x121 and 640x480x17: per-stage latency and peak GPU memory (text encoder,
denoiser, VAE decode), seconds per denoising step, and the denoiser's achieved TFLOP/s against the
GPU's dense bf16 peak; the denoiser again with ``torch.compile`` (repeated blocks) and with step
caching (diffusers' FirstBlockCache hook). Runs only where CUDA is present; elsewhere it says so and
exits 0.

Denoiser FLOPs per transformer forward (multiply-add = 2 FLOPs; norms, modulation, RoPE, patch
embedding and head left out, < 1%), with L video tokens, S = 512 text tokens, d = 3072, f = 14336,
N = 30 layers:

    L = ((frames - 1) / 4 + 1) * (height / 32) * (width / 32)       (VAE 16x, patch 2)
    FLOPs = N * (12 L d^2 + 4 L^2 d + 4 S d^2 + 4 L S d + 4 L d f)
            (self-attn q,k,v,o 8Ld^2 + cross-attn q,o 4Ld^2; self-attn QK^T and AV 4L^2d;
             cross-attn K,V of the text 4Sd^2 and its QK^T, AV 4LSd; FFN 4Ldf)

and two forwards per step (classifier-free guidance at 5.0). At 1280x704x121: L = 27,280.

    .venv/bin/python bench/gpu_fullsize.py [--quick] [--steps 8] [--peak-tflops 989]
    .venv/bin/python bench/gpu_fullsize.py --tiny-cpu   # checks the code paths on a CPU; numbers meaningless
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common import goal_line, say

# Wan2.2-TI2V-5B, as in ARCHITECTURE.md and the Diffusers checkpoint's configs.
TRANSFORMER: dict[str, Any] = {
    "patch_size": (1, 2, 2), "num_attention_heads": 24, "attention_head_dim": 128, "in_channels": 48,
    "out_channels": 48, "text_dim": 4096, "freq_dim": 256, "ffn_dim": 14336, "num_layers": 30,
    "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "rope_max_seq_len": 1024,
}
VAE: dict[str, Any] = {
    "base_dim": 160, "decoder_base_dim": 256, "z_dim": 48, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2,
    "attn_scales": [], "temperal_downsample": [False, True, True], "is_residual": True, "in_channels": 12,
    "out_channels": 12, "patch_size": 2, "scale_factor_spatial": 16, "scale_factor_temporal": 4,
    "latents_mean": [0.0] * 48, "latents_std": [1.0] * 48,
}
TEXT_ENCODER: dict[str, Any] = {
    "vocab_size": 256384, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
    "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu", "is_encoder_decoder": False, "pad_token_id": 0, "eos_token_id": 1,
}
# Small stand-ins for --tiny-cpu (same classes, same code paths).
TINY = {
    "transformer": {**TRANSFORMER, "num_attention_heads": 2, "attention_head_dim": 12, "text_dim": 32,
                    "freq_dim": 32, "ffn_dim": 48, "num_layers": 2, "rope_max_seq_len": 32},
    "vae": {**VAE, "base_dim": 8, "decoder_base_dim": 8, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1},
    "text_encoder": {**TEXT_ENCODER, "vocab_size": 256, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2,
                     "num_heads": 4},
}
SIZES = [(1280, 704, 121), (640, 480, 17)]
TEXT_TOKENS = 512
# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets.
PEAK_BF16 = {"H200": 989.4, "H100 80GB HBM3": 989.4, "H100 SXM": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0,
             "A100": 312.0, "L40S": 362.1, "L4": 121.0, "A10G": 70.0}
PROMPT = "a golden retriever running through a sunny park, cinematic lighting"


@dataclass
class StageRun:
    seconds: float
    peak_gib: float


def transformer_flops(width: int, height: int, frames: int, config: dict[str, Any]) -> float:
    """FLOPs of one transformer forward, by the formula in this module's docstring."""
    tokens = ((frames - 1) // 4 + 1) * (height // 32) * (width // 32)
    d = config["num_attention_heads"] * config["attention_head_dim"]
    f, n, s = config["ffn_dim"], config["num_layers"], TEXT_TOKENS
    return float(n * (12 * tokens * d**2 + 4 * tokens**2 * d + 4 * s * d**2 + 4 * tokens * s * d + 4 * tokens * d * f))


def peak_tflops(device_name: str, override: float) -> float | None:
    if override > 0:
        return override
    return next((peak for key, peak in PEAK_BF16.items() if key in device_name), None)


def build_pipeline(device: str, tiny: bool) -> Any:
    """WanPipeline from freshly initialised components, built on ``device`` in bf16 (VAE in fp32)."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    from serve.pipeline.checkpoint import tiny_checkpoint_dir

    configs = TINY if tiny else {"transformer": TRANSFORMER, "vae": VAE, "text_encoder": TEXT_ENCODER}
    dtype = torch.float32 if tiny else torch.bfloat16
    # Token ids of the tiny tokenizer are valid UMT5 ids; the encoder pads to 512 tokens either way.
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint_dir() / "tokenizer")
    torch.manual_seed(0)
    with torch.device(device):
        torch.set_default_dtype(dtype)
        text_encoder = UMT5EncoderModel(UMT5Config(**configs["text_encoder"])).eval()
        transformer = WanTransformer3DModel(**configs["transformer"]).eval()
        torch.set_default_dtype(torch.float32)
        vae = AutoencoderKLWan(**configs["vae"]).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=5.0)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                       transformer=transformer, expand_timesteps=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def timed(device: str, work: Callable[[], Any]) -> tuple[Any, StageRun]:
    import torch

    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = work()
    if cuda:
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    return result, StageRun(time.perf_counter() - started, peak)


class Bench:
    """One pipeline, measured stage by stage at one size."""

    def __init__(self, pipe: Any, device: str, size: tuple[int, int, int]) -> None:
        self.pipe, self.device, (self.width, self.height, self.frames) = pipe, device, size

    def encode(self) -> tuple[tuple[Any, Any], StageRun]:
        import torch

        def work() -> tuple[Any, Any]:
            with torch.inference_mode():
                cond, uncond = self.pipe.encode_prompt(PROMPT, "blurry, low quality", True,
                                                       max_sequence_length=TEXT_TOKENS, device=self.device)
            return cond, uncond

        return timed(self.device, work)

    def denoise(self, embeddings: tuple[Any, Any], steps: int) -> tuple[Any, StageRun]:
        import torch

        cond, uncond = embeddings

        def work() -> Any:
            with torch.inference_mode():
                return self.pipe(
                    prompt_embeds=cond, negative_prompt_embeds=uncond, height=self.height, width=self.width,
                    num_frames=self.frames, num_inference_steps=steps, guidance_scale=5.0, output_type="latent",
                    generator=torch.Generator(self.device).manual_seed(0),
                ).frames

        return timed(self.device, work)

    def decode(self, latents: Any) -> StageRun:
        import torch

        vae = self.pipe.vae
        mean = torch.tensor(vae.config.latents_mean, device=self.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std, device=self.device).view(1, -1, 1, 1, 1)

        def work() -> Any:
            with torch.inference_mode():
                return vae.decode(latents.to(vae.dtype) * std + mean, return_dict=False)[0]

        try:
            return timed(self.device, work)[1]
        except torch.OutOfMemoryError:
            say("  VAE decode ran out of GPU memory; retrying with the VAE's tiling on")
            vae.enable_tiling()
            try:
                return timed(self.device, work)[1]
            finally:
                vae.disable_tiling()


def measure_size(pipe: Any, device: str, size: tuple[int, int, int], steps: int, peak: float | None,
                 label: str) -> float | None:
    """Prints the stages at ``size`` and each denoiser variant; returns the baseline's fraction of peak."""
    from diffusers import FirstBlockCacheConfig

    bench = Bench(pipe, device, size)
    width, height, frames = size
    flops_per_step = 2 * transformer_flops(width, height, frames, pipe.transformer.config)
    say(f"== {label}, {width}x{height}x{frames}: {flops_per_step / 1e12:.1f} TFLOP per denoising step (2 forwards)")
    bench.encode()  # warm-up (kernels, allocator)
    embeddings, text = bench.encode()
    say(f"  text encoder: {text.seconds * 1000:.0f} ms, peak {text.peak_gib:.1f} GiB")
    warm_started = time.perf_counter()
    bench.denoise(embeddings, 1)  # warm-up; with torch.compile this is where compiling happens
    say(f"  denoiser warm-up (1 step): {time.perf_counter() - warm_started:.1f} s")
    latents, denoise = bench.denoise(embeddings, steps)
    per_step = denoise.seconds / steps
    achieved = flops_per_step / per_step / 1e12
    fraction = achieved / peak if peak else None
    share = f", {fraction:.0%} of the {peak:.0f} TFLOP/s bf16 peak" if fraction is not None else ""
    say(f"  denoiser: {denoise.seconds:.2f} s for {steps} steps = {per_step:.3f} s/step, "
        f"{achieved:.0f} TFLOP/s{share}; peak {denoise.peak_gib:.1f} GiB")
    decode = bench.decode(latents)
    say(f"  VAE decode: {decode.seconds:.2f} s, peak {decode.peak_gib:.1f} GiB")
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.05))
    try:
        bench.denoise(embeddings, 2)
        _, cached = bench.denoise(embeddings, steps)
    finally:
        pipe.transformer.disable_cache()
    say(f"  denoiser with step caching (FirstBlockCache 0.05): {cached.seconds / steps:.3f} s/step "
        f"({per_step / (cached.seconds / steps):.2f}x), peak {cached.peak_gib:.1f} GiB")
    return fraction


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="640x480x17, 2 steps, no compile")
    parser.add_argument("--steps", type=int, default=8, help="denoising steps timed per run")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="the GPU's dense bf16 peak, if not known")
    parser.add_argument("--tiny-cpu", action="store_true", help="check the code paths on a CPU with tiny models")
    options = parser.parse_args()
    import torch

    if not options.tiny_cpu and not torch.cuda.is_available():
        say("CUDA is absent on this machine: the full-size GPU benchmark did not run.")
        goal_line("gpu_fullsize", "not run (no CUDA)", ">=", "50% of bf16 peak")
        return
    device = "cpu" if options.tiny_cpu else "cuda"
    name = "cpu" if options.tiny_cpu else torch.cuda.get_device_name()
    peak = peak_tflops(name, options.peak_tflops)
    say(f"device {name}; bf16 peak {peak or 'unknown (pass --peak-tflops)'} TFLOP/s; torch {torch.__version__}")
    started = time.perf_counter()
    pipe = build_pipeline(device, options.tiny_cpu)
    say(f"built the random-weight pipeline in {time.perf_counter() - started:.0f} s")
    sizes = [(128, 64, 5)] if options.tiny_cpu else SIZES[1:] if options.quick else SIZES
    steps = 2 if options.quick or options.tiny_cpu else options.steps
    fractions = [measure_size(pipe, device, size, steps, peak, "eager") for size in sizes]
    if not options.quick:
        pipe.transformer.compile_repeated_blocks()  # not fullgraph: the cache hook breaks the graph
        for size in sizes:
            measure_size(pipe, device, size, steps, peak, "torch.compile (repeated blocks)")
    known = [fraction for fraction in fractions if fraction is not None]
    figure = f"denoiser at {known[0]:.0%} of bf16 peak at {sizes[0][0]}x{sizes[0][1]}x{sizes[0][2]}" if known \
        else "denoiser peak fraction unknown (pass --peak-tflops)"
    goal_line("gpu_fullsize", figure, ">=", "50% of peak")


if __name__ == "__main__":
    main()
