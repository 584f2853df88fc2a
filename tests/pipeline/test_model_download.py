"""`wanserve download-model`: the pinned revision and the token from the environment reach Hugging Face's
`snapshot_download` (the Hub cannot be reached here: a stand-in writes the tiny checkpoint where the real
one would), and the result is checked before the Job reports success."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest

from serve.cli import main
from serve.pipeline.model_download import download_model
from serve.pipeline.model_files import IncompleteModel


class Hub:
    """Records the call; fills ``local_dir`` with the tiny checkpoint, minus ``drop``."""

    def __init__(self, source: Path, drop: str | None = None) -> None:
        self.source, self.drop = source, drop
        self.calls: list[dict[str, Any]] = []

    def snapshot_download(self, **kwargs: Any) -> str:
        self.calls.append(kwargs)
        shutil.copytree(self.source, kwargs["local_dir"], dirs_exist_ok=True)
        if self.drop:
            (Path(kwargs["local_dir"]) / self.drop).unlink()
        return str(kwargs["local_dir"])


def test_the_pinned_revision_and_the_token_reach_the_hub(tiny_dir, tmp_path, monkeypatch) -> None:
    hub = Hub(tiny_dir)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    target = tmp_path / "models" / "Wan2.2-TI2V-5B-Diffusers"
    assert download_model("Wan-AI/Wan2.2-TI2V-5B-Diffusers", "0a1b2c3", target) == target
    assert hub.calls == [{"repo_id": "Wan-AI/Wan2.2-TI2V-5B-Diffusers", "revision": "0a1b2c3",
                          "local_dir": str(target), "token": "hf_secret"}]


def test_an_incomplete_download_fails_the_job_naming_the_missing_file(tiny_dir, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        Hub(tiny_dir, drop="vae/diffusion_pytorch_model.safetensors").snapshot_download)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(IncompleteModel):
        download_model("Wan-AI/Wan2.2-TI2V-5B-Diffusers", "0a1b2c3", tmp_path / "m")
    assert main(["download-model", str(tmp_path / "n"), "--revision", "0a1b2c3"]) == 1
    assert "vae/<weights: *.safetensors>" in capsys.readouterr().err
