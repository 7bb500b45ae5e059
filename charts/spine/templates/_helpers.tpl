{{/* Labels of every object: those manifests/ gives, with Helm's own in place of kustomize's. */}}
{{- define "spine.labels" -}}
app.kubernetes.io/name: spine-operator
app.kubernetes.io/part-of: spine
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.extraLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The Deployment's selector: immutable, and the same as manifests/ uses. */}}
{{- define "spine.selectorLabels" -}}
app.kubernetes.io/name: spine-operator
{{- end -}}

{{/* The image, by digest when one is given: the operator passes it on to the runtimes. */}}
{{- define "spine.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}
