"""Typed arguments of the wanserve Serve applications: the router (``serve.app.builder:build_app``) and
one stage application per (model version, instance) (``serve.app.builder:build_stage_app``)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve.app.topology import ROUTER_APP, StageApp, Topology, stage_app_name
from serve.policy import Instance, ServingPolicy
from serve.tenancy.keys import TenantQuotas, TenantSettings


class ModelVersion(BaseModel):
    """A named checkpoint. ``model_dir`` None means the built-in tiny checkpoint."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    model_dir: str | None = None


class StageArgs(BaseModel):
    """Placement and scaling of one stage deployment. Locally nothing is pinned and no GPU asked."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float = Field(default=0.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    # Custom Ray resource that pins the stage to its KubeRay worker group (e.g. "wanserve_denoiser").
    pin_resource: str | None = None
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    target_ongoing_requests: float = Field(default=2.0, gt=0)
    max_ongoing_requests: int = Field(default=4, ge=1)
    max_queued_requests: int = Field(default=64, ge=-1)

    @model_validator(mode="after")
    def _min_below_max(self) -> StageArgs:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self


class LaneArgs(BaseModel):
    """Priority lanes at the ingress."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # Generations running at once across the app; the denoiser's real capacity.
    capacity: int = Field(default=2, ge=1)
    realtime_queue: int = Field(default=16, ge=1)
    batch_queue: int = Field(default=64, ge=1)
    batch_max_size: int = Field(default=4, ge=1)
    batch_wait_s: float = Field(default=0.2, ge=0)
    # The share of each lane's queue one tenant may hold (at least one request): a tenant that floods
    # a lane gets 429 while the others still get in.
    tenant_queue_share: float = Field(default=0.5, gt=0, le=1)
    # A request whose estimated start (serve/app/eta.py) is further away than its lane's deadline gets 429
    # with the Retry-After that would let it start in time; None: no deadline.
    realtime_start_deadline_s: float | None = Field(default=300.0, gt=0)
    batch_start_deadline_s: float | None = Field(default=3600.0, gt=0)

    def start_deadlines(self) -> dict[str, float | None]:
        return {"realtime": self.realtime_start_deadline_s, "batch": self.batch_start_deadline_s}


class WorkArgs(BaseModel):
    """Durable work (docs/durability.md): how long a router replica's claim on a job lasts without renewal
    (a dead replica's jobs run again elsewhere after this), and how many interruptions a job survives."""

    model_config = ConfigDict(extra="forbid")

    lease_s: float = Field(default=30.0, ge=1.0, le=600.0)
    max_deliveries: int = Field(default=3, ge=1, le=20)


class StageAppArgs(BaseModel):
    """One stage application: TextEncoder, Denoiser and Decoder of one model version on one instance.

    Nothing here names another version or instance, so adding a candidate leaves these args, and the
    application's code version that Serve hashes from them, unchanged.
    """

    model_config = ConfigDict(extra="forbid")

    model_version: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    model_dir: str | None = None
    instance: Instance = "primary"
    device: Literal["cpu", "cuda"] | None = None
    compile_transformer: bool = False
    # Requests the Denoiser advances together in one batch step.
    batch_max_size: int = Field(default=4, ge=1)
    # Calls the router may send a stage at once (lanes.capacity x batch_max_size): each stage takes them
    # all, so none waits in Serve's queue out of reach of the stage's realtime-first scheduling.
    admitted_calls: int = Field(default=8, ge=1)
    text_encoder: StageArgs = Field(default_factory=StageArgs)
    denoiser: StageArgs = Field(default_factory=StageArgs)
    decoder: StageArgs = Field(default_factory=StageArgs)


# The fields of AppArgs that describe the topology (which versions and instances exist) and the stage
# applications. A local run (``wanserve serve``, the tests) sets them; the router's own args never
# carry them, so changing the topology or a stage's placement never restarts the router.
TOPOLOGY_FIELDS = frozenset({"model_version", "model_dir", "candidate", "backup_instance"})
STAGE_FIELDS = frozenset({"device", "compile_transformer", "text_encoder", "denoiser", "decoder"})


