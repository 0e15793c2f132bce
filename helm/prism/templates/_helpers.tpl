{{/* Chart name. */}}
{{- define "prism.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already holds the chart name. */}}
{{- define "prism.fullname" -}}
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

{{- define "prism.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "prism.labels" -}}
helm.sh/chart: {{ include "prism.chart" . }}
app.kubernetes.io/name: {{ include "prism.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component (call with (dict "ctx" $ "component" "gateway")). */}}
{{- define "prism.selectorLabels" -}}
app.kubernetes.io/name: {{ include "prism.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "prism.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "prism.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "prism.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The NATS URL: the bundled chart's client Service, or externalNats.url. */}}
{{- define "prism.natsUrl" -}}
{{- if .Values.nats.enabled }}
{{- $name := "nats" }}
{{- $full := "" }}
{{- if .Values.nats.fullnameOverride }}
{{- $full = .Values.nats.fullnameOverride }}
{{- else if contains $name .Release.Name }}
{{- $full = .Release.Name }}
{{- else }}
{{- $full = printf "%s-%s" .Release.Name $name }}
{{- end }}
{{- printf "nats://%s.%s.svc:4222" ($full | trunc 63 | trimSuffix "-") .Release.Namespace }}
{{- else }}
{{- required "externalNats.url is required when nats.enabled is false" .Values.externalNats.url }}
{{- end }}
{{- end }}

{{/* Whether the chart's Secret is needed (JWT secret or NATS password given in the values). */}}
{{- define "prism.ownSecret" -}}
{{- if or (and .Values.auth.jwtSecret (not .Values.auth.existingSecret)) (and (not .Values.nats.enabled) .Values.externalNats.password (not .Values.externalNats.existingSecret)) }}true{{- end }}
{{- end }}

{{/* Graceful termination budget of a gateway pod. */}}
{{- define "prism.gateway.terminationGrace" -}}
{{- $g := .Values.gateway }}
{{- add $g.preStopSleepSeconds $g.drainSeconds $g.closeTimeout 5 $g.terminationGraceMarginSeconds }}
{{- end }}

{{/* Settings refused in gateway.config / notify.config: they are secrets or set by the chart itself. */}}
{{- define "prism.checkConfig" -}}
{{- range $k, $v := .config }}
{{- if has $k (list "jwt_secret" "nats_password" "nats_token" "nats_url" "nats_user" "nats_creds_file" "port" "drain_seconds" "close_timeout" "metrics_port" "drain_timeout") }}
{{- fail (printf "%s.config.%s is set by the chart (or is a secret): use the dedicated value instead" $.where $k) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The NATS credentials of one component (dict "ctx" $ "component" "gateway"|"notify"), as YAML:
externalNats.*, or for notify externalNats.notify.* when that names a user or a credentials file (so the
notification service can have its own least-privilege NATS user). Empty when the bundled NATS is used. */}}
{{- define "prism.natsAuth" -}}
{{- $v := .ctx.Values }}
{{- if not $v.nats.enabled }}
{{- $x := $v.externalNats }}
{{- $n := $x.notify }}
{{- if and (eq .component "notify") (or $n.user $n.credentialsSecret) }}
{{- $x = dict "user" $n.user "password" "" "existingSecret" $n.existingSecret "passwordKey" $n.passwordKey "credentialsSecret" $n.credentialsSecret "credentialsKey" $n.credentialsKey }}
{{- end }}
{{- $where := ternary "externalNats.notify" "externalNats" (and (eq .component "notify") (or (not (empty $n.user)) (not (empty $n.credentialsSecret)))) }}
{{- $password := or $x.password $x.existingSecret }}
{{- if and $x.credentialsSecret (or $x.user $password) }}
{{- fail (printf "%s: choose one of user/password and credentialsSecret" $where) }}
{{- end }}
{{- if ne (empty $x.user) (empty $password) }}
{{- fail (printf "%s: set both user and a password (password or existingSecret)" $where) }}
{{- end }}
{{- toYaml $x }}
{{- end }}
{{- end }}

{{/* NATS password env of one component (dict "ctx" $ "component" ...). */}}
{{- define "prism.natsEnv" -}}
{{- $x := include "prism.natsAuth" . | fromYaml }}
{{- if or $x.password $x.existingSecret }}
- name: PRISM_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ default (include "prism.fullname" .ctx) $x.existingSecret }}
      key: {{ if $x.existingSecret }}{{ $x.passwordKey }}{{ else }}nats-password{{ end }}
{{- end }}
{{- end }}

{{/* NATS settings of one component's ConfigMap (dict "ctx" $ "component" ...). */}}
{{- define "prism.natsConfig" -}}
PRISM_NATS_URL: {{ include "prism.natsUrl" .ctx | quote }}
{{- $x := include "prism.natsAuth" . | fromYaml }}
{{- with $x.user }}
PRISM_NATS_USER: {{ . | quote }}
{{- end }}
{{- if $x.credentialsSecret }}
PRISM_NATS_CREDS_FILE: {{ printf "/etc/prism/nats/%s" $x.credentialsKey | quote }}
{{- end }}
{{- end }}

{{/* Volume mount and volume of a NATS credentials file (dict "ctx" $ "component" ... "part" "mount"|"volume"). */}}
{{- define "prism.natsCredsVolume" -}}
{{- $x := include "prism.natsAuth" . | fromYaml }}
{{- if $x.credentialsSecret }}
{{- if eq .part "mount" }}
- name: nats-creds
  mountPath: /etc/prism/nats
  readOnly: true
{{- else }}
- name: nats-creds
  secret:
    secretName: {{ $x.credentialsSecret }}
{{- end }}
{{- end }}
{{- end }}

{{/* A Deployment's update strategy from values (type, rollingUpdate); rollingUpdate only with RollingUpdate,
since the API refuses it next to Recreate (and Helm merges the default rollingUpdate into any override). */}}
{{- define "prism.strategy" -}}
{{- $type := .type | default "RollingUpdate" }}
type: {{ $type }}
{{- if and (eq $type "RollingUpdate") .rollingUpdate }}
rollingUpdate:
  {{- toYaml .rollingUpdate | nindent 2 }}
{{- end }}
{{- end }}

{{/* The probes of one container from its values (readinessProbe, livenessProbe, startupProbe); a probe
set to null or {} is left out. */}}
{{- define "prism.probes" -}}
{{- range $name := list "readinessProbe" "livenessProbe" "startupProbe" }}
{{- with get $.values $name }}
{{ $name }}:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod annotations for a Prometheus that discovers pods by annotation (metrics.scrapeAnnotations); call
with (dict "ctx" $ "port" <metrics port>). */}}
{{- define "prism.scrapeAnnotations" -}}
{{- if .ctx.Values.metrics.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* Topology spread of one component over zones and nodes (dict "ctx" $ "component" ... "spread" ...). */}}
{{- define "prism.topologySpread" -}}
{{- if .spread.enabled }}
topologySpreadConstraints:
{{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - maxSkew: {{ $.spread.maxSkew }}
    topologyKey: {{ $key }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "prism.selectorLabels" (dict "ctx" $.ctx "component" $.component) | nindent 8 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels of the gateway's metrics Service: those of the gateway, but its own component, so the
ServiceMonitor selects it and never the public Service. */}}
{{- define "prism.gatewayMetricsLabels" -}}
app.kubernetes.io/name: {{ include "prism.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway-metrics
{{- end }}

{{/* A setting's value as the env string the loader parses: whole numbers without an exponent (1048576,
not 1.048576e+06), booleans as true/false, everything else as given. */}}
{{- define "prism.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}{{ . | int64 | toString | quote }}
{{- else }}{{ . | toString | quote }}
{{- end }}
{{- end }}
