"""The operator's policy spec: what a person writes in a VideoServingPolicy (or a local YAML file).

Field names are camelCase on the wire (the CRD) and snake_case in Python. Every rule that crosses
fields (threshold order, rollout steps) is checked here, so the engine can trust its input and a bad
spec fails with a message that names the field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from operators.metrics.prometheus import SELECTOR
from serve.policy import DEFAULT_TIERS, DegradationTier, Lane, SizeText, TierRoute
from serve.step_cache import StepCache


class SpecModel(BaseModel):
    """Base for spec models: camelCase aliases, unknown fields rejected, frozen."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class StepCacheSpec(SpecModel):
    """A tier's step caching (serve/step_cache.py): diffusers' hook and the threshold it skips under."""

    method: Literal["first_block"] = "first_block"
    threshold: float = Field(default=0.05, gt=0.0, le=1.0)


class TierRouteSpec(SpecModel):
    """The model version a tier moves traffic to, and the steps and guidance that version runs at."""

    model_version: str = Field(min_length=1, max_length=64)
    num_inference_steps: int | None = Field(default=None, ge=1, le=100)
    guidance_scale: float | None = Field(default=None, ge=1.0, le=20.0)


class TierSpec(SpecModel):
    """One degradation tier plus the load thresholds that move into (enter) and out of (exit) it."""

    name: str = Field(min_length=1, max_length=32)
    max_size: SizeText | None = None
    max_frames: int | None = Field(default=None, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    step_cache: StepCacheSpec | None = None
    route: TierRouteSpec | None = None
    # The lanes the tier degrades; the others keep full quality.
    lanes: tuple[Lane, ...] = Field(default=("realtime", "batch"), min_length=1)
    # The first tier is the undegraded base: it has no thresholds.
    enter_load: float | None = Field(default=None, gt=0)
    exit_load: float | None = Field(default=None, ge=0)

    def to_degradation_tier(self, level: int) -> DegradationTier:
        """The data plane's tier; ``level`` is this tier's position in the list (0 = undegraded)."""
        return DegradationTier(
            name=self.name, level=level, max_size=self.max_size, max_frames=self.max_frames,
            max_steps=self.max_steps, lanes=self.lanes,
            step_cache=None if self.step_cache is None else StepCache(**self.step_cache.model_dump()),
            route=None if self.route is None else TierRoute(**self.route.model_dump()),
        )


def _default_tiers() -> tuple[TierSpec, ...]:
    thresholds = {"reduced": (0.8, 0.6), "minimal": (1.2, 0.9)}
    return tuple(
        TierSpec(
            name=tier.name,
            max_size=tier.max_size,
            max_frames=tier.max_frames,
            max_steps=tier.max_steps,
            enter_load=thresholds.get(tier.name, (None, None))[0],
            exit_load=thresholds.get(tier.name, (None, None))[1],
        )
        for tier in DEFAULT_TIERS
    )


class MetricsSpec(SpecModel):
    """Where the operator reads the data plane's metrics from."""

    source: Literal["prometheus", "scrape"] = "scrape"
    prometheus_url: str | None = None
    # PromQL label matchers every query carries (source prometheus), e.g. the chart's
    # `namespace="video",service="wanserve-router-metrics"`: this release's router only, never another's.
    prometheus_selector: str = Field(default="", max_length=1024)
    scrape_url: str | None = None
    timeout_seconds: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _source_has_url(self) -> MetricsSpec:
        if self.source == "prometheus" and not self.prometheus_url:
            raise ValueError("metrics.prometheusUrl is required when metrics.source is 'prometheus'")
        if not SELECTOR.match(self.prometheus_selector):
            raise ValueError(f"metrics.prometheusSelector {self.prometheus_selector!r} is not a list of PromQL label "
                             'matchers such as namespace="video",service="wanserve-router-metrics"')
        return self


class FailoverSpec(SpecModel):
    """When to move a model version's traffic to its backup instance, and when to move it back."""

    consecutive_failures: int = Field(default=3, ge=1)
    recovery_window_seconds: float = Field(default=120.0, ge=0)


class RolloutSpec(SpecModel):
    """A canary between a stable and a candidate version, or a fixed A/B split between them."""

    stable_version: str = Field(default="stable", min_length=1)
    candidate_version: str | None = None
    candidate_model_dir: str | None = None
    steps: tuple[float, ...] = (5.0, 25.0, 50.0, 100.0)
    interval_seconds: float = Field(default=120.0, gt=0)
    min_requests: int = Field(default=10, ge=1)
    max_error_rate_ratio: float = Field(default=1.5, ge=1.0)
    max_p95_latency_ratio: float = Field(default=1.5, ge=1.0)
    # A stable version with no errors would make any candidate error an infinite ratio: allow this
    # absolute error rate before the ratio applies.
    error_rate_floor: float = Field(default=0.01, ge=0, le=1)
    # Percent of traffic the candidate gets in a plain A/B split (no promotion ever).
    fixed_split: float | None = Field(default=None, ge=0, le=100)
    # Failed checks over the rollout before it rolls back (Flagger's `threshold`): one bad window is not enough.
    failed_checks_threshold: int = Field(default=3, ge=1)
    # Control intervals without evidence (no metrics, no candidate request) held before each further one
    # counts as a failed check; the rollout shows RolloutStalled meanwhile.
    missing_data_intervals: int = Field(default=3, ge=0)
    # A candidate that failed once is refused on the next rollout (even of a re-created policy) unless this is set.
    retry_failed_candidate: bool = False

    @model_validator(mode="after")
    def _steps_rise(self) -> RolloutSpec:
        if not self.steps:
            raise ValueError("rollout.steps must list at least one percentage, e.g. [5, 25, 50, 100]")
        previous = 0.0
        for index, step in enumerate(self.steps):
            if not previous < step <= 100:
                raise ValueError(
                    f"rollout.steps[{index}] = {step}: steps must rise strictly within (0, 100], "
                    f"e.g. [5, 25, 50, 100]"
                )
            previous = step
        if self.candidate_version == self.stable_version:
            raise ValueError("rollout.candidateVersion must differ from rollout.stableVersion")
        if self.fixed_split is not None and not self.candidate_version:
            raise ValueError("rollout.fixedSplit needs rollout.candidateVersion")
        return self


class PolicySpec(SpecModel):
    """The whole spec of a VideoServingPolicy."""

    # The RayService of the data plane: the operator reads its serve Service's /metrics by default. It
    # never writes the RayService: Helm owns it.
    ray_service_name: str | None = None
    # The policy's key in the durable Redis, which the router replicas follow (the app's `policy_key`).
    policy_key: str = Field(default="wanserve:policy", pattern=r"^[A-Za-z0-9._:-]{1,128}$")
    control_interval_seconds: float = Field(default=10.0, gt=0)
    metrics: MetricsSpec = MetricsSpec()
    tiers: tuple[TierSpec, ...] = Field(default_factory=_default_tiers)
    stable_window_seconds: float = Field(default=60.0, ge=0)
    failover: FailoverSpec = FailoverSpec()
    rollout: RolloutSpec = RolloutSpec()

    @model_validator(mode="after")
    def _tiers_are_ordered(self) -> PolicySpec:
        if not self.tiers:
            raise ValueError("tiers must list at least the base tier, e.g. [{name: full}]")
        base = self.tiers[0]
        if base.enter_load is not None or base.exit_load is not None:
            raise ValueError("tiers[0] is the base tier and takes no enterLoad/exitLoad")
        names = [tier.name for tier in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tiers[].name must be unique, got {names}")
        previous_enter = 0.0
        for index, tier in enumerate(self.tiers[1:], start=1):
            if tier.enter_load is None or tier.exit_load is None:
                raise ValueError(f"tiers[{index}] ({tier.name}) needs both enterLoad and exitLoad")
            if tier.exit_load >= tier.enter_load:
                raise ValueError(
                    f"tiers[{index}].exitLoad ({tier.exit_load}) must be below tiers[{index}].enterLoad "
                    f"({tier.enter_load}), or the tier would flap"
                )
            if tier.enter_load <= previous_enter:
                raise ValueError(
                    f"tiers[{index}].enterLoad ({tier.enter_load}) must be above the previous tier's "
                    f"({previous_enter}): list tiers from lightest to heaviest degradation"
                )
            previous_enter = tier.enter_load
        return self


class SpecError(ValueError):
    """A spec that cannot be used, with one readable line per problem."""


def parse_spec(raw: object) -> PolicySpec:
    """Validate a raw spec mapping; raise SpecError naming each wrong field (camelCase, as written)."""
    try:
        return PolicySpec.model_validate(raw or {})
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise SpecError("invalid VideoServingPolicy spec: " + "; ".join(problems)) from None
