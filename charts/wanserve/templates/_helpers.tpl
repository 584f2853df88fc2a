{{/*
Names, labels, images and the checks that span several values (the schema checks single values).
*/}}

{{- define "wanserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wanserve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The RayService; KubeRay names its serve Service "<this>-serve-svc". Short: KubeRay appends suffixes. */}}
{{- define "wanserve.rayServiceName" -}}
{{- include "wanserve.fullname" . | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "wanserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "wanserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wanserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Common labels; call with (dict "root" $ "component" "ray"). */}}
{{- define "wanserve.labels" -}}
helm.sh/chart: {{ include "wanserve.chart" .root }}
{{ include "wanserve.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: wanserve
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of a pod template: stable ones only. A RayService rebuilds its whole GPU cluster when the pod
template changes, so a chart-version label here would cost a blue/green upgrade per chart bump.
*/}}
{{- define "wanserve.podLabels" -}}
{{ include "wanserve.componentSelectorLabels" . }}
app.kubernetes.io/part-of: wanserve
{{- end }}

{{/* Selector labels of one component; call with (dict "root" $ "component" "redis"). */}}
{{- define "wanserve.componentSelectorLabels" -}}
{{ include "wanserve.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
An image reference; call with (dict "root" $ "override" <map with optional repository/tag>).
The tag defaults to the chart's appVersion and "latest" is refused: a moving tag makes rollouts and
rollbacks unreproducible.
*/}}
{{- define "wanserve.image" -}}
{{- $override := .override | default dict }}
{{- $repository := $override.repository | default .root.Values.image.repository }}
{{- $tag := $override.tag | default .root.Values.image.tag | default .root.Chart.AppVersion | toString }}
{{- if eq $tag "latest" }}
{{- fail (printf "image tag of %s is \"latest\": pin a version (the chart's appVersion is %s) or a digest" $repository .root.Chart.AppVersion) }}
{{- end }}
{{- if hasPrefix "sha256:" $tag }}
{{- printf "%s@%s" $repository $tag }}
{{- else }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}
{{- end }}

{{/* The fixed set of stages: values key -> worker group, Serve deployment, pin resource. */}}
{{- define "wanserve.stageTable" -}}
textEncoder:
  group: text-encoder
  deployment: TextEncoder
  pinResource: wanserve_text_encoder
denoiser:
  group: denoiser
  deployment: Denoiser
  pinResource: wanserve_denoiser
decoder:
  group: decoder
  deployment: Decoder
  pinResource: wanserve_decoder
{{- end }}

{{/* Stage keys in pipeline order (values maps are unordered). */}}
{{- define "wanserve.stageOrder" -}}
textEncoder denoiser decoder
{{- end }}

{{/*
Serve replicas one worker pod can hold, which is also how many units of the pin resource the pod
advertises: GPUs per pod / GPUs per replica, or replicasPerPod when set (1 for a CPU-only stage).
Call with the stage's values map.
*/}}
{{- define "wanserve.replicasPerPod" -}}
{{- $numGpus := float64 .replica.numGpus }}
{{- if not (kindIs "invalid" .workers.replicasPerPod) }}
{{- int .workers.replicasPerPod }}
{{- else if gt $numGpus 0.0 }}
{{- floor (divf (float64 .workers.gpu.count) $numGpus) | int }}
{{- else }}
{{- 1 }}
{{- end }}
{{- end }}

{{/* The Ingress metrics URL the operator scrapes by default: KubeRay's serve Service. */}}
{{- define "wanserve.serveMetricsUrl" -}}
{{- printf "http://%s-serve-svc.%s.svc:8000/metrics" (include "wanserve.rayServiceName" .) .Release.Namespace }}
{{- end }}

{{- define "wanserve.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (printf "%s-operator" (include "wanserve.fullname" .)) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Environment of every container that runs the serving image. */}}
{{- define "wanserve.commonEnv" -}}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
# The root filesystem is read-only: caches go to the /tmp emptyDir; weights come from the model volume.
- name: XDG_CACHE_HOME
  value: /tmp/.cache
- name: HF_HOME
  value: /tmp/huggingface
- name: HF_HUB_OFFLINE
  value: "1"
- name: TRITON_CACHE_DIR
  value: /tmp/.triton
{{- end }}

{{/*
Environment of Ray containers, i.e. of every pod that can run Serve code (the Ingress on the head or a
worker, the stages on workers): the Redis password and the access keys come from Secrets, never from
serveConfigV2.
*/}}
{{- define "wanserve.rayEnv" -}}
{{ include "wanserve.commonEnv" . }}
{{- if include "wanserve.redisHasPassword" . }}
- name: WANSERVE_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "wanserve.redisSecretName" . }}
      key: {{ .Values.redis.auth.secretKey }}
{{- end }}
{{- if include "wanserve.redisTlsCaFile" . }}
- name: WANSERVE_REDIS_TLS_CA_FILE
  value: {{ include "wanserve.redisTlsCaFile" . }}
{{- end }}
- name: WANSERVE_ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "wanserve.adminKeySecretName" . }}
      key: {{ .Values.tenancy.adminKey.secretKey }}
