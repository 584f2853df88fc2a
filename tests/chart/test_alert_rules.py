"""The PrometheusRule's alerts run by Prometheus's own rule engine: ``promtool check rules`` and ``promtool
test rules`` (Debian's `prometheus` package, installed by scripts/install-services.sh).

Each alert gets series that make it fire and series that must leave it silent: another release's series,
a second scrape target of the same router (figures are counted once), a condition that holds for less
than its ``for``. The rules tested are the ones the chart renders for the defaults.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

NS = "video"
# The release's own targets, as the Prometheus Operator labels them (namespace, service, pod, instance).
ROUTER = {"namespace": NS, "service": "wanserve-router-metrics", "job": "wanserve-router-metrics"}
OPERATOR = {"namespace": NS, "service": "wanserve-operator", "job": "wanserve-operator"}
OTHER_RELEASE = {"namespace": "team-x", "service": "other-router-metrics", "job": "other-router-metrics"}


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    selector = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{selector}}}", "values": values}


def target(base: dict[str, str], number: int = 0) -> dict[str, str]:
    """One scrape target of ``base``'s service: its own pod and address."""
    return {**base, "pod": f"{base['service']}-{number}", "endpoint": f"10.0.0.{number + 1}:8000"}


def fires(time: str, name: str, **labels: str) -> dict[str, Any]:
    return {"eval_time": time, "alertname": name, "exp_alerts": [{"exp_labels": labels}]}


def silent(time: str, name: str) -> dict[str, Any]:
    return {"eval_time": time, "alertname": name, "exp_alerts": []}


REQUEST = {"lane": "realtime", "model_version": "v1", "tier": "full", "tenant": "team-a"}

