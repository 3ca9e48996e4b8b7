{{/*
Object names are fixed (redis, neurallog-server, tenant-quota...): a tenant's namespace holds exactly one
release of this chart, and the guide's commands (svc/neurallog-server, -l app=redis) and the post-renderer
address the objects by these names. The release name is the tenant's name and appears in the instance label.
*/}}

{{/* The chart's name, for app.kubernetes.io/name. */}}
{{- define "tenant.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "tenant.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "tenant.labels" -}}
helm.sh/chart: {{ include "tenant.chart" . }}
app.kubernetes.io/name: {{ include "tenant.name" . }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: neurallog
{{- end }}

{{/*
Selector labels of one component; called with (dict "context" $ "app" "redis"). `app` is the label the
guide's commands select on; selectors are immutable, so they hold nothing that changes between releases.
*/}}
{{- define "tenant.selectorLabels" -}}
app: {{ .app }}
app.kubernetes.io/name: {{ include "tenant.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of one component's objects; called with (dict "context" $ "app" "redis" "component" "redis"). */}}
{{- define "tenant.componentLabels" -}}
{{ include "tenant.labels" .context }}
app: {{ .app }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Labels of one component's pods: those of its objects but helm.sh/chart, so that a new chart version that
changes nothing in a pod (or the same chart installed by another Helm client, e.g. Flux) restarts no pod.
*/}}
{{- define "tenant.podLabels" -}}
{{- $kept := list }}
{{- range $line := splitList "\n" (include "tenant.componentLabels" .) }}
{{- if not (hasPrefix "helm.sh/chart:" $line) }}{{ $kept = append $kept $line }}{{ end }}
{{- end }}
{{- join "\n" $kept }}
{{- end }}

{{/* redis.conf from redis.config, with the directives the chart sets itself. */}}
{{- define "tenant.redisConf" -}}
{{- $lines := list }}
{{- range $key, $value := .Values.redis.config }}
{{- $lines = append $lines (printf "%s %s" $key $value) }}
{{- end }}
{{- $lines = concat $lines (list "dir /data" "port 6379") }}
{{- printf "%s\n" (join "\n" $lines) }}
{{- end }}

{{/* The tenant's display name and description, on the workloads. */}}
{{- define "tenant.annotations" -}}
{{- with .Values.displayName }}
neurallog.io/display-name: {{ . | quote }}
{{- end }}
{{- with .Values.description }}
neurallog.io/description: {{ . | quote }}
{{- end }}
{{- end }}

{{/* Container resources from the spec's {cpu: {limit, request}, memory: {limit, request}}. */}}
{{- define "tenant.containerResources" -}}
requests:
  cpu: {{ .cpu.request | quote }}
  memory: {{ .memory.request | quote }}
limits:
  cpu: {{ .cpu.limit | quote }}
  memory: {{ .memory.limit | quote }}
{{- end }}

{{/*
Security context of every container, admissible under Pod Security "restricted" (tenant namespaces enforce
it). The pod's securityContext adds the user, group and seccomp profile.
*/}}
{{- define "tenant.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod security context; called with the user and group id (the same number for both). */}}
{{- define "tenant.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The server's environment: the guide's defaults, each replaced in place by a user entry of the same name, then
the user's other entries in their order. REDIS_PASSWORD comes first so that later values may refer to it as
$(REDIS_PASSWORD): the default REDIS_URL does, so the server authenticates to Redis (which requires the
password) out of the box, and Kubernetes expands it in the container, never in a manifest. Literal values
are rendered as strings; valueFrom is passed through as written.
*/}}
{{- define "tenant.server.env" -}}
{{- $defaults := list
  (dict "name" "REDIS_PASSWORD" "valueFrom" (dict "secretKeyRef" (dict "name" "redis-auth" "key" "password")))
  (dict "name" "NODE_ENV" "value" "production")
  (dict "name" "PORT" "value" "3030")
  (dict "name" "REDIS_URL" "value" "redis://:$(REDIS_PASSWORD)@redis:6379")
  (dict "name" "LOG_LEVEL" "value" "info") -}}
{{- $user := dict -}}
{{- range .Values.server.env -}}
  {{- if hasKey . "valueFrom" -}}
    {{- $_ := set $user .name (dict "name" .name "valueFrom" .valueFrom) -}}
  {{- else -}}
    {{- $_ := set $user .name (dict "name" .name "value" (toString .value)) -}}
  {{- end -}}
{{- end -}}
{{- $env := list -}}
{{- range $defaults -}}
  {{- $env = append $env (get $user .name | default .) -}}
  {{- $_ := unset $user .name -}}
{{- end -}}
{{- range .Values.server.env -}}
  {{- if hasKey $user .name -}}
    {{- $env = append $env (get $user .name) -}}
    {{- $_ := unset $user .name -}}
  {{- end -}}
{{- end -}}
{{- toYaml $env -}}
{{- end }}

{{/* The port the server listens on: PORT of its environment when that is a literal number, else 3030. */}}
{{- define "tenant.server.port" -}}
{{- $port := "3030" -}}
{{- range (include "tenant.server.env" . | fromYamlArray) -}}
  {{- if and (eq .name "PORT") (hasKey . "value") (regexMatch "^[0-9]+$" (toString .value)) -}}
    {{- $port = toString .value -}}
  {{- end -}}
{{- end -}}
{{- $port -}}
{{- end }}

{{/*
Metadata of a `helm test` pod; called with (dict "context" $ "name" "tenant-test-redis" "weight" "1").
The label app=tenant-test is the one the post-renderer's helm-test policies open (to Redis on 6379 and to
the server's port): the tests go through the tenant's own network policies. It is none of the Deployment's,
StatefulSet's or Services' selectors, so no ReplicaSet adopts a test pod and no Service sends it traffic.
*/}}
{{- define "tenant.test.metadata" -}}
name: {{ .name }}
namespace: {{ .context.Release.Namespace }}
labels:
  {{- include "tenant.componentLabels" (dict "context" .context "app" "tenant-test" "component" "test") | nindent 2 }}
annotations:
  helm.sh/hook: test
  helm.sh/hook-weight: {{ .weight | quote }}
  # Kept after the run for `helm test --logs` and kubectl; replaced by the next run.
  helm.sh/hook-delete-policy: before-hook-creation
{{- end }}

{{/*
The pod spec fields of a `helm test` pod but its containers. Tests run in the Redis image (redis-cli, and
busybox sh and wget) as its redis user. activeDeadlineSeconds bounds a test whose connection a policy drops:
the pod then fails instead of hanging until `helm test` times out.
*/}}
{{- define "tenant.test.podSpec" -}}
restartPolicy: Never
activeDeadlineSeconds: 60
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- include "tenant.podSecurityContext" 999 | nindent 2 }}
{{- end }}

{{/*
Resources of a `helm test` container. Helm runs the tests one at a time and the quota charges a pod only
while it runs, so `helm test` needs this much room beside the release (see the README: Tests).
*/}}
{{- define "tenant.test.resources" -}}
requests:
  cpu: 10m
  memory: 16Mi
limits:
  cpu: 100m
  memory: 32Mi
{{- end }}
