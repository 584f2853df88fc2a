"""The chart lints strictly and renders every scenario into the objects each one promises."""

from __future__ import annotations

KINDS_ALWAYS = {"RayService", "CustomResourceDefinition", "Deployment", "VideoServingPolicy"}
MONITORING_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}


def test_helm_lint_strict_passes(run_helm, chart_dir, scenario_dir, scenario):
    args = ["lint", "--strict", str(chart_dir)]
    if scenario != "defaults":
        args += ["-f", str(scenario_dir / scenario)]
    out = run_helm(*args)
    assert "0 chart(s) failed" in out


def test_scenario_renders_the_core_objects(rendered):
    kinds = {obj["kind"] for obj in rendered.objects}
    assert kinds >= KINDS_ALWAYS


def test_every_object_is_labelled_with_the_release(rendered, release):
    for obj in rendered.objects:
        if obj["kind"] == "CustomResourceDefinition":
            continue  # crds/ are installed once per cluster, outside any release
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/instance") == release, obj["metadata"]["name"]
        assert labels.get("app.kubernetes.io/part-of") == "wanserve", obj["metadata"]["name"]


def test_object_names_are_unique_per_kind(rendered):
    seen = [(obj["kind"], obj["metadata"]["name"]) for obj in rendered.objects]
    assert len(seen) == len(set(seen))


def test_monitoring_off_renders_no_prometheus_operator_objects(render):
    kinds = {obj["kind"] for obj in render("values-04-monitoring-off.yaml").objects}
    assert not kinds & MONITORING_KINDS
    assert not any(
        obj["kind"] == "ConfigMap" and "grafana_dashboard" in obj["metadata"].get("labels", {})
        for obj in render("values-04-monitoring-off.yaml").objects
    )


def test_monitoring_on_renders_head_and_worker_podmonitors(render, release):
    monitors = {m["metadata"]["name"]: m for m in render("defaults").of_kind("PodMonitor")}
    assert set(monitors) == {f"{release}-ray-head", f"{release}-ray-workers"}
    head = monitors[f"{release}-ray-head"]["spec"]
    assert head["selector"]["matchLabels"]["ray.io/node-type"] == "head"
    assert [e["port"] for e in head["podMetricsEndpoints"]] == ["metrics", "as-metrics", "dash-metrics"]
    workers = monitors[f"{release}-ray-workers"]["spec"]
    assert workers["selector"]["matchLabels"]["ray.io/node-type"] == "worker"


def test_podmonitor_ports_exist_on_the_ray_containers(render):
    rendered = render("defaults")
    cluster = rendered.rayservice["spec"]["rayClusterConfig"]
    head_ports = {p["name"] for p in cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]}
    for monitor in rendered.of_kind("PodMonitor"):
        node_type = monitor["spec"]["selector"]["matchLabels"]["ray.io/node-type"]
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            if node_type == "head":
                assert endpoint["port"] in head_ports
            else:
                for group in cluster["workerGroupSpecs"]:
                    ports = {p["name"] for p in group["template"]["spec"]["containers"][0]["ports"]}
                    assert endpoint["port"] in ports


def test_ingress_servicemonitor_selects_the_router_metrics_service_only(render, release):
    rendered = render("defaults")
    monitors = {m["metadata"]["name"]: m for m in rendered.of_kind("ServiceMonitor")}
    ingress = monitors[f"{release}-ingress"]["spec"]
    # Not KubeRay's serve Service (every proxy pod): the chart's router-metrics Service, one target.
    selected = [s["metadata"]["name"] for s in rendered.of_kind("Service")
                if ingress["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert selected == [f"{release}-router-metrics"]
    (endpoint,) = ingress["endpoints"]
    assert {key: endpoint[key] for key in ("port", "path", "interval", "honorLabels")} == {
        "port": "serve", "path": "/metrics", "interval": "15s", "honorLabels": True}


def test_operator_servicemonitor_matches_the_operator_service(render, release):
    rendered = render("defaults")
    monitor = next(m for m in rendered.of_kind("ServiceMonitor") if m["metadata"]["name"] == f"{release}-operator")
    service = next(s for s in rendered.of_kind("Service") if s["metadata"]["name"] == f"{release}-operator")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_monitoring_objects_carry_the_prometheus_selector_label(render):
    for obj in render("values-06-hardened.yaml").objects:
        if obj["kind"] in MONITORING_KINDS:
            assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_pdbs_select_pods_the_rayservice_creates(render):
    rendered = render("defaults")
    cluster = rendered.rayservice["spec"]["rayClusterConfig"]
    pod_labels = [cluster["headGroupSpec"]["template"]["metadata"]["labels"]] + [
        g["template"]["metadata"]["labels"] for g in cluster["workerGroupSpecs"]
    ]
    pdbs = rendered.of_kind("PodDisruptionBudget")
    assert len(pdbs) == 4  # head + one per stage
    for pdb in pdbs:
        selector = pdb["spec"]["selector"]["matchLabels"]
        matches = [labels for labels in pod_labels if selector.items() <= labels.items()]
        assert len(matches) == 1, pdb["metadata"]["name"]


def test_pdbs_can_be_turned_off(render):
    assert render("values-07-cpu-smoke.yaml").of_kind("PodDisruptionBudget") == []


def test_notes_tell_what_to_do_next(run_helm, chart_dir):
    # `helm install --dry-run=client` renders NOTES.txt without a cluster.
    out = run_helm("install", "wanserve", str(chart_dir), "--dry-run=client", "--namespace", "video")
    notes = out.split("NOTES:", 1)[1]
    assert "kubectl -n video get rayservice wanserve" in notes
    assert "port-forward svc/wanserve-serve-svc 8000:8000" in notes
    assert "kubectl -n video get vsp" in notes
    assert "get secret wanserve-admin-key -o jsonpath='{.data.admin-key}' | base64 -d" in notes
    assert "No tenant has a key yet" in notes


def test_notes_warn_about_open_mode_and_a_head_without_token(run_helm, chart_dir, scenario_dir):
    out = run_helm("install", "wanserve", str(chart_dir), "--dry-run=client", "--namespace", "video",
                   "-f", str(scenario_dir / "values-09-open-mode.yaml"), "--set", "ray.auth.enabled=false")
    notes = out.split("NOTES:", 1)[1]
    assert "WARNING: tenancy.enabled is false (open mode)" in notes
    assert "The NetworkPolicy admits only networkPolicy.serveFrom there" in notes
    assert "WARNING: ray.auth.enabled is false" in notes
