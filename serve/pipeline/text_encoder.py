"""TextEncoder stage: tokenizer + UMT5 -> prompt embeddings, exactly as ``WanPipeline`` computes them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from serve.pipeline.device import dtype_for, pick_device, quiet_loading, release_cached_memory
from serve.pipeline.preemption import BlockCheckpoints

if TYPE_CHECKING:
    import torch

# WanPipeline.__call__ encodes 512 tokens; encode_prompt's own default (226) would change the video.
MAX_SEQUENCE_LENGTH = 512


@dataclass(frozen=True)
class PromptEmbeddings:
    """Embeddings for a batch of prompts: ``cond`` [B, 512, D] and ``uncond`` when guidance is on."""

    cond: torch.Tensor
    uncond: torch.Tensor | None

    def to_cpu(self) -> PromptEmbeddings:
        return PromptEmbeddings(
            cond=self.cond.cpu(), uncond=None if self.uncond is None else self.uncond.cpu()
        )


class TextEncoder:
    """Loads only ``tokenizer/`` and ``text_encoder/`` from a diffusers-format Wan directory."""

    def __init__(self, model_dir: str | Path, device: str | None = None) -> None:
        import torch
        from transformers import AutoTokenizer, UMT5EncoderModel

        quiet_loading()
        self.device = pick_device(device)
        self.dtype = dtype_for(self.device)
        root = Path(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
        self.model = UMT5EncoderModel.from_pretrained(root / "text_encoder", dtype=self.dtype)
        self.model.to(self.device).eval()
        self._torch = torch
        # A batch pass may give the device up between two encoder blocks (serve/pipeline/preemption.py).
        self.checkpoints = BlockCheckpoints(self.model.encoder.block)

    def encode(
        self, prompts: list[str], negative_prompts: list[str] | None = None
    ) -> PromptEmbeddings:
        """Encode prompts; pass ``negative_prompts`` (same length) when guidance > 1."""
        cond = self.embed(prompts)
        uncond = None if negative_prompts is None else self.embed(negative_prompts)
        release_cached_memory(self.device)
        return PromptEmbeddings(cond=cond, uncond=uncond)

    def embed(self, texts: list[str], yield_to: Callable[[], bool] | None = None) -> torch.Tensor:
        """One pass of the encoder over ``texts``: [B, 512, D]. ``encode`` is this for the prompts, then
        for the negative prompts; a scheduler may let more urgent work run between the two. With
        ``yield_to``, the pass raises ``Preempted`` before any block while it says more urgent work
        waits (a pass has no state: run it again)."""
        with self._torch.inference_mode(), self.checkpoints.yielding_to(yield_to):
            return self._embed(texts)

    def _embed(self, texts: list[str]) -> torch.Tensor:
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        torch = self._torch
        inputs = self.tokenizer(
            [prompt_clean(text) for text in texts],
            padding="max_length",
            max_length=MAX_SEQUENCE_LENGTH,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids, mask = inputs.input_ids.to(self.device), inputs.attention_mask.to(self.device)
        seq_lens = mask.gt(0).sum(dim=1).long()
        hidden = self.model(ids, mask).last_hidden_state
        # Zero the padding positions, as WanPipeline does, so padded tokens carry no signal.
        trimmed = [row[:length] for row, length in zip(hidden, seq_lens, strict=True)]
        return torch.stack(
            [torch.cat([row, row.new_zeros(MAX_SEQUENCE_LENGTH - row.size(0), row.size(1))]) for row in trimmed]
        )
