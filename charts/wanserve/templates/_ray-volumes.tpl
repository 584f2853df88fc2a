{{/*
Volumes of every Ray pod. The root filesystem is read-only, so Ray's writable paths are emptyDirs:
/tmp (session dirs, logs, spilled objects, caches) and /dev/shm (the object store; the container
runtime's default 64 MiB would starve it). The model volume is mounted read-only.
*/}}

{{- define "wanserve.rayVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: dshm
  mountPath: /dev/shm
- name: model
  mountPath: {{ .Values.model.mountPath }}
  readOnly: true
{{- include "wanserve.tenancyVolumeMount" . }}
{{- include "wanserve.redisTlsVolumeMount" . }}
{{- end }}

{{/* Call with (dict "root" $ "sharedMemorySize" "8Gi"). */}}
{{- define "wanserve.rayVolumes" -}}
{{- $volume := .root.Values.model.volume -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .root.Values.ray.tmpSizeLimit }}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .sharedMemorySize }}
- name: model
  {{- if eq $volume.type "persistentVolumeClaim" }}
  persistentVolumeClaim:
    claimName: {{ $volume.claimName }}
    readOnly: true
  {{- else }}
  hostPath:
    path: {{ $volume.hostPath }}
    type: Directory
  {{- end }}
{{- include "wanserve.tenancyVolume" .root }}
{{- include "wanserve.redisTlsVolume" .root }}
{{- end }}
