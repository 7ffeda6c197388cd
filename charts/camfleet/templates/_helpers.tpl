{{/* Names, labels and images shared by every template. */}}

{{- define "camfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "camfleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "camfleet.operator.fullname" -}}{{ include "camfleet.fullname" . }}-operator{{- end -}}
{{- define "camfleet.gateway.fullname" -}}{{ include "camfleet.fullname" . }}-gateway{{- end -}}
{{- define "camfleet.archiver.fullname" -}}{{ include "camfleet.fullname" . }}-archiver{{- end -}}
{{- define "camfleet.ingest.fullname" -}}{{ include "camfleet.fullname" . }}-ingest{{- end -}}

{{- define "camfleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "camfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: camfleet
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "operator") */}}
{{- define "camfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "camfleet.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "camfleet.componentLabels" -}}
{{ include "camfleet.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "camfleet.tag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{/* Image of a component: (dict "root" $ "component" "operator" "image" .Values.operator.image) */}}
{{- define "camfleet.image" -}}
{{- $repo := default (printf "%s/camfleet-%s" .root.Values.image.registry .component) .image.repository -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (include "camfleet.tag" .root) -}}
{{- end -}}
{{- end -}}

{{- define "camfleet.ingestImage" -}}
{{- default (printf "%s/camfleet-ingest:%s" .Values.image.registry (include "camfleet.tag" .)) .Values.operator.ingest.image -}}
{{- end -}}

{{/* Namespaces holding Cameras the chart can name: the watched ones, or the release namespace. */}}
{{- define "camfleet.cameraNamespaces" -}}
{{- $namespaces := .Values.operator.watchNamespaces -}}
{{- if not $namespaces -}}
{{- $namespaces = list .Release.Namespace -}}
{{- end -}}
{{- concat $namespaces .Values.ingest.serviceAccount.extraNamespaces | uniq | toJson -}}
{{- end -}}

{{/* Operator shards: the configured list, or one unnamed shard serving everything. */}}
{{- define "camfleet.shards" -}}
{{- if .Values.operator.shards -}}
{{- toJson .Values.operator.shards -}}
{{- else -}}
{{- toJson (list (dict "name" "" "selector" "")) -}}
{{- end -}}
{{- end -}}

{{/* The operator Deployment's name for one shard: (dict "root" $ "shard" $shard) */}}
{{- define "camfleet.operator.shardName" -}}
{{- $name := include "camfleet.operator.fullname" .root -}}
{{- if .shard.name }}{{ printf "%s-%s" $name .shard.name }}{{ else }}{{ $name }}{{ end -}}
{{- end -}}

{{/* Peering object name of one shard: (dict "root" $ "shard" $shard) */}}
{{- define "camfleet.peeringName" -}}
{{- $base := default (include "camfleet.fullname" .root) .root.Values.operator.peering.name -}}
{{- if .shard.name -}}
{{- printf "%s-%s" $base .shard.name -}}
{{- else -}}
{{- $base -}}
{{- end -}}
{{- end -}}

{{- define "camfleet.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "camfleet.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Render a NetworkPolicy port list: (dict "ports" (list 443) "protocol" "TCP") */}}
{{- define "camfleet.npPorts" -}}
{{- range .ports }}
{{- if kindIs "map" . }}
- protocol: {{ .protocol | default $.protocol }}
  port: {{ .port }}
  {{- with .endPort }}
  endPort: {{ . }}
  {{- end }}
{{- else }}
- protocol: {{ $.protocol }}
  port: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{- /*
  What the operator does per Camera, and nothing else:
  - cameras: kopf lists/watches them and patches finalizers and its progress annotations;
    the reconcile patches the finalizer and writes status through the status subresource.
  - cameras/finalizers update: children carry ownerReferences with blockOwnerDeletion.
  - deployments, secrets: get/create/patch (server-side apply)/delete of the ingest Deployment
    and the publish-token Secret, by name; never list or watch, so no bulk Secret reads.
  - pods list: the ingest pods' state (restarts, termination message) for the Camera status.
  - events create/patch: phase transitions and warnings on the Camera.
  - kopfpeerings (namespaced mode; clusterkopfpeerings otherwise): kopf's keep-alives in the
    shard's peering object.
*/}}
{{- define "camfleet.operator.namespacedRules" -}}
- apiGroups: ["camfleet.io"]
  resources: ["cameras"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["camfleet.io"]
  resources: ["cameras/status"]
  verbs: ["get", "patch"]
- apiGroups: ["camfleet.io"]
  resources: ["cameras/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if and .Values.operator.peering.enabled .Values.operator.watchNamespaces }}
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}