class AppArgs(BaseModel):
    """Everything the application needs; the same model for ``serve run``, ``serve deploy`` and KubeRay."""

    model_config = ConfigDict(extra="forbid")

    model_version: str = Field(default="wan2.2-ti2v-5b", min_length=1, max_length=64)
    model_dir: str | None = None
    # A second version for A/B and canary rollouts; it gets traffic only through the policy's weights.
    candidate: ModelVersion | None = None
    # A second stage application of the stable version, for failover (on a cluster: on worker groups of
    # its own). A candidate runs on the primary only: a failing candidate is rolled back, not failed over.
    backup_instance: bool = False
    device: Literal["cpu", "cuda"] | None = None
    compile_transformer: bool = False
    # The durable Redis (jobs, quotas): run it with `maxmemory-policy noeviction`. Its password comes
    # from the URL or WANSERVE_REDIS_PASSWORD; `rediss://` for TLS (serve/redis_link.py).
    redis_url: str | None = None
    # The result cache's Redis (`allkeys-lru`: entries may be evicted). Unset: the same as redis_url.
    cache_redis_url: str | None = None
    job_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    cache_ttl_seconds: int = Field(default=3600, ge=0)
    blocklist_file: str | None = None
    lanes: LaneArgs = Field(default_factory=LaneArgs)
    work: WorkArgs = Field(default_factory=WorkArgs)
    text_encoder: StageArgs = Field(default_factory=StageArgs)
    denoiser: StageArgs = Field(default_factory=StageArgs)
    decoder: StageArgs = Field(default_factory=StageArgs)
    ingress: StageArgs = Field(default_factory=lambda: StageArgs(max_ongoing_requests=256, max_queued_requests=-1))
    # The admin key: opens /admin/*, /metrics and /v1/ops, never a tenant route. Without one the admin
    # routes are closed (serve/tenancy/access.py).
    admin_key: str | None = Field(default_factory=lambda: os.environ.get("WANSERVE_ADMIN_KEY") or None)
    # Opens only /metrics and /v1/ops in keyed mode: what Prometheus carries.
    metrics_key: str | None = Field(default_factory=lambda: os.environ.get("WANSERVE_METRICS_KEY") or None)
    # Largest request body; JSON and multipart forms only. Room for a 10 MiB input_reference image in
    # base64 (image-to-video); text fields have their own limits.
    max_body_bytes: int = Field(default=16 * 2**20, ge=1024)
    # Drills only: let the policy's `faults` make a version/instance fail on purpose. Off by default.
    allow_fault_injection: bool = False
    # Tenancy (docs/tenancy.md). The keys file holds tenants and their key hashes; absent file = open mode.
    api_keys_file: str | None = Field(default_factory=lambda: os.environ.get("WANSERVE_API_KEYS_FILE") or None)
    # Settings per tenant (admin, weight, shared cache, quotas) that win over the keys file's: the chart
    # renders them from values, the keys themselves come from a Secret.
    tenants: dict[str, TenantSettings] = Field(default_factory=dict)
    # Quotas of every tenant that sets none of its own: never unlimited by default on a shared cluster.
    default_quotas: TenantQuotas = Field(default_factory=lambda: TenantQuotas(
        requests_per_minute=30, max_concurrent_jobs=8, daily_compute_units=200.0, max_storage_bytes=2 * 2**30))
    # Largest width x height a request may ask for (before any degradation tier); the model's native
    # 1280x704 by default, the area the chart sizes GPU memory for.
    max_frame_area: int = Field(default=1280 * 704, ge=64 * 64)
    policy: ServingPolicy | None = None
    # Where the operator keeps the policy in the durable Redis (serve/policy_store.py); every router
    # replica follows it. Without redis_url the admin endpoint sets the policy instead.
    policy_key: str = Field(default="wanserve:policy", pattern=r"^[A-Za-z0-9._:-]{1,128}$")

    @property
    def result_cache_url(self) -> str | None:
        return self.cache_redis_url or self.redis_url

    @property
    def versions(self) -> list[ModelVersion]:
        stable = ModelVersion(name=self.model_version, model_dir=self.model_dir)
        return [stable] if self.candidate is None else [stable, self.candidate]

    def instances_of(self, version: str) -> list[Instance]:
        return ["primary", "backup"] if self.backup_instance and version == self.model_version else ["primary"]

    def topology(self, router_app: str = ROUTER_APP) -> Topology:
        """Every (version, instance) of this run, each its own stage application."""
        apps = [StageApp(model_version=version.name, instance=instance,
                         app_name=stage_app_name(version.name, instance, router_app))
                for version in self.versions for instance in self.instances_of(version.name)]
        return Topology(stable=self.model_version, apps=tuple(apps))

    def stage_app_args(self, version: ModelVersion, instance: Instance) -> StageAppArgs:
        return StageAppArgs(
            model_version=version.name, model_dir=version.model_dir, instance=instance, device=self.device,
            compile_transformer=self.compile_transformer, batch_max_size=self.lanes.batch_max_size,
            admitted_calls=self.lanes.capacity * self.lanes.batch_max_size,
            text_encoder=self.text_encoder, denoiser=self.denoiser, decoder=self.decoder,
        )

    def router_args(self) -> dict[str, object]:
        """The router application's args: everything but the topology and the stages' own settings."""
        return self.model_dump(mode="json", exclude=set(TOPOLOGY_FIELDS | STAGE_FIELDS))

    def initial_policy(self) -> ServingPolicy:
        return self.policy or ServingPolicy(weights={self.model_version: 100.0})

    @model_validator(mode="after")
    def _candidate_differs(self) -> AppArgs:
        if self.candidate is not None and self.candidate.name == self.model_version:
            raise ValueError(f"candidate version must differ from the stable one ({self.model_version!r})")
        return self
