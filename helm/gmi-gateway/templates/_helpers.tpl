{{/* Names and labels. helm.sh/chart and the version never go into selectors. */}}
{{- define "gmi-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gmi-gateway.fullname" -}}
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

{{- define "gmi-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gmi-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gmi-gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "gmi-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "gmi-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gmi-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "gmi-gateway.gmiKeySecret" -}}
{{- default (printf "%s-gmi-key" (include "gmi-gateway.fullname" .)) .Values.gmiApiKey.existingSecret }}
{{- end }}

{{- define "gmi-gateway.tenantsSecret" -}}
{{- default (printf "%s-tenants" (include "gmi-gateway.fullname" .)) .Values.tenants.existingSecret }}
{{- end }}

{{/* The container's facts; tests check they match the app and the Dockerfile. */}}
{{- define "gmi-gateway.containerPort" -}}8080{{- end }}
{{- define "gmi-gateway.uid" -}}10001{{- end }}
{{- define "gmi-gateway.tenantsDir" -}}/etc/gmi-gateway/tenants{{- end }}
{{- define "gmi-gateway.metricsDir" -}}/var/run/gmi-gateway/metrics{{- end }}

{{/* Settings that would deploy but misbehave: refused at install time, with the reason. */}}
{{- define "gmi-gateway.validate" -}}
{{- $replicas := ternary .Values.autoscaling.minReplicas .Values.replicaCount .Values.autoscaling.enabled }}
{{- $several := or (gt (int $replicas) 1) .Values.autoscaling.enabled (gt (int .Values.gateway.workers) 1) }}
{{- if and $several (not (or .Values.redis.url .Values.redis.existingSecret)) }}
{{- fail "more than one replica or worker needs redis.url or redis.existingSecret: without Redis each process keeps its own jobs and quotas, so polls fail on the others and every limit multiplies" }}
{{- end }}
{{- if and (gt (int .Values.gateway.workers) 1) (eq .Values.gateway.storeFailureMode "open") }}
{{- fail "storeFailureMode open needs gateway.workers 1: its fallback store is per process, so while Redis is down every limit would count once per worker and a job submitted through one worker would answer 503 on the others (scale with replicas instead)" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not (dig "requests" "cpu" "" .Values.resources)) }}
{{- fail "autoscaling needs resources.requests.cpu: the HorizontalPodAutoscaler scales on CPU utilisation, a share of that request" }}
{{- end }}
{{- $env := .Values.gateway.extraEnv | default dict }}
{{- $connect := get $env "GATEWAY_UPSTREAM_CONNECT_TIMEOUT" | default "5" | float64 | ceil | int }}
{{- $read := get $env "GATEWAY_UPSTREAM_READ_TIMEOUT" | default "30" | float64 | ceil | int }}
{{- $requests := add (mul 3 (add $connect $read)) 20 }}
{{- $needed := add .Values.preStopSleepSeconds $requests 10 }}
{{- if lt (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds must be at least %d: preStopSleepSeconds, then the gateway's drain (a request in flight makes up to three upstream calls of connect + read timeout each, plus 20 s of retries and waits for other replicas: %d s; the audit flush 5 s), and 5 s to spare" (int $needed) (int $requests)) }}
{{- end }}
{{- end }}
