"""The completeness check of a model directory, on copies of the tiny checkpoint with parts taken away."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from serve.cli import main
from serve.pipeline.model_files import IncompleteModel, missing_files, require_complete


@pytest.fixture
def model_copy(tiny_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_dir, tmp_path / "model"))


def test_the_tiny_checkpoint_is_complete(model_copy: Path) -> None:
    assert missing_files(model_copy) == []
    assert require_complete(model_copy) == model_copy


def test_a_missing_weight_file_is_named(model_copy: Path) -> None:
    (model_copy / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    assert missing_files(model_copy) == ["transformer/<weights: *.safetensors>"]


def test_a_missing_shard_of_a_sharded_component_is_named(model_copy: Path) -> None:
    vae = model_copy / "vae"
    (vae / "diffusion_pytorch_model.safetensors").rename(vae / "diffusion_pytorch_model-00001-of-00002.safetensors")
    (vae / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "diffusion_pytorch_model-00001-of-00002.safetensors",
        "b": "diffusion_pytorch_model-00002-of-00002.safetensors"}}))
    assert missing_files(model_copy) == ["vae/diffusion_pytorch_model-00002-of-00002.safetensors"]


def test_missing_component_folder_config_and_tokenizer_are_all_named(model_copy: Path) -> None:
    shutil.rmtree(model_copy / "text_encoder")
    (model_copy / "scheduler" / "scheduler_config.json").unlink()
    (model_copy / "tokenizer" / "tokenizer_config.json").unlink()
    assert missing_files(model_copy) == ["scheduler/scheduler_config.json", "text_encoder/",
                                         "tokenizer/tokenizer_config.json"]


def test_a_file_still_downloading_makes_it_incomplete(model_copy: Path) -> None:
    partial = model_copy / ".cache" / "huggingface" / "download" / "transformer"
    partial.mkdir(parents=True)
    (partial / "abc123.incomplete").write_bytes(b"\0" * 16)
    partial_name = ".cache/huggingface/download/transformer/abc123.incomplete"
    assert missing_files(model_copy) == [f"{partial_name} (still downloading)"]


def test_no_model_index_or_no_directory(tmp_path: Path) -> None:
    assert missing_files(tmp_path / "absent") == ["."]
    assert missing_files(tmp_path) == ["model_index.json"]


def test_the_error_says_what_is_missing_and_what_to_do(model_copy: Path) -> None:
    shutil.rmtree(model_copy / "vae")
    with pytest.raises(IncompleteModel) as raised:
        require_complete(model_copy)
    message = str(raised.value)
    assert "missing vae/" in message
    assert "model-download" in message and "Wan-AI/Wan2.2-TI2V-5B-Diffusers" in message


def test_check_model_command_exit_status(model_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-model", str(model_copy)]) == 0
    (model_copy / "vae" / "config.json").unlink()
    assert main(["check-model", str(model_copy)]) == 1
    assert "missing vae/config.json" in capsys.readouterr().err
