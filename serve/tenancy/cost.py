"""What a video costs: compute units, the currency of the daily quota.

One unit is one video at the model's own defaults (1280x704, 121 frames, 50 steps) with
classifier-free guidance, which runs the transformer twice per step. The cost of anything else
scales with the work the denoiser does::

    units = (width * height) / (1280 * 704)     # pixels per frame
          * num_frames / 121                     # frames
          * num_inference_steps / 50             # denoising steps
          * (1 if guidance_scale > 1 else 0.5)   # guidance doubles the transformer's passes

fps is free: it changes how long the video plays, not how much is computed. Attention grows
faster than linearly with the token count, so a large video is if anything undercharged; the
maximum frame area (``AppArgs.max_frame_area``) bounds that.
"""

from __future__ import annotations

from serve.params import GenerationParams

REFERENCE_AREA = 1280 * 704
REFERENCE_FRAMES = 121
REFERENCE_STEPS = 50
UNGUIDED_SHARE = 0.5


def compute_units(params: GenerationParams) -> float:
    """The compute units ``params`` cost (1.0 = one default video with guidance); see the module."""
    area = params.width * params.height / REFERENCE_AREA
    frames = params.num_frames / REFERENCE_FRAMES
    steps = params.num_inference_steps / REFERENCE_STEPS
    return area * frames * steps * (1.0 if params.uses_guidance else UNGUIDED_SHARE)
