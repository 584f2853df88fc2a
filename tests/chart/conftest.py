"""Fixtures for the Helm chart tests: a helm binary, rendered scenarios and the schemas to check them.

No kube-apiserver runs here, so the chart is validated by rendering it with ``helm template`` and
checking the objects against Kubernetes' schemas, KubeRay's CRD schema, our CRD and Ray's Serve schema.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

CHART_TESTS = Path(__file__).resolve().parent
# Tests run with --import-mode=importlib and tests/ is no package: load the helm finder by path.
_spec = importlib.util.spec_from_file_location("wanserve_chart_helm_binary", CHART_TESTS / "helm_binary.py")
assert _spec is not None and _spec.loader is not None
helm_binary = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helm_binary)

REPO_ROOT: Path = helm_binary.REPO_ROOT
CHART = REPO_ROOT / "charts" / "wanserve"
# KubeRay's CRDs are test data beside the repository clone, not vendored into it.
KUBERAY_SCHEMAS = REPO_ROOT.parent / "shared" / "schemas" / "kuberay"
RELEASE = "wanserve"
NAMESPACE = "video"

SCENARIOS = ["defaults", *sorted(path.name for path in CHART_TESTS.glob("values-*.yaml"))]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that takes `scenario` over the chart defaults and each scenario values file."""
    if "scenario" in metafunc.fixturenames:
        metafunc.parametrize("scenario", SCENARIOS)


@dataclass(frozen=True)
class Rendered:
    """The objects one scenario renders, with lookups by kind."""

    scenario: str
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"{self.scenario}: expected one {kind}, got {len(found)}"
        return found[0]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        found = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.scenario}: expected one {kind} {name}, got {len(found)}"
        return found[0]

    def env_of(self, pod: str) -> dict[str, dict[str, Any]]:
        """The first container's environment of one pod spec (named as ``pod_specs`` names them)."""
        spec = dict(self.pod_specs())[pod]
        return {e["name"]: e for e in spec["containers"][0].get("env", [])}

    @property
    def rayservice(self) -> dict[str, Any]:
        return self.one("RayService")

    @property
    def serve_config(self) -> dict[str, Any]:
        return yaml.safe_load(self.rayservice["spec"]["serveConfigV2"])

    @property
    def applications(self) -> dict[str, dict[str, Any]]:
        return {app["name"]: app for app in self.serve_config["applications"]}

    @property
    def application(self) -> dict[str, Any]:
        """The router application (the Ingress, route /)."""
        return self.applications["wanserve"]

    def stage_app(self, version: str | None = None, instance: str = "primary") -> dict[str, Any]:
        """The stage application of ``version`` (default: the stable one) on ``instance``."""
        version = version or self.application["deployments"][0]["user_config"]["topology"]["stable"]
        return self.applications[f"wanserve-{version}-{instance}"]

    def deployment(self, name: str) -> dict[str, Any]:
        """The Ingress of the router, or a stage deployment of the stable version's primary instance."""
        app = self.application if name == "Ingress" else self.stage_app()
        (found,) = [d for d in app["deployments"] if d["name"] == name]
        return found

    def worker_group(self, group: str) -> dict[str, Any]:
        groups = self.rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        (found,) = [g for g in groups if g["groupName"] == group]
        return found

    def pod_specs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every pod spec the release creates, directly or through KubeRay, named for messages."""
        for kind in ("Deployment", "StatefulSet", "Job"):
            for obj in self.of_kind(kind):
                yield f"{kind}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]
        for rs in self.of_kind("RayService"):
            cluster = rs["spec"]["rayClusterConfig"]
            yield "RayService head", cluster["headGroupSpec"]["template"]["spec"]
            for group in cluster["workerGroupSpecs"]:
                yield f"RayService worker {group['groupName']}", group["template"]["spec"]


class HelmError(Exception):
    """helm exited non-zero; the message is its stderr."""


def _values_args(scenario: str, values_files: tuple[Path, ...], set_values: tuple[str, ...]) -> list[str]:
    args: list[str] = []
    if scenario != "defaults":
        args += ["-f", str(CHART_TESTS / scenario)]
    for extra in values_files:
        args += ["-f", str(extra)]
    for item in set_values:
        args += ["--set", item]
    return args


@pytest.fixture(scope="session")
def helm() -> Path:
    return helm_binary.find_helm()


@pytest.fixture(scope="session")
def chart_dir() -> Path:
    return CHART


@pytest.fixture(scope="session")
def scenario_dir() -> Path:
    return CHART_TESTS


@pytest.fixture(scope="session")
def namespace() -> str:
    return NAMESPACE


@pytest.fixture(scope="session")
def release() -> str:
    return RELEASE


@pytest.fixture(scope="session")
def run_helm(helm: Path) -> Callable[..., str]:
    def run(*args: str) -> str:
        result = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise HelmError(result.stderr.strip())
        return result.stdout

    return run


@pytest.fixture(scope="session")
def render(run_helm: Callable[..., str]) -> Callable[..., Rendered]:
    """Render a scenario (plus extra values files / --set items) with `helm template --include-crds`."""
    cache: dict[tuple[str, tuple[Path, ...], tuple[str, ...]], Rendered] = {}

    def render_scenario(
        scenario: str = "defaults",
        values_files: tuple[Path, ...] = (),
        set_values: tuple[str, ...] = (),
    ) -> Rendered:
        key = (scenario, values_files, set_values)
        if key not in cache:
            out = run_helm(
                "template",
                RELEASE,
                str(CHART),
                "--namespace",
                NAMESPACE,
                "--include-crds",
                *_values_args(scenario, values_files, set_values),
            )
            objects = [doc for doc in yaml.safe_load_all(out) if doc]
            cache[key] = Rendered(scenario, objects)
        return cache[key]

    return render_scenario


@pytest.fixture
def rendered(render: Callable[..., Rendered], scenario: str) -> Rendered:
    return render(scenario)


@pytest.fixture(scope="session")
def render_error(run_helm: Callable[..., str]) -> Callable[..., str]:
    """Render values that must fail; return helm's error message."""

    def render_failing(*set_values: str, values_file: Path | None = None, set_string: tuple[str, ...] = ()) -> str:
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        if values_file is not None:
            args += ["-f", str(values_file)]
        for item in set_values:
            args += ["--set", item]
        for item in set_string:
            args += ["--set-string", item]
        try:
            run_helm(*args)
        except HelmError as error:
            return str(error)
        raise AssertionError(f"helm template accepted values that must fail: {set_values or values_file}")

    return render_failing


