"""The operator's slim image: the operator imports with torch, Ray and the model stack absent, and needs
no distribution beyond operators/requirements.txt (and what those depend on), which the Dockerfile's
`operator` target installs. No container engine runs here, so the image itself is not built."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "operators" / "requirements.txt"
# What a GPU serving image carries and the operator must not need.
HEAVY = ("torch", "ray", "diffusers", "transformers", "accelerate", "numpy", "safetensors", "imageio",
         "imageio_ffmpeg", "tokenizers", "PIL", "fastapi")

# Import the operator in a fresh interpreter where only ``allowed`` third-party modules exist, as in the image.
_IMPORT_OPERATOR = """
import importlib.abc, json, sys
ALLOWED = set(json.loads(sys.argv[1]))
OURS = {"operators", "serve"}
class OnlyTheImage(importlib.abc.MetaPathFinder):
    # Every finder, but blind to third-party modules the image does not install.
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path, target=None):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top in OURS or top in ALLOWED or top.startswith("_"):
            return self.finder.find_spec(name, path, target)
        return None
    def invalidate_caches(self):
        getattr(self.finder, "invalidate_caches", lambda: None)()
sys.meta_path[:] = [OnlyTheImage(finder) for finder in sys.meta_path]
import operators.cli, operators.kube.handlers, operators.local_loop
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules} - set(sys.stdlib_module_names) - OURS)))
"""


def _requirements() -> list[Requirement]:
    lines = [line.strip() for line in REQUIREMENTS.read_text().splitlines()]
    return [Requirement(line) for line in lines if line and not line.startswith("#")]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(roots: list[Requirement]) -> set[str]:
    """The distributions pip installs for ``roots``: them and their dependencies for this environment."""
    environment = default_environment()
    seen: set[str] = set()
    todo = [requirement.name for requirement in roots]
    while todo:
        name = _normal(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({**environment, "extra": ""}):
                todo.append(requirement.name)
    return seen


def _modules_of(distributions: set[str]) -> set[str]:
    """Top-level modules the given distributions install."""
    return {module for module, dists in metadata.packages_distributions().items()
            if any(_normal(dist) in distributions for dist in dists)}


def _import_operator_with(allowed: set[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _IMPORT_OPERATOR, json.dumps(sorted(allowed))],
                          capture_output=True, text=True, cwd=REPO, timeout=120, check=False)


def test_the_operator_imports_with_only_its_requirements_installed() -> None:
    allowed = _modules_of(_closure(_requirements()))
    result = _import_operator_with(allowed)
    assert result.returncode == 0, f"the operator needs something the slim image lacks:\n{result.stderr[-2000:]}"
    imported = set(json.loads(result.stdout.splitlines()[-1]))
    assert {"kopf", "kubernetes", "pydantic", "redis"} <= imported
    assert not imported & set(HEAVY)


def test_the_check_fails_when_a_requirement_is_missing() -> None:
    # Without kopf in the image the operator cannot start: the emulation above must see that.
    allowed = _modules_of(_closure(_requirements())) - {"kopf"}
    result = _import_operator_with(allowed)
    assert result.returncode != 0 and "kopf" in result.stderr


def test_the_requirements_name_no_heavy_distribution() -> None:
    names = {requirement.name.lower() for requirement in _requirements()}
    assert {"kopf", "kubernetes"} <= names
    assert not _closure(_requirements()) & {"torch", "ray", "diffusers", "transformers", "nvidia-cuda-runtime-cu12"}


def test_the_dockerfile_builds_the_operator_target_from_those_requirements_without_dependencies() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    stages = dict(re.findall(r"^FROM \S+ AS (\w+)\n(.*?)(?=^FROM |\Z)", dockerfile, flags=re.M | re.S))
    assert set(stages) == {"operator", "serving"}
    operator = stages["operator"]
    assert "pip install --no-cache-dir -r operators/requirements.txt" in operator
    assert "pip install --no-cache-dir --no-deps ." in operator
    assert "USER 1000:100" in operator  # the chart's podSecurityContext
    assert "RAY_IMAGE" not in operator
