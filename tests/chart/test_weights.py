"""Weights: only worker pods mount them, each checks its model directories before Ray starts, and the chart
can create the volume and fill it with a pinned download."""

from __future__ import annotations

import pytest


def _workers(rendered):
    return [(name, spec) for name, spec in rendered.pod_specs() if name.startswith("RayService worker")]


def _head(rendered):
    return dict(rendered.pod_specs())["RayService head"]


def test_the_head_never_mounts_the_weights(rendered):
    head = _head(rendered)
    assert "model" not in {volume["name"] for volume in head["volumes"]}
    assert not [m for c in head["containers"] for m in c.get("volumeMounts", []) if m["name"] == "model"]
    assert not any("hostPath" in volume for volume in head["volumes"])


def test_every_worker_checks_each_model_directory_before_ray_starts(rendered):
    dirs = [app["args"]["model_dir"] for name, app in rendered.applications.items() if name != "wanserve"]
    for name, spec in _workers(rendered):
        (check,) = spec["initContainers"]
        assert check["command"] == ["wanserve", "check-model"], name
        assert set(check["args"]) == set(dirs), name
        (mount,) = [m for m in check["volumeMounts"] if m["name"] == "model"]
        assert mount["readOnly"] is True
        assert check["image"] == spec["containers"][0]["image"]


def test_the_canary_checkpoint_is_checked_too(render):
    (_, spec) = _workers(render("values-05-canary-rollout.yaml"))[0]
    assert spec["initContainers"][0]["args"] == ["/models/Wan2.2-TI2V-5B-Diffusers",
                                                 "/models/Wan2.2-TI2V-5B-ft1-Diffusers"]


def test_the_check_can_be_turned_off(render):
    for _, spec in _workers(render(set_values=("model.checkBeforeStart=false",))):
        assert "initContainers" not in spec


def test_a_host_path_is_mounted_on_workers_only(render):
    rendered = render("values-06-hardened.yaml")
    for _, spec in _workers(rendered):
        (volume,) = [v for v in spec["volumes"] if v["name"] == "model"]
        assert volume["hostPath"] == {"path": "/mnt/models", "type": "Directory"}


def test_the_volume_template_creates_the_claim_workers_read(render):
    rendered = render("values-11-weights-download.yaml")
    (claim,) = rendered.of_kind("PersistentVolumeClaim")
    assert claim["metadata"]["name"] == "wanserve-models"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == "nfs-client"
    assert claim["spec"]["resources"]["requests"]["storage"] == "100Gi"
    for _, spec in _workers(rendered):
        (volume,) = [v for v in spec["volumes"] if v["name"] == "model"]
        assert volume["persistentVolumeClaim"] == {"claimName": "wanserve-models", "readOnly": True}


def test_no_claim_or_job_unless_asked(rendered):
    if rendered.scenario != "values-11-weights-download.yaml":
        assert not rendered.of_kind("PersistentVolumeClaim") and not rendered.of_kind("Job")


def test_the_download_job_fetches_the_pinned_revision_with_the_token_from_a_secret(render):
    rendered = render("values-11-weights-download.yaml")
    (job,) = rendered.of_kind("Job")
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["wanserve", "download-model"]
    assert container["args"] == ["/models/Wan2.2-TI2V-5B-Diffusers", "--repo=Wan-AI/Wan2.2-TI2V-5B-Diffusers",
                                 "--revision=0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"]
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    assert env["HF_HUB_OFFLINE"]["value"] == "0"  # the serving image is offline; this Job is the exception
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "model"]
    assert not mount.get("readOnly")
    (volume,) = [v for v in spec["volumes"] if v["name"] == "model"]
    assert volume["persistentVolumeClaim"]["claimName"] == "wanserve-models"
    assert spec["restartPolicy"] == "OnFailure" and spec["automountServiceAccountToken"] is False


def test_a_new_revision_is_a_new_job(render, tmp_path):
    first = render("values-11-weights-download.yaml").one("Job")["metadata"]["name"]
    second = render("values-11-weights-download.yaml", set_values=("model.download.revision=ffff",)).one("Job")
    assert first.startswith("wanserve-model-download-") and second["metadata"]["name"] != first


@pytest.mark.parametrize(("values", "message"), [
    (("model.volume.type=template", "model.download.enabled=true"), "needs model.download.revision"),
    (("model.volume.type=hostPath", "model.volume.hostPath=/mnt/m", "model.download.enabled=true",
      "model.download.revision=abc"), "needs a shared volume the Job can write"),
])
def test_a_download_without_a_pin_or_a_writable_volume_is_refused(render_error, values, message):
    assert message in render_error(*values)
