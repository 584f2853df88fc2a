{{/*
The RayService serveConfigV2: the router application "wanserve" (the Ingress, route /) and one stage
application per (model version, instance), "wanserve-<version>-<instance>" (TextEncoder, Denoiser and
Decoder, no route), as serve/app/builder.py serve_applications writes them. The router reaches the stage
applications by handle; its Ingress user_config lists them (the topology), which Serve applies to the
running replicas through reconfigure, without a restart.

A stage application's entry is rendered from its own version and instance only, so adding, scaling or
removing a candidate leaves every stable application's text byte-identical: Serve leaves their
replicas alone. The router's args carry nothing of the topology either. The serving policy is not
here: the operator keeps it in Redis (serve/policy_store.py), so `helm upgrade` never reverts it.
Built as dicts and rendered with toYaml so the text is always valid YAML, whatever the values.
*/}}

{{/* The stage application name of (dict "version" v "instance" i). */}}
{{- define "wanserve.stageAppName" -}}
{{- printf "wanserve-%s-%s" .version .instance }}
{{- end }}

{{/*
The stage values of one instance: stages.<key>, with backup.stages.<key> merged over it for the backup,
and policy.rollout.candidateStages.<key> for a canary's candidate. Call with
(dict "root" $ "key" "denoiser" "instance" "backup" "candidate" false); renders YAML.
*/}}
{{- define "wanserve.instanceStage" -}}
{{- $stage := deepCopy (index .root.Values.stages .key) }}
{{- if eq .instance "backup" }}
{{- $stage = mergeOverwrite $stage (deepCopy (index .root.Values.backup.stages .key | default dict)) }}
{{- end }}
{{- if .candidate }}
{{- $stage = mergeOverwrite $stage (deepCopy (index .root.Values.policy.rollout.candidateStages .key | default dict)) }}
{{- end }}
{{- toYaml $stage }}
{{- end }}

{{/* A stage's worker group and pin resource on one instance: the backup has its own. */}}
{{- define "wanserve.instanceGroup" -}}
{{- $meta := index (include "wanserve.stageTable" .root | fromYaml) .key }}
{{- if eq .instance "backup" }}
{{- toYaml (dict "group" (printf "%s-backup" $meta.group) "pinResource" (printf "%s_backup" $meta.pinResource) "deployment" $meta.deployment) }}
{{- else }}
{{- toYaml $meta }}
{{- end }}
{{- end }}

{{/* Every (version, instance) stage application: the stable version on each instance, the candidate on the primary. */}}
{{- define "wanserve.stageApps" -}}
{{- $v := .Values }}
{{- $apps := list (dict "version" $v.model.version "modelDir" $v.model.dir "instance" "primary" "candidate" false) }}
{{- if $v.backup.enabled }}
{{- $apps = append $apps (dict "version" $v.model.version "modelDir" $v.model.dir "instance" "backup" "candidate" false) }}
{{- end }}
{{- if $v.policy.rollout.enabled }}
{{- $apps = append $apps (dict "version" $v.policy.rollout.candidateVersion "modelDir" $v.policy.rollout.candidateModelDir "instance" "primary" "candidate" true) }}
{{- end }}
{{- toYaml (dict "apps" $apps) }}
{{- end }}

{{/*
One stage application; call with (dict "root" $ "version" v "modelDir" d "instance" i "candidate" bool).
Its args name the checkpoint only: placement and scaling are in its deployment entries, which Serve
applies without restarting a replica when only autoscaling or queue limits change (its args are hashed
into the code version: changing them restarts every replica).
*/}}
{{- define "wanserve.stageApp" -}}
{{- $root := .root }}
{{- $args := dict
    "model_version" .version
    "model_dir" .modelDir
    "instance" .instance
    "device" $root.Values.model.device }}
{{- $deployments := list }}
{{- range $key := splitList " " (include "wanserve.stageOrder" $root) }}
{{- $stage := include "wanserve.instanceStage" (dict "root" $root "key" $key "instance" $.instance "candidate" $.candidate) | fromYaml }}
{{- $meta := include "wanserve.instanceGroup" (dict "root" $root "key" $key "instance" $.instance) | fromYaml }}
{{- $maxOngoing := int $stage.maxOngoingRequests }}
{{- /* A Denoiser replica advances batchMaxSize requests together: it must take that many calls. */}}
{{- if eq $key "denoiser" }}
{{- $maxOngoing = max $maxOngoing (int $root.Values.lanes.batchMaxSize) | int }}
{{- end }}
{{- $deployment := dict
    "name" $meta.deployment
    "max_ongoing_requests" $maxOngoing
    "max_queued_requests" (int $stage.maxQueuedRequests)
    "graceful_shutdown_timeout_s" (int $root.Values.drain.gracefulShutdownTimeoutSeconds)
    "autoscaling_config" (include "wanserve.autoscalingConfig" $stage.autoscaling | fromYaml)
    "ray_actor_options" (dict
      "num_cpus" $stage.replica.numCpus
      "num_gpus" $stage.replica.numGpus
      "resources" (dict $meta.pinResource 1)) }}
{{- if eq $key "denoiser" }}
{{- /* Its batch is a user_config: Serve reconfigures the running replicas, no restart. */}}
{{- $_ := set $deployment "user_config" (dict "batch_max_size" (int $root.Values.lanes.batchMaxSize)) }}
{{- end }}
{{- $deployments = append $deployments $deployment }}
{{- end }}
{{- toYaml (dict
    "name" (include "wanserve.stageAppName" .)
    "import_path" "serve.app.builder:build_stage_app"
    "route_prefix" nil
    "args" $args
    "deployments" $deployments) }}
{{- end }}

