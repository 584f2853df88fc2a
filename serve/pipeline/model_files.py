"""Is a model directory complete? What a diffusers-format Wan2.2 checkpoint must hold before Serve loads it.

A download that stopped half-way (a pod evicted, a token that expired, a full volume) leaves a directory
that looks right at the top and fails minutes later inside a stage's ``from_pretrained`` with a message
about one tensor. This check reads ``model_index.json``, then each component's config and every weight
file its index names, and says which files are missing, before Serve starts (the chart runs it as an
init container of every worker pod: ``wanserve check-model DIR``).
"""

from __future__ import annotations

import json
from pathlib import Path

#: What each kind of component must hold besides its folder: a config, and weights or tokenizer files.
CONFIG_FILES = {
    "scheduler": ("scheduler_config.json",),
    "tokenizer": ("tokenizer_config.json",),
}
WEIGHT_SUFFIXES = (".safetensors", ".bin")
#: What Hugging Face's downloader leaves (under ``.cache/huggingface/download``) while a file is arriving.
PARTIAL_SUFFIX = ".incomplete"


class IncompleteModel(Exception):
    """The directory lacks files a stage would load; ``missing`` lists them relative to the directory."""

    def __init__(self, root: Path, missing: list[str]) -> None:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        super().__init__(
            f"model directory {root} is incomplete: missing {shown}. Expected the layout of "
            "Wan-AI/Wan2.2-TI2V-5B-Diffusers. If the chart downloads the weights (model.download), wait for its "
            "model-download Job to finish (kubectl get jobs -l app.kubernetes.io/component=model-download; "
            "its logs say why it stopped); else copy the missing files onto the model volume."
        )
        self.root, self.missing = root, missing


def _components(index: dict[str, object]) -> list[str]:
    """Components ``model_index.json`` names with a class (``[null, null]`` entries are absent by design)."""
    return [name for name, value in index.items()
            if not name.startswith("_") and isinstance(value, list) and len(value) == 2 and value[1] is not None]


def _weights_missing(folder: Path, prefix: str) -> list[str]:
    """Weight files of one model component: every shard a ``*.index.json`` names, or one weight file."""
    indexes = sorted(folder.glob("*.index.json"))
    if indexes:
        missing: list[str] = []
        for index_file in indexes:
            shards = sorted(set(json.loads(index_file.read_text()).get("weight_map", {}).values()))
            missing += [f"{prefix}/{shard}" for shard in shards if not (folder / shard).is_file()]
        return missing
    if any(path.suffix in WEIGHT_SUFFIXES and path.stat().st_size > 0 for path in folder.iterdir()):
        return []
    return [f"{prefix}/<weights: *.safetensors>"]


def missing_files(model_dir: str | Path) -> list[str]:
    """Files (relative to ``model_dir``) a complete checkpoint has and this one lacks; empty when complete."""
    root = Path(model_dir)
    if not root.is_dir():
        return ["."]
    index_path = root / "model_index.json"
    if not index_path.is_file():
        return ["model_index.json"]
    missing: list[str] = []
    for name in _components(json.loads(index_path.read_text())):
        folder = root / name
        if not folder.is_dir():
            missing.append(f"{name}/")
            continue
        configs = CONFIG_FILES.get(name, ("config.json",))
        missing += [f"{name}/{config}" for config in configs if not (folder / config).is_file()]
        if name not in CONFIG_FILES:
            missing += _weights_missing(folder, name)
    # A file still arriving may already exist under its final name in another layout: say it is partial.
    missing += [f"{path.relative_to(root)} (still downloading)" for path in sorted(root.rglob(f"*{PARTIAL_SUFFIX}"))]
    return missing


def require_complete(model_dir: str | Path) -> Path:
    """``model_dir`` as a Path, or `IncompleteModel` naming what is missing."""
    missing = missing_files(model_dir)
    if missing:
        raise IncompleteModel(Path(model_dir), missing)
    return Path(model_dir)
