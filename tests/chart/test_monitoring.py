"""Alerts and the dashboard query only metrics the data plane and operator export."""

from __future__ import annotations

import json
import re

import yaml

# The metric contract (histograms add _bucket/_sum/_count series).
KNOWN_METRICS = {
    "wanserve_failovers_total",
    "wanserve_requests_total",
    "wanserve_degradation_tier",
    "wanserve_rollout_phase",
    "wanserve_rollout_rollbacks_total",
    "wanserve_request_latency_seconds_bucket",
    "wanserve_queue_depth",
    "wanserve_inflight_requests",
    "wanserve_cache_requests_total",
    "wanserve_stage_latency_seconds_bucket",
    "wanserve_failover_blocked",
    "wanserve_rollout_stalled",
}
# Alerts also read what the dashboard leaves out.
ALERT_METRICS = KNOWN_METRICS | {"wanserve_capacity_requests", "wanserve_consecutive_failures"}
# The operator's own series (its /metrics); every other wanserve_* series comes from the router.
OPERATOR_METRICS = {"wanserve_failover_blocked", "wanserve_rollout_stalled", "wanserve_rollout_rollbacks_total"}
METRIC = re.compile(r"\bwanserve_[a-z_]+\b")
REQUEST_STATUSES = {"completed", "failed", "rejected"}


def _alerts(rendered):
    (rule,) = rendered.of_kind("PrometheusRule")
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


def test_rule_covers_failover_errors_capacity_metrics_operator_and_upgrades(render):
    assert set(_alerts(render("defaults"))) == {
        "WanserveConsecutiveFailures",
        "WanserveFailoverHappened",
        "WanserveErrorRateHigh",
        "WanserveDegradedTierHeld",
        "WanserveCapacityExhausted",
        "WanserveMetricsAbsent",
        "WanserveOperatorDown",
        "WanserveCanaryRolledBack",
        "WanserveFailoverImpossible",
        "WanserveRolloutStalled",
        "WanserveUpgradeUnschedulable",
    }


def test_operator_alerts_go_with_the_operator(render):
    alerts = _alerts(render(set_values=("operator.enabled=false",)))
    assert not {"WanserveOperatorDown", "WanserveRolloutStalled", "WanserveFailoverImpossible"} & set(alerts)
    assert "WanserveMetricsAbsent" in alerts


def test_alerts_use_only_known_metrics_scoped_to_this_release(render, namespace, release):
    router = f'namespace="{namespace}",service="{release}-router-metrics"'
    operator = f'namespace="{namespace}",service="{release}-operator"'
    for name, alert in _alerts(render("defaults")).items():
        assert METRIC.findall(alert["expr"]) or name in {"WanserveOperatorDown", "WanserveUpgradeUnschedulable"}, name
        assert set(METRIC.findall(alert["expr"])) <= ALERT_METRICS, name
        # Every series is read from this release's own target: its router or its operator.
        for metric, selector in re.findall(r"(wanserve_[a-z_]+)\{([^}]*)\}", alert["expr"]):
            expected = operator if metric in OPERATOR_METRICS else router
            assert selector.startswith(expected), (name, metric, selector)
        assert f'namespace="{namespace}"' in alert["expr"] or f'exported_namespace="{namespace}"' in alert["expr"], name
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"]


def test_consecutive_failures_warn_one_before_the_failover(render):
    alert = _alerts(render(set_values=("policy.failover.consecutiveFailures=5",)))["WanserveConsecutiveFailures"]
    assert alert["expr"].endswith(">= 4")
    assert _alerts(render())["WanserveConsecutiveFailures"]["expr"].endswith(">= 2")


def test_error_rate_alert_uses_the_configured_threshold_and_real_statuses(render, tmp_path):
    # `--set` passes 0.2 as a string, which the schema refuses: floats go through a values file.
    values = tmp_path / "threshold.yaml"
    values.write_text("monitoring:\n  prometheusRule:\n    errorRateThreshold: 0.2\n")
    alert = _alerts(render(values_files=(values,)))["WanserveErrorRateHigh"]
    assert alert["expr"].rstrip().endswith("> 0.2")
    statuses = set(re.findall(r"[a-z]+", " ".join(re.findall(r'status=~?"([^"]+)"', alert["expr"]))))
    assert statuses <= REQUEST_STATUSES and "failed" in statuses
    assert alert["for"] == "10m"


def test_degraded_alert_waits_for_the_configured_time(render):
    alert = _alerts(render(set_values=("monitoring.prometheusRule.degradedFor=45m",)))["WanserveDegradedTierHeld"]
    assert alert["for"] == "45m"
    assert "wanserve_degradation_tier" in alert["expr"] and "> 0" in alert["expr"]


def test_grafana_dashboard_is_valid_json_over_known_metrics(render):
    (config_map,) = [
        cm for cm in render("defaults").of_kind("ConfigMap") if cm["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    dashboard = json.loads(config_map["data"]["wanserve.json"])
    assert dashboard["uid"] == "wanserve-overview"
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = set(METRIC.findall(" ".join(exprs)))
    assert used <= KNOWN_METRICS
    # Every metric of the contract is on the dashboard somewhere.
    assert used == KNOWN_METRICS
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_file_in_the_chart_is_what_the_configmap_carries(render, chart_dir):
    (config_map,) = [cm for cm in render("defaults").of_kind("ConfigMap") if "wanserve.json" in cm["data"]]
    on_disk = json.loads((chart_dir / "dashboards" / "wanserve.json").read_text())
    assert json.loads(config_map["data"]["wanserve.json"]) == on_disk


def test_rule_and_monitors_are_plain_yaml_of_the_prometheus_operator_api(render):
    # No schema for monitoring.coreos.com here: check the API version and the fields Prometheus needs.
    for obj in render("defaults").objects:
        if obj["kind"] in {"PodMonitor", "ServiceMonitor", "PrometheusRule"}:
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            assert yaml.safe_dump(obj)
            spec = obj["spec"]
            if obj["kind"] == "PodMonitor":
                assert spec["podMetricsEndpoints"] and spec["selector"]["matchLabels"]
            if obj["kind"] == "ServiceMonitor":
                assert spec["endpoints"] and spec["selector"]["matchLabels"]


def test_the_ingress_service_monitor_keeps_wanserves_instance_label(render):
    monitors = [m for m in render().of_kind("ServiceMonitor") if m["metadata"]["name"].endswith("-ingress")]
    assert monitors, "no ingress ServiceMonitor rendered"
    assert all(endpoint.get("honorLabels") is True for endpoint in monitors[0]["spec"]["endpoints"])


def test_the_router_is_scraped_from_one_target_the_head_not_every_proxy_pod(rendered, release):
    if not rendered.of_kind("ServiceMonitor"):
        assert not [s for s in rendered.of_kind("Service") if s["metadata"]["name"].endswith("-router-metrics")]
        return
    service = rendered.named("Service", f"{release}-router-metrics")
    (port,) = service["spec"]["ports"]
    assert (port["name"], port["port"]) == ("serve", 8000)
    selector = service["spec"]["selector"]
    cluster = rendered.rayservice["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["metadata"]["labels"]
    assert selector.items() <= head.items()
    for group in cluster["workerGroupSpecs"]:
        assert not selector.items() <= group["template"]["metadata"]["labels"].items(), group["groupName"]
