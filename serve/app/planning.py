"""From a create request to a plan: version, parameters, degradation tier, cache key and cost.

Pure: a function of the request, the tenant, the serving policy and a random source, so every rule
(seed derivation, tier snapping, cache scope) is testable without Ray, Redis or HTTP.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pydantic import ValidationError

from serve.app.api_models import VideoCreate
from serve.app.errors import ApiError
from serve.app.lanes import Lane
from serve.app.routing import UnknownModel, apply_tier, choose_version
from serve.cache import cache_key, deterministic_seed, normalise_prompt
from serve.jobs import ServedParams
from serve.params import GenerationParams, describe_errors
from serve.policy import ServingPolicy
from serve.tenancy.cost import compute_units

# The model's native frame area (1280x704): the default of ``AppArgs.max_frame_area``.
NATIVE_FRAME_AREA = 1280 * 704


@dataclass(frozen=True)
class Plan:
    """One accepted request, resolved: what to generate, where, and under which cache key."""

    requested: GenerationParams
    params: GenerationParams
    model_version: str
    lane: Lane
    key: str
    served: ServedParams | None
    # Whose turn in the lane's fair queue this generation takes (the first requester's, when shared).
    tenant: str
    # What the tenant is charged: the requested video's cost, whatever a tier serves (serve.tenancy.cost).
    compute_units: float


def plan_request(
    body: VideoCreate,
    tenant: str,
    policy: ServingPolicy,
    versions: list[str],
    rng: random.Random,
    *,
    max_frame_area: int = NATIVE_FRAME_AREA,
) -> Plan:
    """Resolve a request, or raise an ApiError (400) naming the field and what is allowed.

    ``max_frame_area`` bounds width x height as requested, before a tier could shrink it: a request
    is accepted for what it asks, not for what a degraded moment happens to serve.
    """
    try:
        version = choose_version(policy, versions, body.model, rng)
    except UnknownModel as error:
        raise ApiError(400, "model_not_found", str(error), "model") from None
    seed = deterministic_seed(body.prompt, negative_prompt=body.negative_prompt, model_version=version)
    try:
        params = body.to_params(seed)
    except ValidationError as error:
        param = _first_param(error)
        if param in ("width", "height") and body.size is not None:
            param = "size"  # the client sent "size", not width/height
        raise ApiError(400, "invalid_request", describe_errors(error), param) from None
    except ValueError as error:
        message = str(error)
        raise ApiError(400, "invalid_request", message, message.split(":", 1)[0]) from None
    _check_frame_area(params, max_frame_area)
    # Generate from the normalised prompt: the cache treats whitespace/NFKC variants as one.
    params = params.model_copy(update={"prompt": normalise_prompt(params.prompt)})
    served_params, served = apply_tier(params, policy.tier)
    scope = "shared" if body.shared_cache else f"tenant:{tenant}"
    key = cache_key(served_params, model_version=version, scope=scope)
    return Plan(params, served_params, version, body.priority, key, served, tenant, compute_units(params))


def _check_frame_area(params: GenerationParams, max_frame_area: int) -> None:
    area = params.width * params.height
    if area <= max_frame_area:
        return
    examples = [f"{w}x{h}" for w, h in ((1280, 704), (704, 1280), (1024, 576), (832, 480)) if w * h <= max_frame_area]
    allowed = f"e.g. {', '.join(examples)}" if examples else "a smaller size"
    raise ApiError(400, "invalid_request",
                   f"size {params.size} is {area} pixels per frame, above this server's maximum of "
                   f"{max_frame_area} (max_frame_area); ask for at most {max_frame_area} pixels, {allowed}",
                   "size")


def _first_param(error: ValidationError) -> str | None:
    errors = error.errors()
    return ".".join(str(part) for part in errors[0]["loc"]) if errors else None
