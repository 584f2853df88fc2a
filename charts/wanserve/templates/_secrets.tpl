{{/*
Secrets the chart generates: the Ray token, the admin key and the metrics key (the Redis password is in
_redis.tpl). Each is random on first install and read back from the live Secret on `helm upgrade`, so
upgrades keep it. `helm template` and other renders without a cluster cannot read it back: with GitOps
tools that render offline, name an existing Secret instead.
*/}}

{{/*
The base64 value of one key of a generated Secret; call with (dict "root" $ "name" "x" "key" "k" "length" 48).
*/}}
{{- define "wanserve.generatedSecretData" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name }}
{{- if and $existing (hasKey ($existing.data | default dict) .key) }}
{{- index $existing.data .key }}
{{- else }}
{{- randAlphaNum (int .length) | b64enc }}
{{- end }}
{{- end }}

{{/* The Secret holding Ray's token under `auth_token` (KubeRay's key), named by authOptions.secretName. */}}
{{- define "wanserve.rayAuthSecretName" -}}
{{- default (printf "%s-ray-auth" (include "wanserve.fullname" .)) .Values.ray.auth.existingSecret }}
{{- end }}

{{- define "wanserve.adminKeySecretName" -}}
{{- default (printf "%s-admin-key" (include "wanserve.fullname" .)) .Values.tenancy.adminKey.existingSecret }}
{{- end }}

{{- define "wanserve.metricsKeySecretName" -}}
{{- default (printf "%s-metrics-key" (include "wanserve.fullname" .)) .Values.tenancy.metricsKey.existingSecret }}
{{- end }}
