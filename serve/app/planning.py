"""From a create request to a plan: version, parameters, degradation tier, cache key and cost.

Pure: a function of the request, the tenant, the serving policy and a random source, so every rule
(seed derivation, tier snapping, cache scope) is testable without Ray, Redis or HTTP.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from serve.app.lanes import Lane
from serve.app.routing import UnknownModel, apply_tier, choose_version, tier_route
from serve.cache import cache_key, deterministic_seed, normalise_prompt
from serve.jobs import ServedParams
from serve.params import GenerationParams
from serve.policy import ServingPolicy
from serve.refusal import Refusal
from serve.request import VideoRequest
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
    # The cache pool: "shared", or "tenant:<name>".
    scope: str
    # The decoded first frame of an image-to-video request (fitted to the served size at execution).
    reference: Any = None


def plan_request(
    request: VideoRequest,
    tenant: str,
    policy: ServingPolicy,
    versions: list[str],
    rng: random.Random,
    *,
    max_frame_area: int = NATIVE_FRAME_AREA,
    reference: Any = None,
) -> Plan:
    """Resolve a request, or raise a Refusal (400) naming the field and what is allowed.

    ``max_frame_area`` bounds width x height as requested, before a tier could shrink it: a request
    is accepted for what it asks, not for what a degraded moment happens to serve.
    """
    try:
        version = choose_version(policy, versions, request.model, rng)
    except UnknownModel as error:
        raise Refusal(400, "model_not_found", str(error), "model") from None
    params = request.params
    _check_frame_area(params, max_frame_area)
    seed = params.seed
    if seed is None:
        seed = deterministic_seed(params.prompt, negative_prompt=params.negative_prompt, model_version=version)
    # Generate from the normalised prompt: the cache treats whitespace/NFKC variants as one.
    params = params.model_copy(update={"prompt": normalise_prompt(params.prompt), "seed": seed})
    # A tier may move the request to another version (a distilled one, say); the seed stays the one
    # derived above, so every tier of the ladder draws the same noise for the same request.
    route = tier_route(policy.tier, request.priority, request.model, versions)
    if route is not None:
        version = route.model_version
    served_params, served = apply_tier(params, policy.tier, request.priority, version, route)
    scope = "shared" if request.shared_cache else f"tenant:{tenant}"
    # The image's digest joins the key: the same prompt with another first frame is another video.
    inputs = {"image": hashlib.sha256(request.image).hexdigest()} if request.image is not None else {}
    key = cache_key(served_params, model_version=version, scope=scope, **inputs)
    return Plan(params, served_params, version, request.priority, key, served, tenant, compute_units(params), scope,
                reference)


def _check_frame_area(params: GenerationParams, max_frame_area: int) -> None:
    area = params.width * params.height
    if area <= max_frame_area:
        return
    examples = [f"{w}x{h}" for w, h in ((1280, 704), (704, 1280), (1024, 576), (832, 480)) if w * h <= max_frame_area]
    allowed = f"e.g. {', '.join(examples)}" if examples else "a smaller size"
    raise Refusal(400, "invalid_request",
                   f"size {params.size} is {area} pixels per frame, above this server's maximum of "
                   f"{max_frame_area} (max_frame_area); ask for at most {max_frame_area} pixels, {allowed}",
                   "size")
