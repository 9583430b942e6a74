{{/* Names, labels and the pieces every platform pod shares. */}}

{{- define "browser-labs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "browser-labs.fullname" -}}
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

{{- define "browser-labs.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels; with a component: include "browser-labs.selectorLabels" (list . "web") */}}
{{- define "browser-labs.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "browser-labs.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
{{- if gt (len .) 1 }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}
{{- end }}

{{- define "browser-labs.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "browser-labs.chart" $root }}
{{ include "browser-labs.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: browser-labs
{{- end }}

{{- define "browser-labs.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "browser-labs.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "browser-labs.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "browser-labs.secretName" -}}
{{- default (include "browser-labs.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{- define "browser-labs.sessionsNamespace" -}}
{{- .Values.sessions.namespace }}
{{- end }}

{{/* Fails the render early when the chart would make a Secret without the URLs it needs. */}}
{{- define "browser-labs.checkValues" -}}
{{- if not .Values.secret.existingSecret }}
{{- if not .Values.database.url }}
{{- fail "database.url is required (a PostgreSQL URL), or set secret.existingSecret to a Secret that holds DATABASE_URL" }}
{{- end }}
{{- if not .Values.redis.url }}
{{- fail "redis.url is required (a Redis URL), or set secret.existingSecret to a Secret that holds REDIS_URL" }}
{{- end }}
{{- end }}
{{- if and .Values.previewHost (has (lower .Values.previewHost) (splitList "," (lower (include "browser-labs.allowedHosts" .)))) }}
{{- fail "previewHost must differ from platformHost and django.extraAllowedHosts: previews need a host name of their own" }}
{{- end }}
{{- if eq .Release.Namespace .Values.sessions.namespace }}
{{- fail "sessions.namespace must differ from the release namespace: its policies deny session pods everything" }}
{{- end }}
{{- end }}

{{- define "browser-labs.allowedHosts" -}}
{{- prepend .Values.django.extraAllowedHosts .Values.platformHost | uniq | join "," }}
{{- end }}

{{/* The Kubernetes runner's VM OPTIONS from kubernetesRunner.vms (runners/k8s_vm.py), checked. */}}
{{- define "browser-labs.vmOptions" -}}
{{- $vms := .Values.kubernetesRunner.vms }}
{{- $claim := .Values.persistence.vmImages.sessionsClaim }}
{{- $options := dict }}
{{- range $key, $option := dict "diskSource" "vm_disk_source" "image" "vm_image" "disksRoot" "vm_disks_root" "diskImage" "vm_disk_image" "diskImageRoot" "vm_disk_image_root" "kvmResource" "kvm_resource" }}
{{- with index $vms $key }}
{{- $_ := set $options $option . }}
{{- end }}
{{- end }}
{{- if not (kindIs "invalid" $vms.kvmGroup) }}
{{- $_ := set $options "kvm_group" (int $vms.kvmGroup) }}
{{- end }}
{{- if eq $vms.diskSource "claim" }}
{{- if $vms.claim }}
{{- $_ := set $options "vm_disks_claim" $vms.claim }}
{{- else if $claim.create }}
{{- $_ := set $options "vm_disks_claim" (printf "%s-vm-images" (include "browser-labs.fullname" .)) }}
{{- else }}
{{- fail "kubernetesRunner.vms.diskSource \"claim\" needs a claim in the sessions namespace: set kubernetesRunner.vms.claim, or persistence.vmImages.sessionsClaim.create with its volumeName" }}
{{- end }}
{{- end }}
{{- if and (eq $vms.diskSource "init") (not $vms.diskImage) }}
{{- fail "kubernetesRunner.vms.diskSource \"init\" needs kubernetesRunner.vms.diskImage, the image holding the VM images" }}
{{- end }}
{{- toJson $options }}
{{- end }}

{{/* LAB_RUNNERS: values.runners plus the kubernetes alias when enabled. */}}
{{- define "browser-labs.labRunners" -}}
{{- $runners := deepCopy .Values.runners }}
{{- if .Values.kubernetesRunner.enabled }}
{{- /* The platform's own image is the judge's trusted reader (agent_image) unless the options name another. */}}
{{- $vmOptions := include "browser-labs.vmOptions" . | fromJson }}
{{- $options := merge (dict "namespace" .Values.sessions.namespace) $vmOptions (deepCopy .Values.kubernetesRunner.options) (dict "agent_image" (include "browser-labs.image" .)) }}
{{- $_ := set $runners "kubernetes" (dict "BACKEND" "runners.kubernetes.KubernetesRunner" "OPTIONS" $options) }}
{{- end }}
{{- toJson $runners }}
{{- end }}

{{/* Environment of every platform container. */}}
{{- define "browser-labs.env" -}}
{{- $secret := include "browser-labs.secretName" . -}}
- name: DJANGO_SECRET_KEY
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ .Values.secret.keys.secretKey }}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ .Values.secret.keys.databaseUrl }}}
- name: REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ .Values.secret.keys.redisUrl }}}
- name: GITHUB_CLIENT_SECRET
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ .Values.secret.keys.githubClientSecret }}, optional: true}
- name: GEMINI_API_KEY
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ .Values.secret.keys.geminiApiKey }}, optional: true}
- name: DJANGO_ALLOWED_HOSTS
  value: {{ include "browser-labs.allowedHosts" . | quote }}
- name: DJANGO_CSRF_TRUSTED_ORIGINS
  value: {{ join "," .Values.django.csrfTrustedOrigins | quote }}
- name: DJANGO_SECURE_COOKIES
  value: {{ .Values.django.secureCookies | quote }}
- name: DJANGO_SECURE_SSL_REDIRECT
  value: {{ .Values.django.sslRedirect | quote }}
- name: DJANGO_HSTS_SECONDS
  value: {{ .Values.django.hstsSeconds | quote }}
- name: DJANGO_BEHIND_PROXY
  value: {{ .Values.django.behindProxy | quote }}
- name: LAB_PREVIEW_HOST
  value: {{ .Values.previewHost | quote }}
- name: LAB_DATA_DIR
  value: {{ .Values.persistence.data.mountPath | quote }}
- name: LAB_VM_IMAGE_DIR
  value: {{ .Values.persistence.vmImages.mountPath | quote }}
- name: LAB_STATIC_ROOT
  value: {{ default "/var/lib/labs-static" .Values.staticRoot | quote }}
- name: LAB_RUNNERS
  value: {{ include "browser-labs.labRunners" . | quote }}
{{- with (.Values.defaultRunner | default (ternary "kubernetes" "" .Values.kubernetesRunner.enabled)) }}
- name: LAB_DEFAULT_RUNNER
  value: {{ . | quote }}
{{- end }}
{{- /* Libraries that cache under $HOME write to the /tmp emptyDir; the root filesystem is read-only. */}}
- name: HOME
  value: /tmp
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
- name: PYTHONUNBUFFERED
  value: "1"
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}

