{{- define "flowlake.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "flowlake.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "flowlake.labels" -}}
app.kubernetes.io/name: {{ include "flowlake.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "flowlake.selector" -}}
app.kubernetes.io/name: {{ include "flowlake.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "flowlake.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{- define "flowlake.tableUrl" -}}
{{- default "file:///var/lib/flowlake/table" .Values.objectStore.url -}}
{{- end -}}

{{- define "flowlake.objectStoreSecret" -}}
{{- if .Values.objectStore.existingSecret -}}
{{- .Values.objectStore.existingSecret -}}
{{- else if .Values.objectStore.createSecret -}}
{{- printf "%s-objectstore" (include "flowlake.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "flowlake.objectStoreEnvFrom" -}}
{{- with include "flowlake.objectStoreSecret" . }}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
{{- end -}}

{{- /* HTTPS or HTTP for a probe or a URL of a component with this TLS Secret name. */ -}}
{{- define "flowlake.scheme" -}}
{{- if . }}HTTPS{{ else }}HTTP{{ end -}}
{{- end -}}

{{- /* Pod volumes of the Secrets the ingester's and the query service's containers
       read (TLS pair, token file); `component` is "ingester" or "query". */ -}}
{{- define "flowlake.secretVolumes" -}}
{{- $root := .root }}
{{- with (index $root.Values.tls .component).secretName }}
- name: {{ $.component }}-tls
  secret: {secretName: {{ . }}, items: [{key: tls.crt, path: tls.crt}, {key: tls.key, path: tls.key}]}
{{- end }}
{{- with (index $root.Values.auth .component).tokenFileSecret }}
{{- if .name }}
- name: {{ $.component }}-tokens
  secret: {secretName: {{ .name }}, items: [{key: {{ .key }}, path: tokens.json}]}
{{- end }}
{{- end }}
{{- end -}}

{{- define "flowlake.secretMounts" -}}
{{- $root := .root }}
{{- if (index $root.Values.tls .component).secretName }}
- {name: {{ .component }}-tls, mountPath: /etc/flowlake/{{ .component }}-tls, readOnly: true}
{{- end }}
{{- if (index $root.Values.auth .component).tokenFileSecret.name }}
- {name: {{ .component }}-tokens, mountPath: /etc/flowlake/{{ .component }}-tokens, readOnly: true}
{{- end }}
{{- end -}}

{{- /* The flags naming those files; `prefix` is the env prefix (FLOWLAKE_INGESTER). */ -}}
{{- define "flowlake.secretEnv" -}}
{{- $root := .root }}
{{- if (index $root.Values.tls .component).secretName }}
- name: {{ .prefix }}_TLS_CERT
  value: /etc/flowlake/{{ .component }}-tls/tls.crt
- name: {{ .prefix }}_TLS_KEY
  value: /etc/flowlake/{{ .component }}-tls/tls.key
{{- end }}
{{- if (index $root.Values.auth .component).tokenFileSecret.name }}
- name: {{ .prefix }}_TOKEN_FILE
  value: /etc/flowlake/{{ .component }}-tokens/tokens.json
{{- end }}
{{- end -}}
