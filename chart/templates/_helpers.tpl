{{/*
Chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "spegel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name alone when it already contains the chart name.
*/}}
{{- define "spegel.fullname" -}}
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
Namespace of every resource.
*/}}
{{- define "spegel.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Chart name and version as used by the chart label.
*/}}
{{- define "spegel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "spegel.labels" -}}
helm.sh/chart: {{ include "spegel.chart" . }}
{{ include "spegel.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "spegel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spegel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels that select the Spegel pods: the DaemonSet's selector and pod template, and the selectors of the three Services.
The same as in Spegel's chart since v0.4.0, which adds component "spegel" to the selector labels there: a DaemonSet's
selector cannot be changed, so `helm upgrade` of a Spegel release to this chart works in place only with exactly these.
*/}}
{{- define "spegel.podSelectorLabels" -}}
app.kubernetes.io/component: spegel
{{ include "spegel.selectorLabels" . }}
{{- end }}

{{/*
Name of the service account.
*/}}
{{- define "spegel.serviceAccountName" -}}
{{- default (include "spegel.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/*
Image reference: the digest wins over the tag; the tag defaults to the chart appVersion.
*/}}
{{- define "spegel.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion (toString .Values.image.tag)) }}
{{- end }}
{{- end }}

{{/*
NODE_IP env var: a fixed address from service.registry.nodeIp, else the node's IP from the downward API.
*/}}
{{- define "spegel.nodeIP" -}}
- name: NODE_IP
{{- if .Values.service.registry.nodeIp }}
  value: {{ .Values.service.registry.nodeIp | quote }}
{{- else }}
  valueFrom:
    fieldRef:
      fieldPath: status.hostIP
{{- end }}
{{- end }}

{{/*
DNS name of the headless bootstrap service (peers find each other through its A/AAAA records).
*/}}
{{- define "spegel.bootstrapDomain" -}}
{{- printf "%s-bootstrap.%s.svc.%s" (include "spegel.fullname" .) (include "spegel.namespace" .) .Values.clusterDomain }}
{{- end }}

{{/*
Where the peer identity is kept: spegel.persistence (Spegel v0.7.0 to v0.7.4), overridden key by key by spegel.dataDir
(the name later Spegel charts use), so either values file works unchanged. Returns YAML: enabled, path, hostPath.
*/}}
{{- define "spegel.dataDir" -}}
{{- $d := deepCopy (.Values.spegel.persistence | default dict) -}}
{{- $d = mergeOverwrite $d (deepCopy (.Values.spegel.dataDir | default dict)) -}}
{{- toYaml $d -}}
{{- end }}

{{/*
The Secret holding the router's swarm key (spegel.routerPsk): the user's, or the chart's own.
*/}}
{{- define "spegel.routerPskSecret" -}}
{{- default (printf "%s-router-psk" (include "spegel.fullname" .)) .Values.spegel.routerPsk.existingSecret }}
{{- end }}

{{- define "spegel.registryTlsSecret" -}}
{{- default (printf "%s-registry-tls" (include "spegel.fullname" .)) .Values.spegel.registryTls.existingSecret }}
{{- end }}
