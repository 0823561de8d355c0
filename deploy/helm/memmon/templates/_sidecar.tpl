{{/*
The memmon sidecar, for a pod that runs an application container beside it. In the pod template:

  metadata:
    labels:
      {{- include "memmon.sidecarPodLabels" . | nindent 6 }}     # the Service selects this
    annotations:
      {{- include "memmon.sidecarPodAnnotations" . | nindent 6 }} # roll the pod when the config changes
  spec:
    {{- include "memmon.sidecarPodSpec" . | nindent 4 }}          # shareProcessNamespace, serviceAccountName
    containers:
      - name: app                                                 # = sidecar.appContainerName
        livenessProbe/readinessProbe: {{- include "memmon.appProbes" . | nindent 8 }}
        resources: {limits: {memory: ...}}                        # memmon judges the app against this limit
      {{- include "memmon.sidecar" . | nindent 6 }}
    volumes:
      {{- include "memmon.sidecarVolumes" . | nindent 6 }}

From a parent chart that has memmon as a dependency (charts/memmon), pass the subchart's scope instead of ".":
  {{ include "memmon.sidecar" .Subcharts.memmon }} (and likewise for the other templates here).
*/}}

{{/*
Pod-level settings the sidecar needs: one process namespace for the pod (memmon finds the app's processes with
--match and reads their /proc) and the ServiceAccount the Role is bound to.
*/}}
{{- define "memmon.sidecarPodSpec" -}}
shareProcessNamespace: true
serviceAccountName: {{ include "memmon.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
{{- end }}

{{/*
The pod securityContext (the "securityContext" value).
*/}}
{{- define "memmon.podSecurityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}

{{/*
The sidecar container (a list item: include it under "containers:").
*/}}
{{- define "memmon.sidecar" -}}
- name: memmon
  image: {{ include "memmon.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    {{- toYaml .Values.sidecar.command | nindent 4 }}
  args:
    - --config
    - /etc/memmon/config.json
    - --bind
    - 0.0.0.0
    - --health-port
    - {{ .Values.sidecar.ports.http | quote }}
    - --prometheus-port
    - {{ .Values.sidecar.ports.metrics | quote }}
    - --state-dir
    - /var/lib/memmon
    - --match
    - {{ include "memmon.targetMatch" . | quote }}
    {{- with .Values.sidecar.extraArgs }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: POD_UID
      valueFrom:
        fieldRef:
          fieldPath: metadata.uid
    - name: MEMMON_TARGET__MEMORY_LIMIT_BYTES
      valueFrom:
        resourceFieldRef:
          containerName: {{ .Values.sidecar.appContainerName }}
          resource: limits.memory
    {{- if include "memmon.secretsEnabled" . }}
    {{- $secret := include "memmon.secretName" . }}
    {{- range $name, $key := include "memmon.secretEnv" . | fromYaml }}
    - name: {{ $name }}
      valueFrom:
        secretKeyRef:
          name: {{ $secret }}
          key: {{ $key }}
          optional: true
    {{- end }}
    {{- end }}
    {{- with .Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: memmon-http
      containerPort: {{ .Values.sidecar.ports.http }}
      protocol: TCP
    - name: memmon-metrics
      containerPort: {{ .Values.sidecar.ports.metrics }}
      protocol: TCP
  livenessProbe:
    {{- include "memmon.probe" (dict "probe" .Values.sidecar.livenessProbe "port" "memmon-http") | nindent 4 }}
  readinessProbe:
    {{- include "memmon.probe" (dict "probe" .Values.sidecar.readinessProbe "port" "memmon-http") | nindent 4 }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - name: memmon-config
      mountPath: /etc/memmon
      readOnly: true
    - name: memmon-state
      mountPath: /var/lib/memmon
    - name: memmon-tmp
      mountPath: /tmp
{{- end }}

{{/*
The sidecar's volumes (list items: include them under "volumes:").
*/}}
{{- define "memmon.sidecarVolumes" -}}
- name: memmon-config
  configMap:
    name: {{ include "memmon.fullname" . }}
    items:
      - key: config.json
        path: config.json
- name: memmon-state
  emptyDir:
    sizeLimit: {{ .Values.sidecar.stateSizeLimit }}
- name: memmon-tmp
  emptyDir:
    sizeLimit: 16Mi
{{- end }}

{{/*
livenessProbe and readinessProbe of the APP container: both ask memmon (see sidecar.appLivenessProbe).
*/}}
{{- define "memmon.appProbes" -}}
livenessProbe:
  {{- include "memmon.probe" (dict "probe" .Values.sidecar.appLivenessProbe "port" .Values.sidecar.ports.http) | nindent 2 }}
readinessProbe:
  {{- include "memmon.probe" (dict "probe" .Values.sidecar.appReadinessProbe "port" .Values.sidecar.ports.http) | nindent 2 }}
{{- end }}
