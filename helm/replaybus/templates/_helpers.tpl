{{/*
Name of the chart, or nameOverride.
*/}}
{{- define "replaybus.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: release name + chart name (once), at most 63 characters.
*/}}
{{- define "replaybus.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "replaybus.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "replaybus.labels" -}}
helm.sh/chart: {{ include "replaybus.chart" . }}
{{ include "replaybus.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: replaybus
{{- end }}

{{/*
Labels that select the pods (Deployment, Service, PodDisruptionBudget, NetworkPolicy).
*/}}
{{- define "replaybus.selectorLabels" -}}
app.kubernetes.io/name: {{ include "replaybus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{/*
Name of the ServiceAccount.
*/}}
{{- define "replaybus.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "replaybus.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference.
*/}}
{{- define "replaybus.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Secret values of `secrets`, keyed by their environment variable; empty ones left out.
*/}}
{{- define "replaybus.secretData" -}}
{{- $names := dict
  "signingKey" "REPLAYBUS_SIGNING_KEY"
  "operatorKey" "REPLAYBUS_OPERATOR_KEY"
  "bootstrapClientSecret" "REPLAYBUS_BOOTSTRAP_CLIENT_SECRET"
  "bootstrapPassword" "REPLAYBUS_BOOTSTRAP_PASSWORD"
  "redisUrl" "REPLAYBUS_REDIS_URL"
  "databaseUrl" "REPLAYBUS_DATABASE_URL" }}
{{- range $key, $value := .Values.secrets }}
{{- if not (hasKey $names $key) }}
{{- fail (printf "secrets.%s is not a known secret (known: %s)" $key (keys $names | sortAlpha | join ", ")) }}
{{- end }}
{{- if $value }}
{{ get $names $key }}: {{ $value | toString | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Whether the chart renders its own Secret: no existingSecret, and at least one value in `secrets`.
*/}}
{{- define "replaybus.createSecret" -}}
{{- if and (not .Values.existingSecret) (include "replaybus.secretData" . | trim) }}true{{ end }}
{{- end }}

{{/*
Name of the Secret the pods read (existing or rendered); empty when there is none.
*/}}
{{- define "replaybus.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else if include "replaybus.createSecret" . }}
{{- include "replaybus.fullname" . }}
{{- end }}
{{- end }}

{{/*
Full name of a bitnami dependency (its common.names.fullname): the release name when it already
contains the chart's name, else release-chart. Call with (list $ "redis").
*/}}
{{- define "replaybus.dependencyFullname" -}}
{{- $root := index . 0 }}
{{- $chart := index . 1 }}
{{- if contains $chart $root.Release.Name }}
{{- $root.Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" $root.Release.Name $chart | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Service of the Redis dependency (bitnami/redis, standalone): <fullname>-master.
*/}}
{{- define "replaybus.redis.host" -}}
{{- printf "%s-master" (include "replaybus.dependencyFullname" (list . "redis")) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Settings the chart sets itself, from other values; `config` must not list them.
*/}}
{{- define "replaybus.managedSettings" -}}
REPLAYBUS_HOST REPLAYBUS_PORT REPLAYBUS_SHUTDOWN_GRACE REPLAYBUS_BAYEUX_TIMEOUT REPLAYBUS_SSE_HEARTBEAT REPLAYBUS_REDIS_URL REPLAYBUS_DATABASE_URL
{{- end }}

{{/*
Longest time the server holds a request open without sending (seconds): the ingress read and
send timeouts must exceed it.
*/}}
{{- define "replaybus.heldRequestSeconds" -}}
{{- max (int .Values.streaming.bayeuxTimeout) (int .Values.streaming.sseHeartbeat) }}
{{- end }}

{{/*
Refuse values that would make a broken release.
*/}}
{{- define "replaybus.validate" -}}
{{- $managed := splitList " " (include "replaybus.managedSettings" .) }}
{{- range $name, $value := .Values.config }}
{{- if not (hasPrefix "REPLAYBUS_" $name) }}
{{- fail (printf "config.%s: settings are REPLAYBUS_* environment variables" $name) }}
{{- end }}
{{- if has $name $managed }}
{{- fail (printf "config.%s is set by the chart (containerPort, drain, streaming, redis, postgresql): set those values instead" $name) }}
{{- end }}
{{- end }}
{{- if and .Values.redis.enabled (or .Values.redis.url .Values.secrets.redisUrl) }}
{{- fail "redis.enabled installs Redis for the release: leave redis.url and secrets.redisUrl empty" }}
{{- end }}
{{- if and .Values.redis.url .Values.secrets.redisUrl }}
{{- fail "set one of redis.url (no password) and secrets.redisUrl (with a password)" }}
{{- end }}
{{- if and .Values.postgresql.enabled (or .Values.postgresql.url .Values.secrets.databaseUrl) }}
{{- fail "postgresql.enabled installs PostgreSQL for the release: leave postgresql.url and secrets.databaseUrl empty" }}
{{- end }}
{{- if and .Values.postgresql.url .Values.secrets.databaseUrl }}
{{- fail "set one of postgresql.url (no password) and secrets.databaseUrl (with a password)" }}
{{- end }}
{{- $several := or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}
{{- $workers := int (default "1" (get .Values.config "REPLAYBUS_WORKERS")) }}
{{- if not .Values.existingSecret }}
{{- $redis := or .Values.redis.enabled .Values.redis.url .Values.secrets.redisUrl }}
{{- if and (or $several (gt $workers 1)) (not $redis) }}
{{- fail "several pods or REPLAYBUS_WORKERS above 1 need a shared engine: set redis.url, secrets.redisUrl or redis.enabled" }}
{{- end }}
{{- if and $several (not (or .Values.postgresql.enabled .Values.postgresql.url .Values.secrets.databaseUrl)) }}
{{- fail "several pods need a shared catalog: set postgresql.url, secrets.databaseUrl or postgresql.enabled" }}
{{- end }}
{{- if and $several (not .Values.secrets.signingKey) }}
{{- fail "several pods need one signing key: set secrets.signingKey (or existingSecret)" }}
{{- end }}
{{- end }}
{{- if lt (int .Values.drain.grace) 1 }}
{{- fail "drain.grace (REPLAYBUS_SHUTDOWN_GRACE) must be at least 1 second" }}
{{- end }}
{{- end }}

{{/*
envFrom and env of the containers: the ConfigMap, the Secret (when there is one), the URLs of
the chart's own Redis and PostgreSQL (their passwords read from the dependencies' Secrets and
substituted by the kubelet), and extraEnv. Call with (list $ $secretName).
*/}}
{{- define "replaybus.containerEnv" -}}
{{- $root := index . 0 }}
{{- $secretName := index . 1 }}
envFrom:
  - configMapRef:
      name: {{ include "replaybus.fullname" $root }}
  {{- if $secretName }}
  - secretRef:
      name: {{ $secretName }}
  {{- end }}
{{- if or $root.Values.redis.enabled $root.Values.postgresql.enabled $root.Values.extraEnv }}
env:
  {{- if $root.Values.redis.enabled }}
  {{- $host := include "replaybus.redis.host" $root }}
  {{- $port := int $root.Values.redis.port }}
  {{- $db := int $root.Values.redis.database }}
  {{- if $root.Values.redis.auth.enabled }}
  - name: REDIS_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ include "replaybus.dependencyFullname" (list $root "redis") }}
        key: redis-password
  - name: REPLAYBUS_REDIS_URL
    value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:%d/%d" $host $port $db | quote }}
  {{- else }}
  - name: REPLAYBUS_REDIS_URL
    value: {{ printf "redis://%s:%d/%d" $host $port $db | quote }}
  {{- end }}
  {{- end }}
  {{- if $root.Values.postgresql.enabled }}
  {{- $auth := $root.Values.postgresql.auth }}
  - name: DATABASE_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ include "replaybus.dependencyFullname" (list $root "postgresql") }}
        key: password
  - name: REPLAYBUS_DATABASE_URL
    value: {{ printf "postgresql://%s:$(DATABASE_PASSWORD)@%s:%d/%s" $auth.username (include "replaybus.dependencyFullname" (list $root "postgresql")) (int $root.Values.postgresql.port) $auth.database | quote }}
  {{- end }}
  {{- with $root.Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
`to:` of the NetworkPolicy egress rule of a database: the release's own pods of that dependency
when it is enabled, else networkPolicy.databasePeers (none listed: any destination). Call with
(list $ "redis") or (list $ "postgresql").
*/}}
{{- define "replaybus.databasePeers" -}}
{{- $root := index . 0 }}
{{- $chart := index . 1 }}
{{- if (index $root.Values $chart).enabled }}
to:
  - podSelector:
      matchLabels:
        app.kubernetes.io/name: {{ $chart }}
        app.kubernetes.io/instance: {{ $root.Release.Name }}
{{- else if $root.Values.networkPolicy.databasePeers }}
to:
  {{- toYaml $root.Values.networkPolicy.databasePeers | nindent 2 }}
{{- end }}
{{- end }}