def strict_structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Make a CRD's openAPIV3Schema reject unknown fields, as `kubectl apply --validate=strict` does.

    A structural schema only prunes unknown fields, so plain JSON Schema validation would let a typo
    through; here every object that lists its properties and preserves nothing gets
    ``additionalProperties: false``.
    """
    schema = copy.deepcopy(schema)

    def tighten(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                tighten(value)
        elif isinstance(node, list):
            for value in node:
                tighten(value)

    tighten(schema)
    return schema


def crd_validator(crd: dict[str, Any], version: str) -> jsonschema.protocols.Validator:
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = strict_structural(served["schema"]["openAPIV3Schema"])
    # OpenAPI v3.0 schema objects follow JSON Schema draft 4 (e.g. boolean exclusiveMinimum).
    return jsonschema.Draft4Validator(schema)


@pytest.fixture(scope="session")
def rayservice_validator() -> jsonschema.protocols.Validator:
    path = KUBERAY_SCHEMAS / "ray.io_rayservices.yaml"
    if not path.exists():
        pytest.fail(f"KubeRay CRDs not found at {KUBERAY_SCHEMAS}: they are test data beside the repo clone")
    return crd_validator(yaml.safe_load(path.read_text()), "v1")


@pytest.fixture(scope="session")
def our_crd() -> dict[str, Any]:
    return yaml.safe_load((CHART / "crds" / "videoservingpolicies.wanserve.io.yaml").read_text())


@pytest.fixture(scope="session")
def policy_validator(our_crd: dict[str, Any]) -> jsonschema.protocols.Validator:
    return crd_validator(our_crd, "v1alpha1")


@pytest.fixture(scope="session")
def values_schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


@pytest.fixture(scope="session")
def default_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())
