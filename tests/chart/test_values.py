"""values.yaml documents every value, and values.schema.json is kept in step with it."""

from __future__ import annotations

import re

import yaml

KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):")


def _leaf_paths(node, prefix=()):
    """Paths to every value that is not a nested map of our own (lists and maps of free keys are leaves)."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaf_paths(value, (*prefix, key))
    else:
        yield prefix


def _schema_paths(schema, defs, prefix=()):
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    properties = schema.get("properties")
    if schema.get("type") == "object" and properties:
        for key, sub in properties.items():
            yield from _schema_paths(sub, defs, (*prefix, key))
    else:
        yield prefix


def test_every_value_has_a_doc_comment(chart_dir):
    """Every value carries a `# --` comment, itself or through a documented parent (e.g. resources)."""
    lines = (chart_dir / "values.yaml").read_text().splitlines()
    undocumented = []
    stack: list[tuple[int, str, bool]] = []
    for number, line in enumerate(lines):
        match = KEY_LINE.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        comments = []
        back = number - 1
        while back >= 0 and lines[back].strip().startswith("#"):
            comments.append(lines[back].strip())
            back -= 1
        documented = any(c.startswith("# --") for c in comments) or any(doc for *_, doc in stack)
        stack.append((indent, match["key"], documented))
        value = line.split(":", 1)[1].strip()
        following = [ln for ln in lines[number + 1 :] if ln.strip() and not ln.strip().startswith("#")]
        nested = bool(following) and len(following[0]) - len(following[0].lstrip()) > indent
        is_section = value == "" and nested and not following[0].lstrip().startswith("-")
        if not documented and not is_section:
            undocumented.append(".".join(key for _, key, _ in stack))
    assert undocumented == []


def test_schema_knows_every_value_in_values_yaml(default_values, values_schema):
    defs = values_schema["$defs"]
    schema_paths = set(_schema_paths(values_schema, defs))
    missing = []
    for path in _leaf_paths(default_values):
        # Covered when the schema describes it, a parent of it as a free-form leaf, or (for an empty
        # map by default) its children.
        if not any(path[: len(known)] == known or known[: len(path)] == path for known in schema_paths):
            missing.append(".".join(path))
    assert missing == []


def test_values_yaml_has_every_value_the_schema_describes(default_values, values_schema):
    defs = values_schema["$defs"]
    missing = []
    for path in _schema_paths(values_schema, defs):
        node = default_values
        for part in path:
            if not isinstance(node, dict) or part not in node:
                # Optional keys: a parent map that is empty by default ({}), or documented overrides.
                if node == {} or path[0] == "global":
                    break
                missing.append(".".join(path))
                break
            node = node[part]
    allowed_absent = {
        "ray.upgradeStrategy.clusterUpgradeOptions.gatewayClassName",
        "ray.upgradeStrategy.clusterUpgradeOptions.stepSizePercent",
        "ray.upgradeStrategy.clusterUpgradeOptions.intervalSeconds",
        "ray.upgradeStrategy.clusterUpgradeOptions.maxSurgePercent",
    }
    assert sorted(set(missing) - allowed_absent) == []


def test_stage_set_is_fixed_in_the_schema(values_schema):
    stages = values_schema["properties"]["stages"]
    assert stages["additionalProperties"] is False
    assert sorted(stages["required"]) == ["decoder", "denoiser", "textEncoder"]


def test_gpu_count_and_replicas_are_non_negative_integers_in_the_schema(values_schema):
    stage = values_schema["$defs"]["stage"]["properties"]
    workers = stage["workers"]["properties"]
    assert workers["gpu"]["properties"]["count"] == {
        "type": "integer",
        "minimum": 0,
        "description": "GPUs per worker pod, an integer",
    }
    for key in ("minReplicas", "maxReplicas"):
        assert workers[key]["type"] == "integer" and workers[key]["minimum"] >= 0
        assert stage["autoscaling"]["properties"][key]["type"] == "integer"


def test_scenario_files_start_with_a_comment_that_says_what_they_show(scenario_dir):
    for path in sorted(scenario_dir.glob("values-*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# Scenario "), path.name
        assert yaml.safe_load(path.read_text()), path.name
