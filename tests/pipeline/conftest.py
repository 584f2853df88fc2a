"""Fixtures for the pipeline tests: the tiny checkpoint (built once) and small request params."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve.params import GenerationParams
from serve.pipeline.checkpoint import tiny_checkpoint_dir


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    return tiny_checkpoint_dir()


@pytest.fixture
def small_params() -> GenerationParams:
    return GenerationParams(
        prompt="a golden retriever running through a sunny park",
        negative_prompt="blurry, low quality",
        width=256,
        height=128,
        num_frames=9,
        num_inference_steps=3,
    )
