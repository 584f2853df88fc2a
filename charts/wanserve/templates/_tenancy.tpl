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

{{/*
Quotas in the app's snake_case; call with (dict "quotas" <map> "complete" <bool>). A limit given is passed
on, null meaning unlimited. Helm drops a key whose override is null, so for the defaults (complete) a
missing limit is rendered as null; a tenant's own quotas pass only the limits it names. Byte counts go
through int64: values arrive as floats, and toYaml would print 2147483648 as 2.147483648e+09.
*/}}
{{- define "wanserve.tenantQuotas" -}}
{{- $q := .quotas | default dict }}
{{- $out := dict }}
{{- range $key, $field := dict "requestsPerMinute" "requests_per_minute" "maxConcurrentJobs" "max_concurrent_jobs" "dailyComputeUnits" "daily_compute_units" "maxStorageBytes" "max_storage_bytes" }}
{{- if or $.complete (hasKey $q $key) }}
{{- $value := index $q $key }}
{{- if kindIs "invalid" $value }}
{{- $_ := set $out $field nil }}
{{- else if eq $key "dailyComputeUnits" }}
{{- $_ := set $out $field (float64 $value) }}
{{- else }}
{{- $_ := set $out $field (int64 $value) }}
{{- end }}
{{- end }}
{{- end }}
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
{{- if hasKey $tenant "quotas" }}{{ $_ := set $settings "quotas" (include "wanserve.tenantQuotas" (dict "quotas" $tenant.quotas) | fromYaml) }}{{ end }}
{{- $_ := set $tenants $name $settings }}
{{- end }}
{{- toYaml (dict
    "api_keys_file" (include "wanserve.apiKeysFile" .)
    "default_quotas" (include "wanserve.tenantQuotas" (dict "quotas" $t.defaultQuotas "complete" true) | fromYaml)
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

{{/* Names the server gives callers itself (serve/tenancy/keys.py RESERVED_TENANTS): no tenant may claim one. */}}
{{- define "wanserve.validateTenancy" -}}
{{- range $name, $_ := .Values.tenancy.tenants }}
{{- if has $name (list "anonymous" "unknown" "shared") }}
{{- fail (printf "tenancy.tenants.%s: the names anonymous, unknown and shared are reserved by the server (open-mode callers, unknown metric labels, the shared cache): choose another tenant name" $name) }}
{{- end }}
{{- end }}
{{- end }}