{{- define "browser-labs.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "browser-labs.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Volumes of web, worker and housekeeping pods: /tmp, data and VM images (static files for web). */}}
{{- define "browser-labs.volumes" -}}
- name: tmp
  emptyDir: {}
- name: data
{{- if .Values.persistence.data.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-data" (include "browser-labs.fullname" .)) .Values.persistence.data.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
- name: vm-images
{{- if .Values.persistence.vmImages.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-vm-images" (include "browser-labs.fullname" .)) .Values.persistence.vmImages.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end }}

{{- define "browser-labs.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: {{ .Values.persistence.data.mountPath }}
- name: vm-images
  mountPath: {{ .Values.persistence.vmImages.mountPath }}
{{- end }}

{{/* Rolls the pods when the chart's Secret or the settings change. */}}
{{- define "browser-labs.configChecksum" -}}
{{- $settings := dict "secret" .Values.secret "database" .Values.database "redis" .Values.redis "env" .Values.env "runners" (include "browser-labs.labRunners" .) -}}
{{- toJson $settings | sha256sum }}
{{- end }}

{{/* The pod spec of the worker and housekeeping pods: one container running a manage.py command.
     include "browser-labs.commandPodSpec" (dict "root" $ "name" "worker" "command" (list ...)
       "resources" ... "placement" ... "restartPolicy" "Always" "grace" 30) */}}
{{- define "browser-labs.commandPodSpec" -}}
{{- $root := .root -}}
serviceAccountName: {{ include "browser-labs.serviceAccountName" $root }}
automountServiceAccountToken: {{ $root.Values.kubernetesRunner.enabled }}
enableServiceLinks: false
restartPolicy: {{ .restartPolicy }}
terminationGracePeriodSeconds: {{ .grace }}
securityContext:
  {{- include "browser-labs.podSecurityContext" $root | nindent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: {{ .name }}
    image: {{ include "browser-labs.image" $root }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    # args, not command: the image's entrypoint (tini) stays PID 1, forwards SIGTERM and reaps.
    args: {{ toJson .command }}
    env:
      {{- include "browser-labs.env" $root | nindent 6 }}
    securityContext:
      {{- include "browser-labs.containerSecurityContext" $root | nindent 6 }}
    resources:
      {{- toYaml .resources | nindent 6 }}
    volumeMounts:
      {{- include "browser-labs.volumeMounts" $root | nindent 6 }}
volumes:
  {{- include "browser-labs.volumes" $root | nindent 2 }}
{{- with .placement.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .placement.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .placement.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
