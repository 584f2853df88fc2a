"""Fetch a checkpoint from the Hugging Face Hub into the model volume (the chart's download Job).

The token comes from the environment (``HF_TOKEN``, from a Secret), never from an argument that `ps`
would show; the revision is pinned so every pod of a release loads the same weights. The download is
resumable: a Job that restarts continues where it stopped, and files already complete are kept.
"""

from __future__ import annotations

import os
from pathlib import Path

from serve.pipeline.model_files import require_complete


def download_model(repo_id: str, revision: str, model_dir: str | Path) -> Path:
    """Download ``repo_id`` at ``revision`` into ``model_dir``, then check it is complete."""
    from huggingface_hub import snapshot_download

    target = Path(model_dir)
    target.mkdir(parents=True, exist_ok=True)
    snapshot_download(
        repo_id=repo_id,
        revision=revision,
        local_dir=str(target),
        token=os.environ.get("HF_TOKEN") or None,
    )
    return require_complete(target)
