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
{{- if and (or (gt (int $replicas) 1) .Values.autoscaling.enabled) (not (or .Values.redis.url .Values.redis.existingSecret)) }}
{{- fail "more than one replica needs redis.url or redis.existingSecret: without Redis each pod keeps its own jobs and quotas, so polls fail on the other pods and every limit multiplies" }}
{{- end }}
{{- if lt (int .Values.terminationGracePeriodSeconds) (add (int .Values.preStopSleepSeconds) 25) }}
{{- fail "terminationGracePeriodSeconds must be at least preStopSleepSeconds + 25: after the preStop sleep the gateway takes up to 20 s to drain requests and flush its audit trail" }}
{{- end }}
{{- end }}
