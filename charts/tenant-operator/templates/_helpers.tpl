{{/* The chart's name. */}}
{{- define "tenant-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: the release name when it already contains the chart name
(`helm install tenant-operator ...` gives `tenant-operator`), else release-chart. Truncated to 63 characters,
the limit of some name fields.
*/}}
{{- define "tenant-operator.fullname" -}}
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

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "tenant-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "tenant-operator.labels" -}}
helm.sh/chart: {{ include "tenant-operator.chart" . }}
{{ include "tenant-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: neurallog
{{- end }}

{{/*
Selector labels. control-plane=controller-manager is what the guide's troubleshooting selects on
(kubectl logs -n system -l control-plane=controller-manager).
*/}}
{{- define "tenant-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tenant-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
control-plane: controller-manager
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "tenant-operator.serviceAccountName" -}}
{{- include "tenant-operator.fullname" . }}
{{- end }}

{{/* The ClusterRole the operator binds in each tenant namespace to its ServiceAccount. */}}
{{- define "tenant-operator.tenantRole" -}}
{{- include "tenant-operator.fullname" . }}-tenant
{{- end }}

{{/*
The Flux source of charts/tenant for the flux backend, as {name, namespace}: the one this chart creates when
flux.source.url is set (flux-source.yaml), else the existing one the values name.
*/}}
{{- define "tenant-operator.fluxSource" -}}
{{- if .Values.flux.source.url -}}
name: {{ include "tenant-operator.fullname" . }}-tenant-chart
namespace: {{ .Release.Namespace }}
{{- else -}}
name: {{ required "backend flux needs flux.source.url, or flux.source.name of an existing Flux source" .Values.flux.source.name }}
namespace: {{ .Values.flux.source.namespace | default .Release.Namespace }}
{{- end }}
{{- end }}
