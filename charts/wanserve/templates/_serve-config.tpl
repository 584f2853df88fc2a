{{/*
The RayService serveConfigV2: one application, "wanserve", built by serve.app.builder:build_app.
Built as a dict and rendered with toYaml so the text is always valid YAML, whatever the values.
The Ingress user_config carries the serving policy the operator patches later.
*/}}

{{/* The starting policy (serve/policy.py ServingPolicy): first tier, all traffic on model.version. */}}
{{- define "wanserve.initialPolicy" -}}
{{- $first := first .Values.policy.tiers }}
{{- $tier := dict "name" $first.name }}
{{- with $first.maxSize }}{{ $_ := set $tier "max_size" . }}{{ end }}
{{- with $first.maxFrames }}{{ $_ := set $tier "max_frames" (int .) }}{{ end }}
{{- with $first.maxSteps }}{{ $_ := set $tier "max_steps" (int .) }}{{ end }}
{{- $version := .Values.model.version }}
{{- toYaml (dict
    "tier" $tier
    "weights" (dict $version 100)
    "active_instance" (dict $version "primary")) }}
{{- end }}

{{- define "wanserve.serveConfig" -}}
{{- $v := .Values }}
{{- $stages := include "wanserve.stageTable" . | fromYaml }}
{{- $ingressActor := dict "num_cpus" $v.ingress.numCpus "num_gpus" 0 }}
{{- if $v.ingress.pinToHead }}
{{- $_ := set $ingressActor "resources" (dict "wanserve_ingress" 1) }}
{{- end }}
{{- $deployments := list (dict
    "name" "Ingress"
    "max_ongoing_requests" (int $v.ingress.maxOngoingRequests)
    "max_queued_requests" (int $v.ingress.maxQueuedRequests)
    "autoscaling_config" (dict
      "min_replicas" (int $v.ingress.autoscaling.minReplicas)
      "max_replicas" (int $v.ingress.autoscaling.maxReplicas)
      "target_ongoing_requests" $v.ingress.autoscaling.targetOngoingRequests)
    "ray_actor_options" $ingressActor
    "user_config" (dict "policy" (include "wanserve.initialPolicy" . | fromYaml))) }}
{{- range $key := splitList " " (include "wanserve.stageOrder" .) }}
{{- $meta := index $stages $key }}
{{- $stage := index $v.stages $key }}
{{- $deployments = append $deployments (dict
    "name" $meta.deployment
    "max_ongoing_requests" (int $stage.maxOngoingRequests)
    "max_queued_requests" (int $stage.maxQueuedRequests)
    "autoscaling_config" (dict
      "min_replicas" (int $stage.autoscaling.minReplicas)
      "max_replicas" (int $stage.autoscaling.maxReplicas)
      "target_ongoing_requests" $stage.autoscaling.targetOngoingRequests)
    "ray_actor_options" (dict
      "num_cpus" $stage.replica.numCpus
      "num_gpus" $stage.replica.numGpus
      "resources" (dict $meta.pinResource 1))) }}
{{- end }}
{{- $redisUrl := include "wanserve.redisUrl" . }}
{{- $args := dict
    "model_dir" $v.model.dir
    "model_version" $v.model.version
    "redis_url" (ternary $redisUrl nil (ne $redisUrl ""))
    "device" $v.model.device
    "max_frame_area" (int $v.model.maxFrameArea)
    "lanes" (dict "tenant_queue_share" $v.lanes.tenantQueueShare)
    "backup_instance" $v.policy.failover.backupInstance }}
{{- /* Unset means the cache shares redis_url. */}}
{{- with include "wanserve.redisCacheUrl" . }}
{{- $_ := set $args "cache_redis_url" . }}
{{- end }}
{{- /* The same placement as args, for the deployments the builder adds itself (candidate, backup). */}}
{{- $_ := set $args "ingress" (dict
    "num_cpus" $v.ingress.numCpus
    "pin_resource" (ternary "wanserve_ingress" nil $v.ingress.pinToHead)
    "min_replicas" (int $v.ingress.autoscaling.minReplicas)
    "max_replicas" (int $v.ingress.autoscaling.maxReplicas)
    "target_ongoing_requests" $v.ingress.autoscaling.targetOngoingRequests
    "max_ongoing_requests" (int $v.ingress.maxOngoingRequests)
    "max_queued_requests" (int $v.ingress.maxQueuedRequests)) }}
{{- range $key := splitList " " (include "wanserve.stageOrder" .) }}
{{- $meta := index $stages $key }}
{{- $stage := index $v.stages $key }}
{{- $_ := set $args (snakecase $key) (dict
    "num_cpus" $stage.replica.numCpus
    "num_gpus" $stage.replica.numGpus
    "pin_resource" $meta.pinResource
    "min_replicas" (int $stage.autoscaling.minReplicas)
    "max_replicas" (int $stage.autoscaling.maxReplicas)
    "target_ongoing_requests" $stage.autoscaling.targetOngoingRequests
    "max_ongoing_requests" (int $stage.maxOngoingRequests)
    "max_queued_requests" (int $stage.maxQueuedRequests)) }}
{{- end }}
{{- if $v.tenancy.enabled }}
{{- $args = merge $args (include "wanserve.tenancyArgs" . | fromYaml) }}
{{- end }}
{{- if $v.policy.rollout.enabled }}
{{- $_ := set $args "candidate" (dict "name" $v.policy.rollout.candidateVersion "model_dir" $v.policy.rollout.candidateModelDir) }}
{{- end }}
{{- toYaml (dict
    "proxy_location" "EveryNode"
    "http_options" (dict "host" "0.0.0.0" "port" 8000)
    "applications" (list (dict
      "name" "wanserve"
      "import_path" "serve.app.builder:build_app"
      "route_prefix" "/"
      "args" $args
      "deployments" $deployments))) }}
{{- end }}