# (what it shows, input series, expectations) per alert; each runs as its own promtool test group.
CASES: list[tuple[str, list[dict[str, str]], list[dict[str, Any]]]] = [
    ("two consecutive failures warn, one does not; another release's streak is not ours", [
        series("wanserve_consecutive_failures", {**target(ROUTER), "model_version": "v1", "instance": "primary"},
               "0 1 2 2"),
        series("wanserve_consecutive_failures", {**target(OTHER_RELEASE), "model_version": "v1",
                                                 "instance": "primary"}, "5 5 5 5"),
    ], [
        silent("1m", "WanserveConsecutiveFailures"),
        fires("2m", "WanserveConsecutiveFailures", severity="warning", model_version="v1", instance="primary"),
    ]),
    ("a failover is reported once", [
        series("wanserve_failovers_total", {**target(ROUTER), "model_version": "v1"}, "0 0 0 1 1"),
        series("wanserve_failovers_total", {**target(ROUTER, 1), "model_version": "v1"}, "0 0 0 1 1"),
    ], [
        silent("2m", "WanserveFailoverHappened"),
        fires("4m", "WanserveFailoverHappened", severity="warning", model_version="v1"),
    ]),
    ("half the requests failing for 10 minutes is critical; healthy traffic is silent", [
        series("wanserve_requests_total", {**target(ROUTER), **REQUEST, "status": "failed"}, "0+60x30"),
        series("wanserve_requests_total", {**target(ROUTER), **REQUEST, "status": "completed"}, "0+60x30"),
        series("wanserve_requests_total", {**target(OTHER_RELEASE), **REQUEST, "status": "failed"}, "0+600x30"),
    ], [
        silent("8m", "WanserveErrorRateHigh"),
        fires("20m", "WanserveErrorRateHigh", severity="critical"),
    ]),
    ("only another release fails: our error rate alert stays silent", [
        series("wanserve_requests_total", {**target(ROUTER), **REQUEST, "status": "completed"}, "0+60x30"),
        series("wanserve_requests_total", {**target(OTHER_RELEASE), **REQUEST, "status": "failed"}, "0+600x30"),
    ], [
        silent("20m", "WanserveErrorRateHigh"),
    ]),
    ("a degraded tier held for its 30 minutes", [
        series("wanserve_degradation_tier", {**target(ROUTER), "tier": "reduced"}, "1x45"),
    ], [
        silent("20m", "WanserveDegradedTierHeld"),
        fires("40m", "WanserveDegradedTierHeld", severity="warning"),
    ]),
    ("load at 1.25 for 15 minutes: capacity exhausted", [
        series("wanserve_inflight_requests", target(ROUTER), "16x30"),
        series("wanserve_queue_depth", {**target(ROUTER), "lane": "realtime"}, "4x30"),
        series("wanserve_capacity_requests", target(ROUTER), "16x30"),
    ], [
        silent("10m", "WanserveCapacityExhausted"),
        fires("20m", "WanserveCapacityExhausted", severity="warning"),
    ]),
    ("two targets of one router at load 0.5: counted once, not as 1.0", [
        *(series(name, target(ROUTER, n), value) for n in (0, 1)
          for name, value in (("wanserve_inflight_requests", "8x30"), ("wanserve_capacity_requests", "16x30"))),
        *(series("wanserve_queue_depth", {**target(ROUTER, n), "lane": "batch"}, "0x30") for n in (0, 1)),
    ], [
        silent("20m", "WanserveCapacityExhausted"),
    ]),
    ("no router series for 10 minutes: metrics absent; another release's series do not count", [
        series("wanserve_capacity_requests", target(OTHER_RELEASE), "16x30"),
    ], [
        silent("5m", "WanserveMetricsAbsent"),
        fires("12m", "WanserveMetricsAbsent", severity="critical", namespace=NS,
              service="wanserve-router-metrics"),
    ]),
    ("router series present: metrics are not absent", [
        series("wanserve_capacity_requests", target(ROUTER), "16x30"),
    ], [
        silent("20m", "WanserveMetricsAbsent"),
    ]),
    ("the operator's target down for 5 minutes", [
        series("up", target(OPERATOR), "1 1 0x10"),
    ], [
        silent("4m", "WanserveOperatorDown"),
        fires("9m", "WanserveOperatorDown", severity="critical"),
    ]),
    ("no operator target at all", [], [
        fires("6m", "WanserveOperatorDown", severity="critical"),
    ]),
    ("the operator up: silent, whatever another release's operator does", [
        series("up", target(OPERATOR), "1x20"),
        series("up", {**OPERATOR, "namespace": "team-x", "pod": "x"}, "0x20"),
    ], [
        silent("15m", "WanserveOperatorDown"),
    ]),
    ("a failing primary without a backup", [
        series("wanserve_failover_blocked", {**target(OPERATOR), "model_version": "v1"}, "0 1 1 1"),
    ], [
        silent("1m", "WanserveFailoverImpossible"),
        fires("3m", "WanserveFailoverImpossible", severity="critical", model_version="v1"),
    ]),
    ("a canary without evidence for 10 minutes", [
        series("wanserve_rollout_stalled", target(OPERATOR), "1x20"),
    ], [
        silent("5m", "WanserveRolloutStalled"),
        fires("12m", "WanserveRolloutStalled", severity="warning"),
    ]),
    ("a rollback", [
        series("wanserve_rollout_rollbacks_total", target(OPERATOR), "0 0 0 1 1"),
    ], [
        silent("2m", "WanserveCanaryRolledBack"),
        fires("4m", "WanserveCanaryRolledBack", severity="warning"),
    ]),
    ("an upgrade whose new cluster cannot schedule for 15 minutes", [
        series("kuberay_service_condition_upgrade_in_progress",
               {"exported_namespace": NS, "namespace": "kuberay-system", "name": "wanserve", "condition": "true"},
               "1x30"),
        series("kube_pod_status_unschedulable", {"namespace": NS, "pod": "wanserve-x7k2p-denoiser-worker-abcde"},
               "1x30"),
    ], [
        silent("10m", "WanserveUpgradeUnschedulable"),
        fires("20m", "WanserveUpgradeUnschedulable", severity="critical"),
    ]),
    ("an upgrade that schedules, and a pending Redis pod outside any upgrade: silent", [
        series("kuberay_service_condition_upgrade_in_progress",
               {"namespace": NS, "name": "wanserve", "condition": "true"}, "1x30"),
        series("kube_pod_status_unschedulable", {"namespace": NS, "pod": "wanserve-x7k2p-head-abcde"}, "0x30"),
        series("kube_pod_status_unschedulable", {"namespace": NS, "pod": "wanserve-redis-0"}, "1x30"),
    ], [
        silent("20m", "WanserveUpgradeUnschedulable"),
    ]),
    ("unschedulable pods but no upgrade in progress: silent", [
        series("kuberay_service_condition_upgrade_in_progress",
               {"namespace": NS, "name": "wanserve", "condition": "false"}, "1x30"),
        series("kube_pod_status_unschedulable", {"namespace": NS, "pod": "wanserve-x7k2p-denoiser-worker-abcde"},
               "1x30"),
    ], [
        silent("20m", "WanserveUpgradeUnschedulable"),
    ]),
]


