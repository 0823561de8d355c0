{{/*
The chart name, or nameOverride.
*/}}
{{- define "memmon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the objects: fullnameOverride, else "<release>-<name>" (just the release name when it already
contains the chart name). Truncated to 63 characters, the DNS label limit.
*/}}
{{- define "memmon.fullname" -}}
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
{{- define "memmon.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The namespace of the namespaced objects: namespaceOverride, else the release namespace.
*/}}
{{- define "memmon.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{/*
Common labels of every object.
*/}}
{{- define "memmon.labels" -}}
helm.sh/chart: {{ include "memmon.chart" . }}
{{ include "memmon.selectorLabels" . }}
{{- with .Chart.AppVersion }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "memmon.name" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: the stable subset of the labels.
*/}}
{{- define "memmon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "memmon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The label a pod carrying the sidecar has; the Service selects pods by it. Add it to your pod template's labels.
*/}}
{{- define "memmon.sidecarPodLabels" -}}
memmon.io/sidecar: {{ include "memmon.fullname" . }}
{{- end }}

{{/*
Annotations for a pod carrying the sidecar: a checksum of memmon's configuration, so a config change rolls the pod.
*/}}
{{- define "memmon.sidecarPodAnnotations" -}}
checksum/memmon-config: {{ include "memmon.configJson" . | sha256sum }}
{{- end }}

{{/*
The name of the ServiceAccount to use.
*/}}
{{- define "memmon.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "memmon.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The memmon image: [registry/]repository:tag[@digest]; the tag defaults to the chart's appVersion.
*/}}
{{- define "memmon.image" -}}
{{- $repository := .Values.image.repository }}
{{- with .Values.image.registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- $image := printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- with .Values.image.digest }}
{{- $image = printf "%s@%s" $image . }}
{{- end }}
{{- $image }}
{{- end }}

{{/*
imagePullSecrets entries from names or objects.
*/}}
{{- define "memmon.imagePullSecrets" -}}
{{- range .Values.imagePullSecrets }}
{{- if kindIs "map" . }}
- {{ toYaml . | trim }}
{{- else }}
- name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/*
memmon's configuration file, as pretty JSON (the "config" value).
*/}}
{{- define "memmon.configJson" -}}
{{- $config := deepCopy (default (dict) .Values.config) }}
{{- if eq .Values.mode "node" }}
{{- $node := .Values.node }}
{{- $section := deepCopy (default (dict) (get $config "node")) }}
{{- $_ := set $section "enabled" true }}
{{- $_ = set $section "name" nil }}
{{- $_ = set $section "cgroup_root" $node.cgroupMountPath }}
{{- $_ = set $section "select" $node.select }}
{{- $_ = set $section "namespaces" $node.namespaces }}
{{- $_ = set $section "exclude_namespaces" $node.excludeNamespaces }}
{{- $_ = set $section "containers" $node.containers }}
{{- $_ = set $section "restart" $node.restart }}
{{- $_ = set $section "annotate_pods" $node.annotatePods }}
{{- $_ = set $section "max_restarts_per_hour" $node.maxRestartsPerHour }}
{{- $_ = set $config "node" $section }}
{{- $actions := deepCopy (default (dict) (get $config "auto_response")) }}
{{- $emergency := deepCopy (default (dict) (get $actions "emergency_actions")) }}
{{- $restart := deepCopy (default (dict) (get $emergency "graceful_restart")) }}
{{- $strategies := dict "evict" "kubernetes-evict" "signal" "signal" "none" "none" }}
{{- $_ = set $restart "strategy" (get $strategies $node.restart) }}
{{- $_ = set $restart "grace_seconds" $node.gracefulRestart.graceSeconds }}
{{- $_ = set $restart "cooldown_seconds" $node.gracefulRestart.cooldownSeconds }}
{{- if eq $node.restart "evict" }}
{{- $_ = set $restart "evict_attempts" $node.gracefulRestart.evictAttempts }}
{{- end }}
{{- $_ = set $emergency "graceful_restart" $restart }}
{{- $_ = set $actions "emergency_actions" $emergency }}
{{- $_ = set $config "auto_response" $actions }}
{{- end }}
{{- toPrettyJson $config }}
{{- end }}

{{/*
Whether the chart runs in node mode (a DaemonSet): "true" or "".
*/}}
{{- define "memmon.nodeMode" -}}
{{- if eq .Values.mode "node" }}true{{ end }}
{{- end }}