{{/* Serve's autoscaling_config of one stage from its values' autoscaling block. */}}
{{- define "wanserve.autoscalingConfig" -}}
{{- $config := dict
    "min_replicas" (int .minReplicas)
    "max_replicas" (int .maxReplicas)
    "target_ongoing_requests" .targetOngoingRequests
    "upscale_delay_s" .upscaleDelaySeconds
    "downscale_delay_s" .downscaleDelaySeconds }}
{{- if not (kindIs "invalid" .initialReplicas) }}
{{- $_ := set $config "initial_replicas" (int .initialReplicas) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
What the router's capacity derives from (serve/app/capacity.py): the stable version's Denoiser replicas at
most x the batch, shared by the Ingress replicas that always run. In the Ingress user_config, so scaling a
stage reconfigures the router instead of restarting it.
*/}}
{{- define "wanserve.stageCapacity" -}}
{{- $denoiser := include "wanserve.instanceStage" (dict "root" . "key" "denoiser" "instance" "primary") | fromYaml }}
{{- toYaml (dict
    "denoiser_replicas" (int $denoiser.autoscaling.maxReplicas)
    "batch_max_size" (int .Values.lanes.batchMaxSize)
    "router_replicas" (max 1 (int .Values.ingress.autoscaling.minReplicas) | int)) }}
{{- end }}

{{/* The router's topology: the stable version and every stage application (the Ingress user_config). */}}
{{- define "wanserve.topology" -}}
{{- $apps := list }}
{{- range (include "wanserve.stageApps" . | fromYaml).apps }}
{{- $apps = append $apps (dict "model_version" .version "instance" .instance "app_name" (include "wanserve.stageAppName" .)) }}
{{- end }}
{{- toYaml (dict "stable" .Values.model.version "apps" $apps) }}
{{- end }}

{{/* The policy store's key in the durable Redis: the router's policy_key and the VideoServingPolicy's policyKey. */}}
{{- define "wanserve.policyKey" -}}
{{- printf "wanserve:%s:policy" (include "wanserve.fullname" .) }}
{{- end }}

{{- define "wanserve.serveConfig" -}}
{{- $root := . }}
{{- $v := .Values }}
{{- $ingressActor := dict "num_cpus" $v.ingress.numCpus "num_gpus" 0 }}
{{- if $v.ingress.pinToHead }}
{{- $_ := set $ingressActor "resources" (dict "wanserve_ingress" 1) }}
{{- end }}
{{- $ingress := dict
    "name" "Ingress"
    "max_ongoing_requests" (int $v.ingress.maxOngoingRequests)
    "max_queued_requests" (int $v.ingress.maxQueuedRequests)
    "autoscaling_config" (dict
      "min_replicas" (int $v.ingress.autoscaling.minReplicas)
      "max_replicas" (int $v.ingress.autoscaling.maxReplicas)
      "target_ongoing_requests" $v.ingress.autoscaling.targetOngoingRequests)
    "graceful_shutdown_timeout_s" (int $v.drain.gracefulShutdownTimeoutSeconds)
    "ray_actor_options" $ingressActor
    "user_config" (dict
      "topology" (include "wanserve.topology" . | fromYaml)
      "capacity" (include "wanserve.stageCapacity" . | fromYaml)) }}
{{- $redisUrl := include "wanserve.redisUrl" . }}
{{- $args := dict
    "redis_url" (ternary $redisUrl nil (ne $redisUrl ""))
    "policy_key" (include "wanserve.policyKey" .)
    "max_frame_area" (int $v.model.maxFrameArea)
    "lanes" (dict "tenant_queue_share" $v.lanes.tenantQueueShare "batch_max_size" (int $v.lanes.batchMaxSize)
                  "realtime_start_deadline_s" $v.lanes.realtimeStartDeadlineSeconds
                  "batch_start_deadline_s" $v.lanes.batchStartDeadlineSeconds) }}
{{- /* Unset means the cache shares redis_url. */}}
{{- with include "wanserve.redisCacheUrl" . }}
{{- $_ := set $args "cache_redis_url" . }}
{{- end }}
{{- /* The same placement as the Ingress deployment above, for the builder's own defaults. */}}
{{- $_ := set $args "ingress" (dict
    "num_cpus" $v.ingress.numCpus
    "pin_resource" (ternary "wanserve_ingress" nil $v.ingress.pinToHead)
    "min_replicas" (int $v.ingress.autoscaling.minReplicas)
    "max_replicas" (int $v.ingress.autoscaling.maxReplicas)
    "target_ongoing_requests" $v.ingress.autoscaling.targetOngoingRequests
    "max_ongoing_requests" (int $v.ingress.maxOngoingRequests)
    "max_queued_requests" (int $v.ingress.maxQueuedRequests)) }}
{{- if $v.tenancy.enabled }}
{{- $args = merge $args (include "wanserve.tenancyArgs" . | fromYaml) }}
{{- end }}
{{- $applications := list (dict
    "name" "wanserve"
    "import_path" "serve.app.builder:build_app"
    "route_prefix" "/"
    "args" $args
    "deployments" (list $ingress)) }}
{{- range (include "wanserve.stageApps" . | fromYaml).apps }}
{{- $applications = append $applications (include "wanserve.stageApp" (dict "root" $root "version" .version "modelDir" .modelDir "instance" .instance "candidate" .candidate) | fromYaml) }}
{{- end }}
{{- toYaml (dict
    "proxy_location" "EveryNode"
    "http_options" (dict "host" "0.0.0.0" "port" 8000)
    "applications" $applications) }}
{{- end }}