@pytest.fixture(scope="module")
def promtool() -> Path:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: install Debian's prometheus package (`make services`, or "
                    "`sudo apt-get install prometheus`)", pytrace=False)
    return Path(found)


@pytest.fixture(scope="module")
def groups(render: Callable[..., Any]) -> list[dict[str, Any]]:
    (rule,) = render("defaults").of_kind("PrometheusRule")
    return rule["spec"]["groups"]


def _promtool(promtool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool), *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


def _write_tests(directory: Path, groups: list[dict[str, Any]], cases: list[Any]) -> None:
    # Expectations name labels only: annotations are checked by `check rules`, not compared here.
    labels_only = [{**group, "rules": [{k: v for k, v in rule.items() if k != "annotations"}
                                       for rule in group["rules"]]} for group in groups]
    (directory / "rules.yaml").write_text(yaml.safe_dump({"groups": labels_only}))
    tests = [{"interval": "1m", "input_series": inputs, "alert_rule_test": expectations}
             for _, inputs, expectations in cases]
    (directory / "tests.yaml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}))


def test_promtool_accepts_the_rendered_groups(promtool, groups, tmp_path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    result = _promtool(promtool, "check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {sum(len(group['rules']) for group in groups)} rules found" in result.stdout


def test_every_alert_has_a_case_that_fires_and_one_that_stays_silent(groups):
    alerts = {rule["alert"] for group in groups for rule in group["rules"]}
    fired = {e["alertname"] for _, _, expectations in CASES for e in expectations if e["exp_alerts"]}
    quiet = {e["alertname"] for _, _, expectations in CASES for e in expectations if not e["exp_alerts"]}
    assert fired == alerts and quiet == alerts


def test_alerts_fire_when_they_should_and_stay_silent_when_they_should_not(promtool, groups, tmp_path):
    _write_tests(tmp_path, groups, CASES)
    result = _promtool(promtool, "test", "rules", "tests.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_expectation_fails_the_run(promtool, groups, tmp_path):
    # The harness is not vacuous: expecting the capacity alert on the counted-once case fails.
    name, inputs, _ = next(case for case in CASES if case[0].startswith("two targets of one router"))
    _write_tests(tmp_path, groups, [(name, inputs, [fires("20m", "WanserveCapacityExhausted", severity="warning")])])
    result = _promtool(promtool, "test", "rules", "tests.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert "WanserveCapacityExhausted" in result.stdout + result.stderr


def test_every_alert_has_a_runbook_section_in_the_docs(groups):
    docs = (Path(__file__).resolve().parents[2] / "docs" / "kubernetes.md").read_text()
    sections = {line.removeprefix("### ").strip() for line in docs.splitlines() if line.startswith("### ")}
    alerts = {rule["alert"] for group in groups for rule in group["rules"]}
    assert alerts <= sections, f"runbook sections missing in docs/kubernetes.md: {sorted(alerts - sections)}"
