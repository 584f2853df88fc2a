"""A step or pass given up between two blocks leaves nothing changed: run again, it gives the same result."""

from __future__ import annotations

import pytest
import torch

from serve.pipeline.denoiser import DenoiseRequest
from serve.pipeline.preemption import Preempted
from serve.pipeline.stages import StagePipeline, encode_request, shape_of
from serve.step_cache import StepCache


@pytest.fixture(scope="module")
def stages(tiny_dir):
    return StagePipeline(tiny_dir)


def _on_call(number):
    """Says "yield" at its ``number``-th question only: before that block of the forward."""
    asked = []

    def ask():
        asked.append(1)
        return len(asked) == number

    ask.asked = asked
    return ask


def _requests(stages, params, seeds):
    embeddings = encode_request(stages.text_encoder, params)
    return [DenoiseRequest(embeddings, shape_of(params), seed) for seed in seeds]


def test_a_step_preempted_between_two_blocks_changes_nothing_and_runs_again_exactly(stages, small_params):
    denoiser = stages.denoiser
    requests = _requests(stages, small_params, seeds=(3, 4))
    states = [denoiser.start(request) for request in requests]
    before = [state.latents.clone() for state in states]
    ask = _on_call(2)
    with pytest.raises(Preempted):
        denoiser.step(states, ask)  # the cond branch's second block
    assert len(ask.asked) == 2
    assert [state.done for state in states] == [0, 0]
    assert all(torch.equal(state.latents, old) for state, old in zip(states, before, strict=True))
    while not states[0].finished:
        denoiser.step(states, lambda: False)
    expected = denoiser.denoise_batch(requests)
    for state, latents in zip(states, expected, strict=True):
        assert torch.equal(denoiser.result(state), latents)


def test_a_step_cached_group_is_not_preempted(stages, small_params):
    params = small_params.model_copy(update={"step_cache": StepCache(threshold=0.05)})
    denoiser = stages.denoiser
    states = [denoiser.start(request) for request in _requests(stages, params, seeds=(5,))]
    denoiser.step(states, lambda: True)  # its hooks keep state across the forward: it runs to the end
    assert states[0].done == 1


def test_an_encoder_pass_preempted_between_two_blocks_runs_again_exactly(stages):
    encoder = stages.text_encoder
    with pytest.raises(Preempted):
        encoder.embed(["a lighthouse in a storm"], _on_call(2))
    assert torch.equal(encoder.embed(["a lighthouse in a storm"], lambda: False),
                       encoder.embed(["a lighthouse in a storm"]))


def test_without_a_question_nothing_is_preempted(stages, small_params):
    denoiser = stages.denoiser
    states = [denoiser.start(request) for request in _requests(stages, small_params, seeds=(6,))]
    denoiser.step(states)
    assert states[0].done == 1


async def test_a_realtime_prompt_preempts_the_batch_pass_running_in_the_text_encoder(stages, tmp_path):
    """In the TextEncoder stage, a batch pass running when a realtime request arrives gives the device
    up before its next block; the realtime pass runs, then the batch pass again; both are exact."""
    import asyncio
    import threading

    from serve.app import stages as stage_module
    from serve.app.cancellation import JobTasks
    from serve.app.device_arbiter import DeviceArbiter
    from serve.app.messages import EncodeTask
    from serve.app.priority_lock import BATCH, REALTIME
    from tests.app.durable_support import RecordedTelemetry

    encoder = stages.text_encoder
    stage = stage_module.TextEncoderDeployment.func_or_class.__new__(stage_module.TextEncoderDeployment.func_or_class)
    stage.models, stage.telemetry, stage.jobs = {"v": encoder}, RecordedTelemetry(), JobTasks()
    stage.device = DeviceArbiter("cpu", tmp_path)
    inside, go_on, finished = threading.Event(), threading.Event(), []

    def pause_in_first_block(module, args):
        if not go_on.is_set():
            inside.set()
            go_on.wait(30)

    hook = encoder.model.encoder.block[0].register_forward_pre_hook(pause_in_first_block)
    try:
        async def encode(job_id, prompt, priority):
            embeddings = await stage.encode(EncodeTask(job_id, "v", prompt, None, priority))
            finished.append(job_id)
            return embeddings

        batch = asyncio.create_task(encode("b", "a drone shot of waves", BATCH))
        assert await asyncio.to_thread(inside.wait, 30)
        realtime = asyncio.create_task(encode("r", "a red fox in the snow", REALTIME))
        await asyncio.sleep(0.05)  # the realtime request waits for the device now
        go_on.set()
        realtime_embeddings, batch_embeddings = await asyncio.wait_for(asyncio.gather(realtime, batch), 60)
    finally:
        hook.remove()
    assert finished == ["r", "b"]
    assert stage.telemetry.count("wanserve_batch_preemptions_total", "text_encoder") == 1
    assert torch.equal(realtime_embeddings.cond, encoder.embed(["a red fox in the snow"]))
    assert torch.equal(batch_embeddings.cond, encoder.embed(["a drone shot of waves"]))
