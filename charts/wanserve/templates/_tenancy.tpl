{{/*
Tenancy (docs/tenancy.md): the keys file comes from a Secret mounted into every Ray pod (the Ingress
may run on the head or a worker); admin flags, weights and quotas go into the app args, so they
change with values while the keys stay in the Secret.
*/}}

{{- define "wanserve.tenancySecretName" -}}
{{- default (printf "%s-api-keys" (include "wanserve.fullname" .)) .Values.tenancy.existingSecret }}
{{- end }}

{{/* Path of the keys file inside the Ray pods (the app's api_keys_file). */}}
{{- define "wanserve.apiKeysFile" -}}
{{- printf "%s/api-keys.yaml" (trimSuffix "/" .Values.tenancy.mountPath) }}
{{- end }}

{{/* Quotas in the app's snake_case, only the limits that are set. Call with the quotas map. */}}
{{- define "wanserve.tenantQuotas" -}}
{{- $out := dict }}
{{- if not (kindIs "invalid" .requestsPerMinute) }}{{ $_ := set $out "requests_per_minute" (int .requestsPerMinute) }}{{ end }}
{{- if not (kindIs "invalid" .maxConcurrentJobs) }}{{ $_ := set $out "max_concurrent_jobs" (int .maxConcurrentJobs) }}{{ end }}
{{- if not (kindIs "invalid" .dailyVideoSeconds) }}{{ $_ := set $out "daily_video_seconds" .dailyVideoSeconds }}{{ end }}
{{- toYaml $out }}
{{- end }}

{{/* The app args of tenancy: api_keys_file, default_quotas and per-tenant settings (only what is set). */}}
{{- define "wanserve.tenancyArgs" -}}
{{- $t := .Values.tenancy }}
{{- $tenants := dict }}
{{- range $name, $tenant := $t.tenants }}
{{- $settings := dict }}
{{- if hasKey $tenant "admin" }}{{ $_ := set $settings "admin" $tenant.admin }}{{ end }}
{{- if hasKey $tenant "weight" }}{{ $_ := set $settings "weight" $tenant.weight }}{{ end }}
{{- if hasKey $tenant "sharedCacheOptIn" }}{{ $_ := set $settings "shared_cache_opt_in" $tenant.sharedCacheOptIn }}{{ end }}
{{- if hasKey $tenant "quotas" }}{{ $_ := set $settings "quotas" (include "wanserve.tenantQuotas" $tenant.quotas | fromYaml) }}{{ end }}
{{- $_ := set $tenants $name $settings }}
{{- end }}
{{- toYaml (dict
    "api_keys_file" (include "wanserve.apiKeysFile" .)
    "default_quotas" (include "wanserve.tenantQuotas" $t.defaultQuotas | fromYaml)
    "tenants" $tenants) }}
{{- end }}

{{- define "wanserve.tenancyVolumeMount" -}}
{{- if .Values.tenancy.enabled }}
- name: api-keys
  mountPath: {{ .Values.tenancy.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "wanserve.tenancyVolume" -}}
{{- if .Values.tenancy.enabled }}
{{- /* Only the keys file, under a fixed name: a Secret without that key keeps the pod from starting
rather than starting it open. */}}
- name: api-keys
  secret:
    secretName: {{ include "wanserve.tenancySecretName" . }}
    items:
      - key: {{ .Values.tenancy.secretKey }}
        path: api-keys.yaml
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* Fails rendering when tenancy is on but no key could ever match. */}}
{{- define "wanserve.validateTenancy" -}}
{{- $t := .Values.tenancy }}
{{- if and $t.enabled (not $t.existingSecret) }}
{{- $hashes := 0 }}
{{- range $name, $tenant := $t.tenants }}{{ $hashes = add $hashes (len ($tenant.keyHashes | default list)) }}{{ end }}
{{- if eq (int $hashes) 0 }}
{{- fail "tenancy.enabled is true but no key is configured: set tenancy.existingSecret (a keys file from `wanserve keys add`) or tenancy.tenants.<name>.keyHashes" }}
{{- end }}
{{- end }}
{{- end }}
