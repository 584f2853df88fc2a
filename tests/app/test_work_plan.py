"""The work queue's payload: a plan goes in small and comes back the same, or is refused with a reason."""

from __future__ import annotations

import json

import pytest

from serve.app.planning import Plan
from serve.app.work_plan import UnreadablePayload, queued_work, work_payload
from serve.artifacts import ArtifactRef, tenant_owner
from serve.jobs import ServedParams
from serve.params import GenerationParams

ASKED = GenerationParams(prompt="  a red fox ", width=1280, height=704, num_frames=121, num_inference_steps=50)
SERVED = GenerationParams(prompt="a red fox", width=640, height=352, num_frames=121, num_inference_steps=25, seed=7)
PLAN = Plan(ASKED, SERVED, "wan2.2-ti2v-5b", "batch", "f" * 64,
            ServedParams(tier="half", size="640x352", num_frames=121, num_inference_steps=25), "team-a", 0.5,
            "tenant:team-a")


def test_a_plan_comes_back_from_its_payload_as_it_went_in() -> None:
    image = ArtifactRef.of(tenant_owner("team-a"), b"\x89PNG frame", "image/png")
    work = queued_work(json.loads(json.dumps(work_payload(PLAN, 1_700_000_000.5, image))))
    assert work.plan == PLAN
    assert work.accepted_at == 1_700_000_000.5 and work.image == image


def test_the_requested_parameters_travel_as_their_difference_from_the_served_ones() -> None:
    payload = work_payload(PLAN, 0.0)
    assert set(payload["requested"]) == {"prompt", "width", "height", "num_inference_steps", "seed"}


def test_a_payload_stays_small_with_the_longest_prompts() -> None:
    prompt = "\u4e00" * 2000  # six bytes each once JSON escapes it
    served = GenerationParams(prompt=prompt, negative_prompt=prompt, seed=7)
    plan = Plan(served.model_copy(update={"seed": None}), served, "v", "realtime", "k" * 64, None, "t", 1.0,
                "tenant:t")
    assert len(json.dumps(work_payload(plan, 0.0))) < 32 * 1024  # the queue takes 64 KB


def test_a_payload_from_a_newer_release_is_refused_naming_it() -> None:
    with pytest.raises(UnreadablePayload, match="newer wanserve"):
        queued_work({**work_payload(PLAN, 0.0), "v": 2})


@pytest.mark.parametrize("damage", [{"lane": "express"}, {"params": {"prompt": ""}}, {"units": "many"}])
def test_a_damaged_payload_is_refused_with_what_was_wrong(damage: dict[str, object]) -> None:
    with pytest.raises(UnreadablePayload, match="cannot be read"):
        queued_work({**work_payload(PLAN, 0.0), **damage})