- name: WANSERVE_METRICS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "wanserve.metricsKeySecretName" . }}
      key: {{ .Values.tenancy.metricsKey.secretKey }}
{{- with .Values.artifacts }}
{{- if .store }}
- name: WANSERVE_ARTIFACT_STORE
  value: {{ .store | quote }}
- name: WANSERVE_ARTIFACT_LIFECYCLE_DAYS
  value: {{ .lifecycleDays | quote }}
{{- with .endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .publicEndpointUrl }}
- name: WANSERVE_ARTIFACT_PUBLIC_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.ray.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Checks that span several values; rendering fails with a message that says what to change.
*/}}
{{- define "wanserve.validate" -}}
{{- $v := .Values }}
{{- /* Each (version, instance) is its own stage application: a canary's candidate runs on the primary
worker groups beside the stable version; the backup instance has worker groups of its own. */}}
{{- range $instance := ternary (list "primary" "backup") (list "primary") (eq (toString $v.backup.enabled) "true") }}
{{- range $key := splitList " " (include "wanserve.stageOrder" $) }}
{{- $stage := include "wanserve.instanceStage" (dict "root" $ "key" $key "instance" $instance) | fromYaml }}
{{- $meta := include "wanserve.instanceGroup" (dict "root" $ "key" $key "instance" $instance) | fromYaml }}
{{- /* Where to fix it: the backup's values are backup.stages.<key> merged over stages.<key>. */}}
{{- $path := ternary (printf "backup.stages.%s" $key) (printf "stages.%s" $key) (eq $instance "backup") }}
{{- $numGpus := float64 $stage.replica.numGpus }}
{{- $gpus := int $stage.workers.gpu.count }}
{{- if and (gt $numGpus 0.0) (eq $gpus 0) }}
{{- fail (printf "%s.replica.numGpus is %v but %s.workers.gpu.count is 0: give the worker pods GPUs or set numGpus to 0" $path $stage.replica.numGpus $path) }}
{{- end }}
{{- if gt $numGpus (float64 $gpus) }}
{{- fail (printf "%s.replica.numGpus (%v) is more than the %d GPUs of one worker pod (%s.workers.gpu.count): no replica could ever be placed" $path $stage.replica.numGpus $gpus $path) }}
{{- end }}
{{- $perPod := include "wanserve.replicasPerPod" $stage | int }}
{{- if lt $perPod 1 }}
{{- fail (printf "%s.workers.replicasPerPod must be at least 1" $path) }}
{{- end }}
{{- if gt (int $stage.autoscaling.minReplicas) (int $stage.autoscaling.maxReplicas) }}
{{- fail (printf "%s.autoscaling.minReplicas (%v) is above maxReplicas (%v)" $path $stage.autoscaling.minReplicas $stage.autoscaling.maxReplicas) }}
{{- end }}
{{- if gt (int $stage.workers.minReplicas) (int $stage.workers.maxReplicas) }}
{{- fail (printf "%s.workers.minReplicas (%v) is above maxReplicas (%v)" $path $stage.workers.minReplicas $stage.workers.maxReplicas) }}
{{- end }}
{{- $capacity := mul (int $stage.workers.maxReplicas) $perPod }}
{{- $needed := int $stage.autoscaling.maxReplicas }}
{{- $why := printf "autoscaling.maxReplicas %d of the stable version" $needed }}
{{- if and (eq $instance "primary") (eq (toString $v.policy.rollout.enabled) "true") }}
{{- $candidate := include "wanserve.instanceStage" (dict "root" $ "key" $key "instance" "primary" "candidate" true) | fromYaml }}
{{- $needed = add $needed (int $candidate.autoscaling.maxReplicas) }}
{{- $why = printf "%s + %d of the canary's candidate (policy.rollout.candidateStages over it)" $why (int $candidate.autoscaling.maxReplicas) }}
{{- end }}
{{- if gt $needed $capacity }}
{{- fail (printf "%s needs room for %d replicas (%s) on worker group %s, but the group holds %d (%d pods x %d replicas per pod): raise %s.workers.maxReplicas or lower autoscaling.maxReplicas, or replicas stay pending" $path $needed $why $meta.group $capacity (int $stage.workers.maxReplicas) $perPod $path) }}
{{- end }}
{{- end }}
{{- end }}
{{- if gt (int $v.ingress.autoscaling.minReplicas) (int $v.ingress.autoscaling.maxReplicas) }}
{{- fail (printf "ingress.autoscaling.minReplicas (%v) is above maxReplicas (%v)" $v.ingress.autoscaling.minReplicas $v.ingress.autoscaling.maxReplicas) }}
{{- end }}
{{- $mount := trimSuffix "/" $v.model.mountPath }}
{{- if not (hasPrefix (printf "%s/" $mount) $v.model.dir) }}
{{- fail (printf "model.dir (%s) must be a directory under model.mountPath (%s), where the model volume is mounted" $v.model.dir $v.model.mountPath) }}
{{- end }}
{{- if and (eq $v.model.volume.type "persistentVolumeClaim") (not $v.model.volume.claimName) }}
{{- fail "model.volume.claimName is empty: name the PersistentVolumeClaim that holds the weights" }}
{{- end }}
{{- if and (eq $v.model.volume.type "hostPath") (not $v.model.volume.hostPath) }}
{{- fail "model.volume.hostPath is empty: give the node directory that holds the weights" }}
{{- end }}
{{- include "wanserve.validateModel" . }}
{{- include "wanserve.validateStageQueues" . }}
{{- if and (eq $v.policy.metrics.source "prometheus") $v.operator.enabled $v.policy.create (not $v.monitoring.serviceMonitor.enabled) }}
{{- fail "policy.metrics.source is prometheus but monitoring.serviceMonitor.enabled is false: nothing would scrape the router for the operator to query; turn the ServiceMonitor on or use policy.metrics.source=scrape" }}
{{- end }}
{{- $drain := $v.drain }}
{{- if lt (int $drain.terminationGracePeriodSeconds) (add (int $drain.gracefulShutdownTimeoutSeconds) 20 | int) }}
{{- fail (printf "drain.terminationGracePeriodSeconds (%d) must be at least drain.gracefulShutdownTimeoutSeconds (%d) + 20: Kubernetes would kill pods while their replicas still drain running generations" (int $drain.terminationGracePeriodSeconds) (int $drain.gracefulShutdownTimeoutSeconds)) }}
{{- end }}
{{- if and (eq $v.redis.mode "external") (not $v.redis.external.url) }}
{{- fail "redis.mode is external but redis.external.url is empty: set it (redis://host:6379/0) or use redis.mode=internal" }}
{{- end }}
{{- include "wanserve.validateRedis" . }}
{{- include "wanserve.validateRayHead" . }}
{{- include "wanserve.validateTenancy" . }}
{{- if and (eq $v.ray.upgradeStrategy.type "NewClusterWithIncrementalUpgrade") (not $v.ray.upgradeStrategy.clusterUpgradeOptions.gatewayClassName) }}
{{- fail "ray.upgradeStrategy.type NewClusterWithIncrementalUpgrade needs ray.upgradeStrategy.clusterUpgradeOptions.gatewayClassName (and stepSizePercent, intervalSeconds)" }}
{{- end }}
{{- $rollout := $v.policy.rollout }}
{{- if $rollout.enabled }}
{{- if or (not $rollout.candidateVersion) (not $rollout.candidateModelDir) }}
{{- fail "policy.rollout.enabled needs policy.rollout.candidateVersion and policy.rollout.candidateModelDir" }}
{{- end }}
{{- if eq $rollout.candidateVersion $v.model.version }}
{{- fail (printf "policy.rollout.candidateVersion equals model.version (%s): the candidate needs its own version name" $v.model.version) }}
{{- end }}
{{- if not (hasPrefix (printf "%s/" $mount) $rollout.candidateModelDir) }}
{{- fail (printf "policy.rollout.candidateModelDir (%s) must be under model.mountPath (%s): only that volume is mounted" $rollout.candidateModelDir $v.model.mountPath) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The model volume and its download. */}}
{{- define "wanserve.validateModel" -}}
{{- $m := .Values.model }}
{{- if $m.download.enabled }}
{{- if not $m.download.revision }}
{{- fail "model.download.enabled needs model.download.revision: pin a commit of the repository (see its \"Files and versions\" page), so every pod loads the same weights" }}
{{- end }}
{{- if eq $m.volume.type "hostPath" }}
{{- fail "model.download.enabled needs a shared volume the Job can write: set model.volume.type to template (the chart creates the claim) or persistentVolumeClaim (a ReadWriteMany claim)" }}
{{- end }}
{{- end }}
{{- range $key := splitList " " (include "wanserve.stageOrder" .) }}
{{- $a := (index $.Values.stages $key).autoscaling }}
{{- if and (not (kindIs "invalid" $a.initialReplicas)) (or (lt (int $a.initialReplicas) (int $a.minReplicas)) (gt (int $a.initialReplicas) (int $a.maxReplicas))) }}
{{- fail (printf "stages.%s.autoscaling.initialReplicas (%v) must lie between minReplicas (%v) and maxReplicas (%v)" $key $a.initialReplicas $a.minReplicas $a.maxReplicas) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Every stage must take what the router admits (its capacity, derived from the Denoiser: serve/app/capacity.py)
with its fewest replicas: minReplicas x maxOngoingRequests running plus maxQueuedRequests waiting in Serve's
handles. Past that Serve refuses the call and the generation fails (and counts toward a failover).
*/}}
{{- define "wanserve.validateStageQueues" -}}
{{- $capacity := include "wanserve.stageCapacity" . | fromYaml }}
{{- $admitted := mul (int $capacity.denoiser_replicas) (int $capacity.batch_max_size) | int }}
{{- range $key := splitList " " (include "wanserve.stageOrder" $) }}
{{- $stage := index $.Values.stages $key }}
{{- $queued := int $stage.maxQueuedRequests }}
{{- $ongoing := int $stage.maxOngoingRequests }}
{{- if eq $key "denoiser" }}{{ $ongoing = max $ongoing (int $.Values.lanes.batchMaxSize) | int }}{{ end }}
{{- $holds := add (mul (int $stage.autoscaling.minReplicas) $ongoing) $queued | int }}
{{- if and (ne $queued -1) (lt $holds $admitted) }}
{{- fail (printf "stages.%s holds %d calls at its fewest replicas (minReplicas %d x maxOngoingRequests %d + maxQueuedRequests %d) but the router admits up to %d generations at once (stages.denoiser.autoscaling.maxReplicas %d x lanes.batchMaxSize %d): raise stages.%s.maxQueuedRequests to at least %d (or -1), or the surplus is refused by Serve and fails" $key $holds (int $stage.autoscaling.minReplicas) $ongoing $queued $admitted (int $capacity.denoiser_replicas) (int $capacity.batch_max_size) $key (sub $admitted (mul (int $stage.autoscaling.minReplicas) $ongoing))) }}
{{- end }}
{{- end }}
{{- end }}
