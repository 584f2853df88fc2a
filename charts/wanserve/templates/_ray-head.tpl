{{/*
How the Ray head is exposed: Ray's token authentication (KubeRay `authOptions`) and the dashboard's
listen address. The GCS (6379) and client (10001) ports must listen on the pod network for the workers;
who may connect is the NetworkPolicy's business (networkpolicy.yaml), and with the token on every
caller must also present it.
*/}}

{{/* RayClusterSpec.authOptions (KubeRay 1.6+; secretName since 1.6, mode since 1.5.1). */}}
{{- define "wanserve.rayAuthOptions" -}}
{{- if .Values.ray.auth.enabled }}
authOptions:
  mode: token
  {{- if not .Values.ray.auth.secretPerCluster }}
  secretName: {{ include "wanserve.rayAuthSecretName" . }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
The dashboard's `dashboard-host`. KubeRay's operator deploys serveConfigV2 and reads Serve status over
the head Service, so the dashboard must listen on the pod's address; `podIP` listens there and nowhere
else (Kubernetes expands $(POD_IP) in the container args KubeRay writes).
*/}}
{{- define "wanserve.dashboardHost" -}}
{{- if eq .Values.ray.dashboard.host "podIP" }}$(POD_IP){{ else }}{{ .Values.ray.dashboard.host }}{{ end }}
{{- end }}

{{- define "wanserve.validateRayHead" -}}
{{- $ray := .Values.ray }}
{{- if and $ray.auth.enabled (not (semverCompare ">=2.52.0-0" (toString $ray.version))) }}
{{- fail (printf "ray.auth.enabled needs Ray 2.52.0 or newer (token authentication), but ray.version is %s: upgrade the image's Ray or set ray.auth.enabled=false" $ray.version) }}
{{- end }}
{{- if and (eq $ray.dashboard.host "podIP") (not (semverCompare ">=2.53.0-0" (toString $ray.version))) }}
{{- fail (printf "ray.dashboard.host=podIP needs Ray 2.53.0 or newer (older Ray gets KubeRay probes that call the dashboard on localhost), but ray.version is %s: set ray.dashboard.host=0.0.0.0" $ray.version) }}
{{- end }}
{{- if and $ray.auth.existingSecret $ray.auth.secretPerCluster }}
{{- fail "ray.auth.existingSecret and ray.auth.secretPerCluster exclude each other: secretPerCluster (KubeRay 1.5.x) lets KubeRay make the token Secrets, existingSecret (KubeRay 1.6+) names yours" }}
{{- end }}
{{- end }}

{{/*
The Redis the GCS keeps the cluster's metadata in (GCS fault tolerance): ray.gcsFaultTolerance.redisAddress,
else the chart's durable Redis, else the external one's host:port (rediss:// kept for TLS); empty when there
is no Redis (redis.mode none), and then a head restart restarts the cluster.
*/}}
{{- define "wanserve.gcsRedisAddress" -}}
{{- $ft := .Values.ray.gcsFaultTolerance }}
{{- if $ft.enabled }}
{{- if $ft.redisAddress }}
{{- $ft.redisAddress }}
{{- else if eq .Values.redis.mode "internal" }}
{{- printf "%s-redis.%s.svc:6379" (include "wanserve.fullname" .) .Release.Namespace }}
{{- else if eq .Values.redis.mode "external" }}
{{- $url := .Values.redis.external.url }}
{{- $hostPort := regexReplaceAll "^rediss?://([^/]*)(/.*)?$" $url "${1}" }}
{{- if hasPrefix "rediss://" $url }}rediss://{{ end }}{{ $hostPort }}
{{- end }}
{{- end }}
{{- end }}

{{/* RayClusterSpec.gcsFaultToleranceOptions (KubeRay 1.3+), when there is a Redis for it. */}}
{{- define "wanserve.gcsFaultToleranceOptions" -}}
{{- with include "wanserve.gcsRedisAddress" . }}
gcsFaultToleranceOptions:
  redisAddress: {{ . | quote }}
  {{- if include "wanserve.redisHasPassword" $ }}
  redisPassword:
    valueFrom:
      secretKeyRef:
        name: {{ include "wanserve.redisSecretName" $ }}
        key: {{ $.Values.redis.auth.secretKey }}
  {{- end }}
{{- end }}
{{- end }}
