{{/*
Redis: the durable one (jobs, quotas, stored videos; `noeviction`) and the cache-only one (`allkeys-lru`,
no persistence). The app gets their URLs without the password; both use the one password Secret, which
reaches the Ray pods as WANSERVE_REDIS_PASSWORD.
*/}}

{{- define "wanserve.redisSecretName" -}}
{{- if .Values.redis.auth.existingSecret }}
{{- .Values.redis.auth.existingSecret }}
{{- else }}
{{- printf "%s-redis" (include "wanserve.fullname" .) }}
{{- end }}
{{- end }}

{{/* Whether pods get WANSERVE_REDIS_PASSWORD: an internal Redis always has one, an external one if a Secret is named. */}}
{{- define "wanserve.redisHasPassword" -}}
{{- if or (eq .Values.redis.mode "internal") (and (eq .Values.redis.mode "external") .Values.redis.auth.existingSecret) }}true{{- end }}
{{- end }}

{{/* The application's redis_url (the durable Redis): no password in it. */}}
{{- define "wanserve.redisUrl" -}}
{{- if eq .Values.redis.mode "internal" }}
{{- printf "redis://%s-redis.%s.svc:6379/0" (include "wanserve.fullname" .) .Release.Namespace }}
{{- else if eq .Values.redis.mode "external" }}
{{- .Values.redis.external.url }}
{{- end }}
{{- end }}

{{/* Whether this chart runs the cache-only Redis. */}}
{{- define "wanserve.redisCacheEnabled" -}}
{{- if and (eq .Values.redis.mode "internal") .Values.redis.cache.enabled }}true{{- end }}
{{- end }}

{{/* The application's cache_redis_url; empty means the cache shares redis_url. */}}
{{- define "wanserve.redisCacheUrl" -}}
{{- if include "wanserve.redisCacheEnabled" . }}
{{- printf "redis://%s-redis-cache.%s.svc:6379/0" (include "wanserve.fullname" .) .Release.Namespace }}
{{- else if eq .Values.redis.mode "external" }}
{{- .Values.redis.external.cacheUrl }}
{{- end }}
{{- end }}

{{/* Where the external Redis's CA certificate is mounted in Ray pods (WANSERVE_REDIS_TLS_CA_FILE); empty if none. */}}
{{- define "wanserve.redisTlsCaFile" -}}
{{- if and (eq .Values.redis.mode "external") .Values.redis.external.tls.caSecret }}/etc/wanserve/redis-tls/ca.crt{{- end }}
{{- end }}

{{- define "wanserve.redisTlsVolumeMount" -}}
{{- if include "wanserve.redisTlsCaFile" . }}
- name: redis-tls-ca
  mountPath: /etc/wanserve/redis-tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "wanserve.redisTlsVolume" -}}
{{- if include "wanserve.redisTlsCaFile" . }}
- name: redis-tls-ca
  secret:
    secretName: {{ .Values.redis.external.tls.caSecret }}
    items:
      - key: {{ .Values.redis.external.tls.caKey }}
        path: ca.crt
    defaultMode: 0444
{{- end }}
{{- end }}

{{/*
The pod template of one Redis; call with (dict "root" $ "component" "redis" "maxMemory" "6gb"
"policy" "noeviction" "persist" true "resources" {...}). The password stays in the environment, never on
the command line (visible in `ps`).
*/}}
{{- define "wanserve.redisPodTemplate" -}}
{{- $root := .root }}
{{- $r := $root.Values.redis }}
metadata:
  labels:
    {{- include "wanserve.podLabels" (dict "root" $root "component" .component) | nindent 4 }}
spec:
  automountServiceAccountToken: false
  securityContext:
    {{- toYaml $r.podSecurityContext | nindent 4 }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: redis
      image: {{ printf "%s:%s" $r.image.repository (toString $r.image.tag) }}
      imagePullPolicy: {{ $r.image.pullPolicy }}
      command: ["/bin/sh", "-c"]
      args:
        - >-
          exec redis-server
          --requirepass "$REDIS_PASSWORD"
          {{- if .persist }}
          --dir /data
          --appendonly {{ ternary "yes" "no" $r.persistence.enabled }}
          {{- if $r.persistence.enabled }}
          {{- /* At most one second of writes (an accepted job, a GCS update) is lost when the node dies. */}}
          --appendfsync everysec
          {{- end }}
          {{- else }}
          --dir /tmp
          --appendonly no
          --save ""
          {{- end }}
          --maxmemory {{ .maxMemory }}
          --maxmemory-policy {{ .policy }}
      env:
        - name: REDIS_PASSWORD
          valueFrom:
            secretKeyRef:
              name: {{ include "wanserve.redisSecretName" $root }}
              key: {{ $r.auth.secretKey }}
        # redis-cli in the probes reads the password from here.
        - name: REDISCLI_AUTH
          valueFrom:
            secretKeyRef:
              name: {{ include "wanserve.redisSecretName" $root }}
              key: {{ $r.auth.secretKey }}
      ports:
        - name: redis
          containerPort: 6379
      livenessProbe:
        exec:
          command: ["redis-cli", "ping"]
        initialDelaySeconds: 10
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 5
      readinessProbe:
        exec:
          command: ["redis-cli", "ping"]
        initialDelaySeconds: 5
        periodSeconds: 5
        timeoutSeconds: 3
      resources:
        {{- toYaml .resources | nindent 8 }}
      securityContext:
        {{- toYaml $r.containerSecurityContext | nindent 8 }}
      volumeMounts:
        {{- if .persist }}
        - name: data
          mountPath: /data
        {{- end }}
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    {{- if and .persist (not $r.persistence.enabled) }}
    - name: data
      emptyDir:
        sizeLimit: {{ $r.persistence.size }}
    {{- end }}
  {{- with $r.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $r.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $r.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* Redis settings that span several values. */}}
{{- define "wanserve.validateRedis" -}}
{{- $r := .Values.redis }}
{{- if and $r.external.tls.caSecret (not (and (eq $r.mode "external") (hasPrefix "rediss://" $r.external.url))) }}
{{- fail "redis.external.tls.caSecret is set but redis.external.url is not a rediss:// URL of redis.mode=external: the CA is used only for TLS to an external Redis" }}
{{- end }}
{{- if and $r.external.cacheUrl (ne $r.mode "external") }}
{{- fail (printf "redis.external.cacheUrl is set but redis.mode is %s: it is used only with redis.mode=external (internal mode runs its own cache Redis, redis.cache)" $r.mode) }}
{{- end }}
{{- if and (eq $r.mode "external") (hasPrefix "rediss://" $r.external.url) $r.external.cacheUrl (not (hasPrefix "rediss://" $r.external.cacheUrl)) }}
{{- fail "redis.external.url uses TLS (rediss://) but redis.external.cacheUrl does not: the password would cross the network in clear text to the cache Redis" }}
{{- end }}
{{- end }}
