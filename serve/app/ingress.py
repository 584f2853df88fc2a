"""The HTTP ingress: OpenAI-style ``/v1/videos`` jobs, health, metrics and the admin policy endpoint.

No ``from __future__ import annotations`` here: FastAPI reads these route signatures at runtime.
"""


import asyncio
import logging
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from ray import serve
from sse_starlette.sse import EventSourceResponse
from swagger_ui_bundle import swagger_ui_path

from serve.app import backends
from serve.app.api_models import VideoCreate, VideoDeleted, VideoList
from serve.app.args import AppArgs
from serve.app.capacity import StageCapacity, capacity_now, lane_capacity
from serve.app.create_body import read_create_body
from serve.app.device_arbiter import arbiter_for
from serve.app.errors import ApiError, install_error_handlers
from serve.app.generation import VideoService
from serve.app.guard_middleware import RequestGuard
from serve.app.lanes import PriorityLanes
from serve.app.progress_events import job_events, parse_last_event_id
from serve.app.request_guard import (
    check_video_id,
)
from serve.app.telemetry import Telemetry
from serve.app.topology import Topology, connect, stage_app_name, stage_handles
from serve.artifacts import ArtifactStoreUnavailable, artifact_store_from_env
from serve.jobs import JobChanges, NotifyingJobStore, VideoJob, VideoPublic
from serve.policy import ServingPolicy
from serve.policy_store import PolicyFollower, PolicyStore, PolicyStoreError
from serve.redis_link import RedisLink
from serve.tenancy import Caller, QuotaKeeper, TenantRegistry
from serve.workqueue import RedisFlightRegistry

log = logging.getLogger(__name__)

# How often a replica deletes artifacts whose jobs all expired (any replica may; it is idempotent).
ARTIFACT_SWEEP_INTERVAL_S = 300.0
# How long Serve lets a stopping Ingress replica finish before it kills it: long enough for most videos
# running here to finish rather than start again elsewhere (docs/durability.md, "Drains").
GRACEFUL_SHUTDOWN_TIMEOUT_S = 180.0
# Kept out of that budget for handing the unfinished jobs back to the queue.
HAND_BACK_S = 10.0

app = FastAPI(
    title="wanserve",
    description="Text-to-video with Wan2.2-TI2V-5B, in the shape of OpenAI's video API.",
    version="0.1.0",
    # Our own copies of the docs page's scripts (/docs below): no CDN, so the pages' CSP holds.
    docs_url=None,
    redoc_url=None,
)
install_error_handlers(app)
_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": VideoCreate.model_json_schema()},
            "multipart/form-data": {"schema": VideoCreate.model_json_schema()},
        },
    }
}


# Declares the bearer scheme in the OpenAPI document (the docs page's "Authorize" button); the check
# itself is the middleware below, so no route can forget it.
_bearer = HTTPBearer(auto_error=False, description="API key: `wanserve keys add TENANT` prints one")


# Every request is checked before any route runs (serve/app/guard_middleware.py); the guarded object is the
# replica's Ingress, whose args and tenants the checks read.
app.add_middleware(RequestGuard, guarded=lambda: serve.get_replica_context().servable_object)


