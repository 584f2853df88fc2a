"""A job's plan as the work queue carries it: small, and enough to run the job again on any router replica.

The payload holds what admission resolved (`Plan`: the served parameters, what was asked where a tier
changed it, version, lane, cache key and scope, the tenant and its charge), when the job was accepted
(so a replica that reclaims it still reports the job's whole latency) and, for image-to-video, the
*reference* of the first frame in the artifact store, never its bytes: an entry stays far below the
queue's 64 KB. Pure: no Redis, no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from serve.app.planning import Plan
from serve.artifacts import ArtifactRef
from serve.jobs import ServedParams
from serve.params import GenerationParams

#: Bumped when the payload changes shape; a replica refuses a payload newer than it knows.
PAYLOAD_VERSION = 1


class UnreadablePayload(ValueError):
    """A queue entry this replica cannot turn back into a plan (written by a newer release, or damaged)."""


@dataclass(frozen=True)
class QueuedWork:
    """What a claimed job needs to run: its plan (the reference image not loaded yet), when it was
    accepted (Unix seconds), and where its reference image is stored."""

    plan: Plan
    accepted_at: float
    image: ArtifactRef | None = None


def work_payload(plan: Plan, accepted_at: float, image: ArtifactRef | None = None) -> dict[str, Any]:
    """The queue entry's payload for ``plan``. The requested parameters travel as their difference from
    the served ones (usually the seed alone), which keeps two 2,000-character prompts from doubling."""
    params = plan.params.model_dump(mode="json")
    requested = {name: value for name, value in plan.requested.model_dump(mode="json").items()
                 if params.get(name) != value}
    return {
        "v": PAYLOAD_VERSION,
        "params": params,
        "requested": requested,
        "version": plan.model_version,
        "lane": plan.lane,
        "key": plan.key,
        "served": None if plan.served is None else plan.served.model_dump(mode="json"),
        "tenant": plan.tenant,
        "units": plan.compute_units,
        "scope": plan.scope,
        "accepted_at": accepted_at,
        "image": None if image is None else image.model_dump(mode="json"),
    }


def queued_work(payload: dict[str, Any]) -> QueuedWork:
    """The payload of `work_payload` back as a `QueuedWork`; `UnreadablePayload` says why it cannot be."""
    version = payload.get("v")
    if not isinstance(version, int) or version > PAYLOAD_VERSION:
        raise UnreadablePayload(f"the job was queued by a newer wanserve (payload version {version!r}, this "
                                f"replica reads up to {PAYLOAD_VERSION}); let a replica of that release run it")
    try:
        params = GenerationParams.model_validate(payload["params"])
        requested = GenerationParams.model_validate({**payload["params"], **payload["requested"]})
        served = payload["served"]
        image = payload["image"]
        plan = Plan(
            requested=requested, params=params, model_version=str(payload["version"]), lane=payload["lane"],
            key=str(payload["key"]), served=None if served is None else ServedParams.model_validate(served),
            tenant=str(payload["tenant"]), compute_units=float(payload["units"]), scope=str(payload["scope"]),
        )
        if plan.lane not in ("realtime", "batch"):
            raise ValueError(f"unknown lane {plan.lane!r}")
        return QueuedWork(plan, float(payload["accepted_at"]),
                          None if image is None else ArtifactRef.model_validate(image))
    except (KeyError, TypeError, ValueError, ValidationError) as error:
        raise UnreadablePayload(f"the queued job's plan cannot be read ({type(error).__name__}: {error})"[:300]) \
            from None
