{{/* The chart name, or nameOverride. */}}
{{- define "msf-cmk-controller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name prefix: fullnameOverride, else the release name (plus the name unless the
release name contains it). */}}
{{- define "msf-cmk-controller.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "msf-cmk-controller.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "msf-cmk-controller.labels" -}}
app.kubernetes.io/name: {{ include "msf-cmk-controller.name" . }}
app.kubernetes.io/part-of: {{ include "msf-cmk-controller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Stable across upgrades: a Deployment's selector cannot change. */}}
{{- define "msf-cmk-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "msf-cmk-controller.name" . }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "msf-cmk-controller.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "msf-cmk-controller.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false (the existing ServiceAccount to run as)" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The IAM role the controller runs as; required unless identity is none and an operator role
is given. */}}
{{- define "msf-cmk-controller.roleArn" -}}
{{- $msg := "aws.roleArn is required: the IAM role the controller runs as, e.g. --set aws.roleArn=arn:aws:iam::ACCOUNT:role/msf-cmk-controller (create it first: docs/install-eks.md)" -}}
{{- if eq .Values.aws.identity "none" -}}
{{- .Values.aws.roleArn -}}
{{- else -}}
{{- required $msg .Values.aws.roleArn -}}
{{- end -}}
{{- end -}}

{{/* MSF_CMK_OPERATOR_ROLE_ARN: controller.operatorRoleArn, else aws.roleArn. */}}
{{- define "msf-cmk-controller.operatorRoleArn" -}}
{{- $msg := "aws.roleArn (or controller.operatorRoleArn) is required: the IAM role that calls UpdateApplication and that key policies name (docs/install-eks.md)" -}}
{{- required $msg (default (include "msf-cmk-controller.roleArn" .) .Values.controller.operatorRoleArn) -}}
{{- end -}}

{{/* ServiceAccount annotations: the user's, plus the IRSA one when aws.identity is irsa. */}}
{{- define "msf-cmk-controller.serviceAccountAnnotations" -}}
{{- $annotations := deepCopy (default (dict) .Values.serviceAccount.annotations) -}}
{{- if hasKey $annotations "eks.amazonaws.com/role-arn" -}}
{{- fail "serviceAccount.annotations must not set eks.amazonaws.com/role-arn: set aws.identity=irsa and aws.roleArn instead (with Pod Identity the annotation would override the association)" -}}
{{- end -}}
{{- if eq .Values.aws.identity "irsa" -}}
{{- $_ := set $annotations "eks.amazonaws.com/role-arn" (include "msf-cmk-controller.roleArn" .) -}}
{{- end -}}
{{- if $annotations -}}
{{- toYaml $annotations -}}
{{- end -}}
{{- end -}}

{{/*
The ConfigMap holding the accounts file: the chart's own when accounts.config is set, else
accounts.existingConfigMap; empty when there is none.
*/}}
{{- define "msf-cmk-controller.accountsConfigMap" -}}
{{- if and .Values.accounts.config .Values.accounts.existingConfigMap -}}
{{- fail "set accounts.config or accounts.existingConfigMap, not both" -}}
{{- else if .Values.accounts.config -}}
{{ include "msf-cmk-controller.fullname" . }}-accounts
{{- else -}}
{{ .Values.accounts.existingConfigMap }}
{{- end -}}
{{- end }}

{{/* A map of AWS operation (or msf / kms) -> requests per second as the flags read it:
OPERATION=N,OPERATION=N (keys sorted). */}}
{{- define "msf-cmk-controller.rates" -}}
{{- $pairs := list -}}
{{- range $op, $n := . -}}
{{- $pairs = append $pairs (printf "%s=%v" $op $n) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
