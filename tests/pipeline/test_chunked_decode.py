"""The Decoder decodes a latent frame (or a few) at a time, and the frames are those of a whole decode."""

import numpy as np
import pytest
import torch

from serve.pipeline.decoder import Decoder


@pytest.fixture(scope="module")
def decoder(tiny_dir):
    return Decoder(tiny_dir)


def _latents(seed, frames=4):
    return torch.randn((1, 48, frames, 8, 16), generator=torch.Generator().manual_seed(seed))


def _whole_decode(decoder, latents):
    """diffusers' own path: AutoencoderKLWan.decode over every frame at once, then postprocess."""
    with torch.inference_mode():
        z = latents / decoder._inv_std + decoder._mean
        video = decoder.vae.decode(z, return_dict=False)[0]
        return decoder._processor.postprocess_video(video, output_type="np")[0]


@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_chunks_give_the_frames_of_a_whole_decode(decoder, chunk):
    latents = _latents(seed=0)
    state = decoder.start_decode(latents)
    sizes = []
    while not state.finished:
        sizes.append(len(decoder.decode_chunk(state, chunk)))
    expected = _whole_decode(decoder, latents)
    assert expected.shape == (13, 128, 256, 3)
    assert np.array_equal(np.concatenate(state.pixel_frames), expected)
    # 1 pixel frame for the first latent frame, 4 for each later one.
    assert sizes == {1: [1, 4, 4, 4], 2: [5, 8], 4: [13]}[chunk]


def test_two_videos_decoded_in_turns_each_match_a_whole_decode(decoder):
    first, second = _latents(seed=1), _latents(seed=2, frames=3)
    states = [decoder.start_decode(first), decoder.start_decode(second)]
    while not all(state.finished for state in states):
        for state in states:
            if not state.finished:
                decoder.decode_chunk(state)
    for state, latents in zip(states, (first, second), strict=True):
        assert np.array_equal(np.concatenate(state.pixel_frames), _whole_decode(decoder, latents))


def test_decode_is_the_chunks_in_one_go(decoder):
    latents = _latents(seed=3, frames=2)
    assert np.array_equal(decoder.decode(latents), _whole_decode(decoder, latents))


def test_a_finished_decode_drops_its_causal_cache(decoder):
    state = decoder.start_decode(_latents(seed=4, frames=2))
    decoder.decode_chunk(state)
    assert any(entry is not None for entry in state.feat_map)
    decoder.decode_chunk(state)
    assert state.finished and state.feat_map == []


async def test_a_batch_videos_mp4_encoding_waits_while_realtime_work_is_in_flight_on_the_cpu(
    decoder, tmp_path, monkeypatch
):
    """On the CPU, encoding the mp4 is CPU work too: a batch video's waits for realtime work to clear."""
    import asyncio

    from serve.app import stages
    from serve.app.cancellation import JobTasks
    from serve.app.device_arbiter import MARKS_ENV, DeviceArbiter, arbiter_for
    from serve.app.messages import DecodeTask, LatentsReady
    from serve.app.telemetry import Telemetry

    monkeypatch.setenv(MARKS_ENV, str(tmp_path))
    arbiter_for.cache_clear()
    device = arbiter_for("cpu")  # as a Decoder replica on the CPU gets it
    arbiter_for.cache_clear()
    # Another stage process on this host's CPU (the same Ray node, when this test process runs Ray).
    marked = DeviceArbiter("cpu", tmp_path, node=device.node).realtime_in_flight()
    latents = _latents(seed=1, frames=2)
    decode_chunk = decoder.decode_chunk

    def last_chunk_then_realtime_arrives(state, frames):
        pixels = decode_chunk(state, frames)
        if state.finished:
            marked.__enter__()
        return pixels

    encoded = []
    encode_video = stages._encode_video
    monkeypatch.setattr(decoder, "decode_chunk", last_chunk_then_realtime_arrives)
    monkeypatch.setattr(stages, "_encode_video", lambda *args: encoded.append(1) or encode_video(*args))

    stage = stages.DecoderDeployment.func_or_class.__new__(stages.DecoderDeployment.func_or_class)
    stage.models, stage.telemetry, stage.jobs = {"v": decoder}, Telemetry("test"), JobTasks()
    stage.device = device

    async def ready():
        return latents

    decoding = asyncio.create_task(stage.decode(DecodeTask("j", "v", fps=8, priority=1), LatentsReady(ready())))
    await asyncio.sleep(1.0)
    assert not decoding.done() and encoded == []  # every chunk decoded; the mp4 waits
    marked.__exit__(None, None, None)
    artifact = await asyncio.wait_for(decoding, 30)
    assert encoded == [1] and artifact.num_frames == 5 and artifact.mp4[4:8] == b"ftyp"