{{/*
Labels of the DaemonSet's pods beyond the selector labels; the Service selects node-mode pods by them.
*/}}
{{- define "memmon.nodeSelectorLabels" -}}
{{ include "memmon.selectorLabels" . }}
app.kubernetes.io/component: node
{{- end }}

{{/*
Whether secrets are injected (a Secret is created or an existing one is named): "true" or "".
*/}}
{{- define "memmon.secretsEnabled" -}}
{{- if and .Values.secrets.create .Values.secrets.existingSecret }}
{{- fail "secrets.create and secrets.existingSecret exclude each other: create a Secret from values or name one" }}
{{- end }}
{{- if or .Values.secrets.create .Values.secrets.existingSecret }}true{{ end }}
{{- end }}

{{/*
The name of the Secret memmon's secret environment variables come from.
*/}}
{{- define "memmon.secretName" -}}
{{- default (include "memmon.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/*
Environment variable name -> key in the Secret, for every secret memmon takes.
*/}}
{{- define "memmon.secretEnv" -}}
SLACK_WEBHOOK_URL: slack-webhook-url
MEMMON_ALERTING__WEBHOOK_URL: webhook-url
MEMMON_ALERTING__SMTP__PASSWORD: smtp-password
MEMMON_API_TOKEN: api-token
{{- end }}

{{/*
The regex memmon matches the app's processes with: sidecar.targetMatch, or the demo app's when the demo is on.
*/}}
{{- define "memmon.targetMatch" -}}
{{- $match := .Values.sidecar.targetMatch }}
{{- if and (not $match) .Values.demo.enabled }}
{{- $match = "demo_app[.]py" }}
{{- end }}
{{- required "sidecar.targetMatch is required: a regex for the command line of the app's processes (memmon --match)" $match }}
{{- end }}

{{/*
A probe from values whose httpGet gets a default port: (dict "probe" <probe> "port" <port>).
*/}}
{{- define "memmon.probe" -}}
{{- $probe := deepCopy .probe }}
{{- if and (hasKey $probe "httpGet") (not (hasKey $probe.httpGet "port")) }}
{{- $_ := set $probe.httpGet "port" .port }}
{{- end }}
{{- toYaml $probe }}
{{- end }}

{{/*
Whether an optional object is rendered: (dict "enabled" <true|false|"auto"> "api" <group/version/kind or ""> "root" .).
"auto" renders it in node mode only, and only where the cluster serves "api" (the prometheus-operator's CRDs:
`helm install` asks the cluster, `helm template` knows only what --api-versions adds). "true" or "".
*/}}
{{- define "memmon.wants" -}}
{{- $enabled := toString .enabled }}
{{- if eq $enabled "true" }}true
{{- else if and (eq $enabled "auto") (eq .root.Values.mode "node") }}
{{- if or (not .api) (.root.Capabilities.APIVersions.Has .api) }}true{{ end }}
{{- end }}
{{- end }}

{{/*
The securityContext of the node-mode container: containerSecurityContext (non-root, no capability), except with
node.restart signal: uid 0 with every capability dropped but KILL. Kubernetes hands added capabilities to a
non-root process only through the ambient set, which it never sets (kubernetes/kubernetes#56374), so signalling
other users' processes (the containers' main processes, through hostPID) needs uid 0 with CAP_KILL.
*/}}
{{- define "memmon.nodeContainerSecurityContext" -}}
{{- if eq .Values.node.restart "signal" }}
{{- $context := omit (deepCopy .Values.containerSecurityContext) "runAsNonRoot" "runAsUser" "runAsGroup" "capabilities" }}
{{- $_ := set $context "runAsNonRoot" false }}
{{- $_ = set $context "runAsUser" 0 }}
{{- $_ = set $context "runAsGroup" 0 }}
{{- $_ = set $context "capabilities" (dict "drop" (list "ALL") "add" (list "KILL")) }}
{{- toYaml $context }}
{{- else }}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}
{{- end }}

{{/*
The pod securityContext of the DaemonSet: the "securityContext" value, without the non-root user settings when
node.restart is signal (the container runs as uid 0, see memmon.nodeContainerSecurityContext).
*/}}
{{- define "memmon.nodePodSecurityContext" -}}
{{- if eq .Values.node.restart "signal" }}
{{- toYaml (omit (deepCopy .Values.securityContext) "runAsNonRoot" "runAsUser" "runAsGroup") }}
{{- else }}
{{- toYaml .Values.securityContext }}
{{- end }}
{{- end }}
