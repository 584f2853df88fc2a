"""GenerationParams: the model's defaults, the fast profile, and refusals that say what is allowed."""

import pytest
from pydantic import ValidationError

from serve.params import PROFILES, GenerationParams, describe_errors, size_fields


def test_defaults_are_the_models_own_not_wan21s():
    params = GenerationParams(prompt="a cat")
    assert (params.width, params.height, params.num_frames) == (1280, 704, 121)
    assert (params.fps, params.num_inference_steps, params.guidance_scale) == (24, 50, 5.0)
    assert params.scheduler == "unipc"


def test_fast_profile_is_a_640x480_17_frame_25_step_preview():
    params = GenerationParams(prompt="a cat", **PROFILES["fast"])
    assert (params.size, params.num_frames, params.num_inference_steps) == ("640x480", 17, 25)


@pytest.mark.parametrize("field,value,allowed", [
    ("width", 250, "nearest allowed: 224 or 256"),
    ("height", 700, "nearest allowed: 672 or 704"),
    ("num_frames", 16, "nearest allowed: 13 or 17"),
])
def test_off_grid_values_are_refused_with_the_nearest_allowed(field, value, allowed):
    with pytest.raises(ValidationError) as raised:
        GenerationParams(prompt="a cat", **{field: value})
    message = describe_errors(raised.value)
    assert message.startswith(f"{field}:")
    assert allowed in message


@pytest.mark.parametrize("fields", [
    {"prompt": ""},
    {"prompt": "   "},
    {"prompt": "x" * 2001},
    {"prompt": "a", "width": 1312},
    {"prompt": "a", "height": 32},
    {"prompt": "a", "num_frames": 125},
    {"prompt": "a", "num_inference_steps": 0},
    {"prompt": "a", "num_inference_steps": 101},
    {"prompt": "a", "guidance_scale": 0.5},
    {"prompt": "a", "guidance_scale": 21},
    {"prompt": "a", "seed": -1},
    {"prompt": "a", "scheduler": "euler"},
    {"prompt": "a", "unknown": 1},
])
def test_out_of_bounds_values_are_refused(fields):
    with pytest.raises(ValidationError):
        GenerationParams(**fields)


def test_guidance_of_one_turns_classifier_free_guidance_off():
    assert GenerationParams(prompt="a", guidance_scale=5.0).uses_guidance
    assert not GenerationParams(prompt="a", guidance_scale=1.0).uses_guidance


def test_size_fields_parses_wxh_and_refuses_other_forms():
    assert size_fields("640x480") == {"width": 640, "height": 480}
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        size_fields("640*480")


def test_seconds_follow_frames_and_fps():
    assert GenerationParams(prompt="a", num_frames=49, fps=24).seconds == pytest.approx(49 / 24)