async def _caller(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Caller:
    caller: Caller = request.state.caller
    return caller


CallerDep = Annotated[Caller, Depends(_caller)]


def _public(job: VideoJob) -> VideoPublic:
    return job.public()


# -- web pages: the playground (/) and the operations page (/ops), plain static files -----------
# Module-level routes: they need no replica state, and @serve.ingress leaves them as they are.

_STATIC = Path(__file__).resolve().parent.parent / "static"
app.mount("/static", StaticFiles(directory=_STATIC), name="static")


@app.get("/", include_in_schema=False)
async def playground_page() -> FileResponse:
    return FileResponse(_STATIC / "index.html")


@app.get("/ops", include_in_schema=False)
async def operations_page() -> FileResponse:
    return FileResponse(_STATIC / "ops.html")


# The API reference: Swagger UI from the swagger-ui-bundle package, served by us.
app.mount("/swagger", StaticFiles(directory=swagger_ui_path), name="swagger")


@app.get("/docs", include_in_schema=False)
async def docs_page() -> FileResponse:
    return FileResponse(_STATIC / "docs.html")


def check_fault_injection(policy: ServingPolicy, allowed: bool) -> None:
    """Faults are for drills: refuse them unless the app was started to accept them."""
    if policy.faults and not allowed:
        raise ApiError(400, "fault_injection_disabled",
                       "this app does not accept fault injection; start it with allow_fault_injection: true "
                       "(drills only)", "faults")


@serve.deployment(name="Ingress", graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_TIMEOUT_S)
@serve.ingress(app)
class Ingress:
    """Validates, routes and tracks requests; never touches a tensor."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = AppArgs.model_validate(args)
        self.telemetry = Telemetry()
        # One link to the durable Redis (jobs, quotas, artifact references), one breaker for all.
        self._redis = RedisLink(self.args.redis_url, on_error=self._on_redis_error) if self.args.redis_url else None
        self._swept_at = time.monotonic()
        # The stages' sizing from the user_config (serve/app/capacity.py); None: a fixed lanes.capacity.
        self._stage_capacity: StageCapacity | None = None
        self.tenants = TenantRegistry(
            self.args.api_keys_file, overrides=self.args.tenants, default_quotas=self.args.default_quotas
        )
        # Wakes this replica's event streams when it writes their job.
        self.job_changes = JobChanges()
        self.service = VideoService(
            versions=[version.name for version in self.args.versions],
            # The stage applications arrive with the topology, in reconfigure.
            instances={},
            store=NotifyingJobStore(backends.job_store(self.args, self._redis), self.job_changes),
            cache=backends.result_cache(self.args, self._on_redis_error),
            lanes=PriorityLanes(
                capacity=self.args.lanes.capacity,
                queue_limits={"realtime": self.args.lanes.realtime_queue, "batch": self.args.lanes.batch_queue},
                batch_max_size=self.args.lanes.batch_max_size,
                enabled=self.args.lanes.enabled,
                weight_of=self.tenants.weight,
                tenant_queue_share=self.args.lanes.tenant_queue_share,
            ),
            telemetry=self.telemetry,
            moderator=backends.moderator(self.args),
            policy=self.args.initial_policy(),
            cache_ttl_seconds=self.args.cache_ttl_seconds,
            quotas=QuotaKeeper(backends.quota_state(self._redis), lambda tenant: self.tenants.tenant(tenant).quotas),
            tenant_label=self.tenants.metric_label,
            max_frame_area=self.args.max_frame_area,
            artifacts=artifact_store_from_env(self._redis),
            work_queue=backends.work_queue(self.args, self._redis, serve.get_replica_context().app_name),
            flight_registry=RedisFlightRegistry(self._redis) if self._redis is not None else None,
            start_deadlines=self.args.lanes.start_deadlines(),
            # Realtime generations pause batch work of stages that share this host's CPU.
            host_device=arbiter_for("cpu"),
        )
        # Claim queued jobs (any replica's) from now on; __del__ drains.
        self.service.work.start()
        # With Redis the operator's policy arrives through the policy store, on every replica alike.
        self._policy_store = PolicyStore(self._redis.client, self.args.policy_key) if self._redis else None
        if self._policy_store is not None:
            PolicyFollower(self._policy_store, self._accept_policy).start()
        if self.tenants.mode == "open":
            log.warning("NO API KEYS CONFIGURED: the API is open to anyone who can reach this server, as tenant "
                        "'anonymous'. Configure a keys file (api_keys_file / WANSERVE_API_KEYS_FILE) on any shared "
                        "network.")

    async def __del__(self) -> None:
        """Serve's graceful stop (scale-down, redeploy): stop claiming, let running jobs finish for most of
        ``graceful_shutdown_timeout_s``, hand the rest back so another replica starts them at once."""
        context = serve.get_replica_context()
        config = getattr(context, "_deployment_config", None)  # private in Serve 2.60; the constant otherwise
        budget = float(getattr(config, "graceful_shutdown_timeout_s", GRACEFUL_SHUTDOWN_TIMEOUT_S))
        handed = await self.service.work.drain(max(1.0, budget - HAND_BACK_S))
        log.info("Ingress replica stopping: %d unfinished jobs handed back to the queue", handed)

    def _on_redis_error(self, op: str) -> None:
        self.telemetry.inc("wanserve_redis_errors_total", (op,))

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve calls this with the deployment's user_config: the topology (which stage applications
        exist) and the stages' sizing the capacity derives from land here, without a restart when they
        change. The policy comes from the policy store."""
        if user_config.get("capacity") is not None:
            self._stage_capacity = StageCapacity.model_validate(user_config["capacity"])
            self.service.set_capacity(lane_capacity(self._stage_capacity))
        if user_config.get("topology") is not None:
            topology = Topology.model_validate(user_config["topology"])
            instances = connect(topology, self.service.instances, stage_handles)
            self.service.set_topology(topology.stable, topology.versions, instances)
        if user_config.get("policy") is not None:
            self._accept_policy(ServingPolicy.model_validate(user_config["policy"]))

    def _running_capacity(self, stages: StageCapacity) -> int | None:
        """This replica's share of the stages' capacity at the replicas running now: the stable version's
        active Denoiser replicas and this router's Ingress replicas, from Serve's status (blocking)."""
        router = serve.get_replica_context().app_name
        version = self.service.stable
        try:
            apps = serve.status().applications
            instance = self.service.policy.instance_for(version)
            denoisers = apps[stage_app_name(version, instance, router)].deployments["Denoiser"].replica_states
            routers = apps[router].deployments["Ingress"].replica_states
        except Exception as error:  # Serve's status away, or the stage app not deployed yet
            log.warning("stage capacity now unknown (%s); load stays against the configured capacity", error)
            return None
        return capacity_now(stages, denoisers.get("RUNNING", 0), routers.get("RUNNING", 0))

    def _accept_policy(self, policy: ServingPolicy) -> None:
        try:
            check_fault_injection(policy, self.args.allow_fault_injection)
        except ApiError as error:
            log.error("ignoring the policy's fault injection: %s", error.message)
            policy = policy.model_copy(update={"faults": ()})
        self.service.set_policy(policy)

    async def check_health(self) -> None:
        # Serve calls this every few seconds: probe the stage instances and refresh this replica's gauges.
        if not self.service.work.alive:
            raise RuntimeError("this replica stopped claiming jobs from the work queue; restart it")
        await self.service.probe_instances()
        if self._stage_capacity is not None:
            self.service.running_capacity = await asyncio.to_thread(self._running_capacity, self._stage_capacity)
        self.service.publish_gauges()
        if time.monotonic() - self._swept_at > ARTIFACT_SWEEP_INTERVAL_S:
            self._swept_at = time.monotonic()
            await self.service.sweep_artifacts()

    # -- videos ---------------------------------------------------------------------------------

    @app.post("/v1/videos", response_model=VideoPublic, openapi_extra=_CREATE_BODY, tags=["videos"])
    async def create_video(self, request: Request, caller: CallerDep) -> VideoPublic:
        """Start generating a video; poll it with GET /v1/videos/{id}."""
        body, image = await read_create_body(request, self.args.max_body_bytes)
        if body.shared_cache and not caller.tenant.shared_cache_opt_in:
            raise ApiError(403, "shared_cache_not_allowed",
                           f"tenant {caller.name!r} may not use the shared cache pool: send shared_cache=false, or "
                           "ask an administrator to set shared_cache_opt_in for this tenant", "shared_cache")
        return _public(await self.service.submit(body.to_request(image), caller.name))

    @app.get("/v1/videos", response_model=VideoList, tags=["videos"])
    async def list_videos(
        self,
        caller: CallerDep,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    ) -> VideoList:
        jobs, has_more = await self.service.store.list(caller.name, after=after, limit=limit, order=order)  # type: ignore[arg-type]
        data = [_public(job) for job in jobs]
        return VideoList(data=data, has_more=has_more, first_id=data[0].id if data else None,
                         last_id=data[-1].id if data else None)

    @app.get("/v1/videos/{video_id}", response_model=VideoPublic, tags=["videos"])
    async def get_video(self, video_id: str, caller: CallerDep) -> VideoPublic:
        job = await self._job(video_id, caller)
        public = _public(job)
        if job.status == "queued":
            public.queue_position = await self.service.work.queue_position(job)
        return public

    @app.delete("/v1/videos/{video_id}", response_model=VideoDeleted, tags=["videos"])
    async def delete_video(self, video_id: str, caller: CallerDep) -> VideoDeleted:
        await self.service.delete(await self._job(video_id, caller))
        return VideoDeleted(id=video_id)

    @app.get("/v1/videos/{video_id}/content", tags=["videos"],
             responses={200: {"content": {"video/mp4": {}, "image/png": {}}}})
    async def download_video(
        self, video_id: str, caller: CallerDep,
        variant: Annotated[str, Query(pattern="^(video|thumbnail)$")] = "video",
    ) -> Response:
        job = await self._job(video_id, caller)
        if job.status != "completed":
            raise ApiError(409, "content_not_ready",
                           f"video {video_id} is {job.status} ({job.progress}%); download it once it is completed")
        ref = job.video if variant == "video" else job.thumbnail
        if ref is None:
            raise ApiError(404, "content_expired", f"the content of video {video_id} is no longer stored")
        try:
            url = await self.service.artifacts.url(ref)
            if url is not None:
                # Presigned and short-lived: the client fetches the bytes from the object store itself
                # (the OpenAI SDK follows redirects; httpx drops our Authorization header on the way).
                return RedirectResponse(url, status_code=307)
            chunks = await self.service.artifacts.stream(ref)
        except ArtifactStoreUnavailable as error:
            raise ApiError(503, "artifact_store_unavailable", str(error), headers={"Retry-After": "10"}) from None
        if chunks is None:
            raise ApiError(404, "content_expired", f"the content of video {video_id} is no longer stored")
        filename = f"{video_id}.{'mp4' if variant == 'video' else 'png'}"
        return StreamingResponse(chunks, media_type=ref.media_type, headers={
            "Content-Disposition": f'inline; filename="{filename}"', "Content-Length": str(ref.size)})

    @app.get("/v1/videos/{video_id}/events", tags=["videos"],
             responses={200: {"content": {"text/event-stream": {}}}})
    async def video_events(self, video_id: str, request: Request, caller: CallerDep) -> EventSourceResponse:
        """The job's status and progress as Server-Sent Events, ending with ``completed`` or ``failed``.

        Reconnect with ``Last-Event-ID`` to get only what you have not seen; a comment every 15 s keeps
        proxies from closing an idle stream.
        """
        await self._job(video_id, caller)
        events = job_events(
            lambda: self.service.store.get(video_id, tenant=caller.name),
            last_seen=parse_last_event_id(request.headers.get("last-event-id")),
            queue_position=self.service.work.queue_position,
            changes=self.job_changes.listen(video_id),
        )
        return EventSourceResponse(events, ping=15, headers={"Cache-Control": "no-store"})

    async def _job(self, video_id: str, caller: Caller) -> VideoJob:
        check_video_id(video_id)
        # Another tenant's video is "not found", exactly like an unknown id: ids leak nothing.
        job = await self.service.store.get(video_id, tenant=caller.name)
        if job is None:
            raise ApiError(404, "video_not_found", f"no video with id {video_id!r}", "video_id")
        return job

    # -- operations -----------------------------------------------------------------------------

    @app.get("/healthz", tags=["operations"])
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz(self) -> JSONResponse:
        probes = await self.service.probe_instances(timeout_s=5.0)
        stages = {f"{version}/{instance}": "ready" if ok else "not ready" for (version, instance), ok in probes.items()}
        ready = bool(probes) and all(probes.values())
        return JSONResponse({"status": "ready" if ready else "not_ready", "instances": stages}, 200 if ready else 503)

    @app.get("/metrics", tags=["operations"])
    async def metrics(self) -> Response:
        self.service.publish_gauges()
        return Response(await self.telemetry.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/ops", tags=["operations"])
    async def ops(self, _: CallerDep) -> dict[str, Any]:
        """Read-only state for the operations page and SREs' scripts: tier, routing, queues, cache."""
        return self.service.snapshot()

    @app.get("/v1/ops/history", tags=["operations"])
    async def ops_history(self, _: CallerDep) -> dict[str, Any]:
        """The last 15 minutes of this router replica, sampled every few seconds: load against the tier
        ladder's thresholds, the tier, queue depth and p95 latency per lane, and each policy change."""
        return self.service.history_view()

    @app.get("/admin/policy", response_model=ServingPolicy, tags=["admin"])
    async def get_policy(self, _: CallerDep) -> ServingPolicy:
        """The serving policy. Needs an admin key (the authentication middleware checks it)."""
        return self.service.policy

    @app.put("/admin/policy", response_model=ServingPolicy, tags=["admin"])
    async def put_policy(self, policy: ServingPolicy, _: CallerDep) -> ServingPolicy:
        """Replace the serving policy (the local operator, drills). With Redis it is published to the
        policy store, so every router replica takes it within a second, as they take the operator's."""
        check_fault_injection(policy, self.args.allow_fault_injection)
        if self._policy_store is not None:
            try:
                await self._policy_store.publish(policy, writer="admin")
            except PolicyStoreError as error:
                raise ApiError(503, "policy_store_unavailable", f"the policy was not changed: {error}",
                               headers={"Retry-After": "5"}) from None
        self.service.set_policy(policy)
        return self.service.policy
