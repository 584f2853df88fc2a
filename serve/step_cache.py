"""Step caching: reuse most of the transformer's work between denoising steps, at some cost in quality.

A degradation tier may turn it on (``DegradationTier.step_cache``); the setting then travels in the
request's ``GenerationParams`` (so it is in the plan, the queued payload and the cache key) and in its
``LatentShape`` (so requests of different settings never share a transformer batch).

The hooks are diffusers' own (``diffusers.hooks``), not a reimplementation:

- ``first_block``: FirstBlockCache. After the first transformer block, if its residual changed by less
  than ``threshold`` (relative mean absolute difference) since the last full step, the other blocks are
  skipped and their cached residual is added instead. Higher threshold: more steps skipped, less quality.

MagCache needs magnitude ratios calibrated per checkpoint and TaylorSeer is interval-driven rather than
thresholded; neither is offered until a tier needs them.

``StepCacheHooks`` is the thin adapter the Denoiser uses: it installs the hooks a step group needs (or
removes them for a group without step caching) and keeps their state for one group at a time, so no
request ever reads residuals cached by another group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch

StepCacheMethod = Literal["first_block"]


class StepCache(BaseModel):
    """Which step-caching hook runs on a request's denoising steps, and its threshold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: StepCacheMethod = "first_block"
    threshold: float = Field(default=0.05, gt=0.0, le=1.0,
                             description="Skip the remaining blocks while the first block's residual changed "
                                         "by less than this (relative); higher is faster and coarser")

    @property
    def label(self) -> str:
        """Short text for the job's ``served`` and for metrics: "first_block@0.05"."""
        return f"{self.method}@{self.threshold:g}"


def diffusers_config(step_cache: StepCache) -> Any:
    """diffusers' config object for ``step_cache`` (``transformer.enable_cache`` takes it)."""
    from diffusers.hooks import FirstBlockCacheConfig

    return FirstBlockCacheConfig(threshold=step_cache.threshold)


class StepCacheHooks:
    """The step-caching hooks on one transformer, switched per step group.

    ``prepare(setting, group)`` before each step of ``group`` (a hashable identity of its members):
    a group without a setting runs with no hooks at all (exactly the uncached model); a group with one
    gets diffusers' hooks for it. Hook state belongs to one group: when another group (or the same
    members with another setting) steps, the state is reset first, so nothing cached for one request
    reaches another, and memory holds at most one group's residuals. A group whose run is
    interleaved with others therefore recomputes fully at its next step: slower, never wrong.
    """

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.transformer = transformer
        self._setting: StepCache | None = None
        self._group: object = None

    @property
    def setting(self) -> StepCache | None:
        return self._setting

    def prepare(self, setting: StepCache | None, group: object) -> None:
        if setting != self._setting:
            if self._setting is not None:
                self.transformer.disable_cache()  # type: ignore[operator]
            if setting is not None:
                self.transformer.enable_cache(diffusers_config(setting))  # type: ignore[operator]
            self._setting, self._group = setting, group
            return
        if setting is not None and group != self._group:
            self.reset()
            self._group = group

    def reset(self) -> None:
        """Drop every cached residual (the hooks stay installed)."""
        from diffusers.hooks import HookRegistry

        HookRegistry.check_if_exists_or_initialize(self.transformer).reset_stateful_hooks(recurse=True)
