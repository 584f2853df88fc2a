{{/*
Volumes of every Ray pod. The root filesystem is read-only, so Ray's writable paths are emptyDirs:
/tmp (session dirs, logs, spilled objects, caches) and /dev/shm (the object store; the container
runtime's default 64 MiB would starve it). The model volume is mounted read-only, on worker pods only:
the head runs no stage, and a head that needs no weights starts on any CPU node.
*/}}

{{/* Call with (dict "root" $ "weights" bool). */}}
{{- define "wanserve.rayVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: dshm
  mountPath: /dev/shm
{{- if .weights }}
- name: model
  mountPath: {{ .root.Values.model.mountPath }}
  readOnly: true
{{- end }}
{{- include "wanserve.tenancyVolumeMount" .root }}
{{- include "wanserve.redisTlsVolumeMount" .root }}
{{- end }}

{{/* The model volume, by model.volume.type. */}}
{{- define "wanserve.modelVolume" -}}
{{- $volume := .Values.model.volume -}}
- name: model
  {{- if eq $volume.type "hostPath" }}
  hostPath:
    path: {{ $volume.hostPath }}
    type: Directory
  {{- else }}
  persistentVolumeClaim:
    claimName: {{ include "wanserve.modelClaimName" . }}
    readOnly: true
  {{- end }}
{{- end }}

{{/* The claim holding the weights: the chart's own (type template) or an existing one. */}}
{{- define "wanserve.modelClaimName" -}}
{{- if eq .Values.model.volume.type "template" }}
{{- printf "%s-models" (include "wanserve.fullname" .) }}
{{- else }}
{{- .Values.model.volume.claimName }}
{{- end }}
{{- end }}

{{/* Call with (dict "root" $ "sharedMemorySize" "8Gi" "weights" bool). */}}
{{- define "wanserve.rayVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .root.Values.ray.tmpSizeLimit }}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .sharedMemorySize }}
{{- if .weights }}
{{ include "wanserve.modelVolume" .root }}
{{- end }}
{{- include "wanserve.tenancyVolume" .root }}
{{- include "wanserve.redisTlsVolume" .root }}
{{- end }}

{{/* Every model directory a stage application loads: the stable version's and a canary's candidate's. */}}
{{- define "wanserve.modelDirs" -}}
{{- $dirs := list .Values.model.dir }}
{{- if .Values.policy.rollout.enabled }}
{{- $dirs = append $dirs .Values.policy.rollout.candidateModelDir }}
{{- end }}
{{- toJson $dirs }}
{{- end }}

{{/*
The init container of every worker pod: `wanserve check-model` on each model directory, so a pod whose
weights are incomplete (a download still running, a copy that stopped) waits in Init with the list of
missing files in its log, and Ray never starts on them. Call with (dict "root" $ "image" <image>).
*/}}
{{- define "wanserve.checkModelInitContainer" -}}
{{- $v := .root.Values -}}
- name: check-model
  image: {{ .image }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  command: ["wanserve", "check-model"]
  args: {{ include "wanserve.modelDirs" .root }}
  resources:
    requests:
      cpu: 100m
      memory: 256Mi
    limits:
      cpu: 500m
      memory: 512Mi
  securityContext:
    {{- toYaml $v.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    - name: model
      mountPath: {{ $v.model.mountPath }}
      readOnly: true
{{- end }}
