{{/* Names and labels. */}}
{{- define "psi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "psi.fullname" -}}
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

{{- define "psi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "psi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "psi.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "psi.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: admission-webhook
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "psi.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "psi.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "psi.policyConfigMapName" -}}
{{- default (printf "%s-policy" (include "psi.fullname" .)) .Values.policy.configMapName }}
{{- end }}

{{- define "psi.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Service the API server calls, and the DNS names its certificate must carry. */}}
{{- define "psi.serviceName" -}}
{{- include "psi.fullname" . }}
{{- end }}

{{- define "psi.serviceDNSNames" -}}
{{- $svc := include "psi.serviceName" . -}}
{{- list (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.%s" $svc .Release.Namespace .Values.clusterDomain) | toJson }}
{{- end }}

{{- define "psi.tlsSecretName" -}}
{{- if eq .Values.tls.mode "existingSecret" }}
{{- required "tls.existingSecret.name is required when tls.mode is existingSecret" .Values.tls.existingSecret.name }}
{{- else }}
{{- default (printf "%s-tls" (include "psi.fullname" .)) .Values.tls.secretName }}
{{- end }}
{{- end }}

{{/*
Secret names the policy uses, as a JSON list: from the rendered policy, or from
policy.secretNames for an existing ConfigMap. RBAC resourceNames are built from this, and
an empty resourceNames would mean "every Secret": a rendered policy without rules gives an
empty list, for which the templates grant no Secret access at all; an existing ConfigMap
without secretNames is refused.
*/}}
{{- define "psi.policySecretNames" -}}
{{- $names := list }}
{{- if .Values.policy.create }}
{{- range .Values.policy.spec.rules }}
{{- $names = append $names (required "every policy rule needs a secret" .secret) }}
{{- end }}
{{- range .Values.policy.spec.tokenSources }}
{{- $names = append $names (required "every token source needs a secret" .secret) }}
{{- end }}
{{- else }}
{{- $names = .Values.policy.secretNames }}
{{- end }}
{{- $names = $names | uniq | sortAlpha }}
{{- if and (not $names) (not .Values.policy.create) }}
{{- fail "no Secret names: the policy needs at least one rule (policy.spec.rules), or policy.secretNames when policy.create is false; RBAC grants Secret access only by name" }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/* A duration (500ms, 2s, 1m) in milliseconds. */}}
{{- define "psi.durationMs" -}}
{{- $d := toString . }}
{{- if regexMatch "^[0-9]+ms$" $d }}
{{- trimSuffix "ms" $d | atoi }}
{{- else if regexMatch "^[0-9]+s$" $d }}
{{- mul (trimSuffix "s" $d | atoi) 1000 }}
{{- else if regexMatch "^[0-9]+m$" $d }}
{{- mul (trimSuffix "m" $d | atoi) 60000 }}
{{- else }}
{{- fail (printf "%q is not a duration like 500ms, 2s or 1m" $d) }}
{{- end }}
{{- end }}

{{/* Checks across values that the schema cannot express. */}}
{{- define "psi.validate" -}}
{{- $copyMs := include "psi.durationMs" .Values.server.copyDeadline | atoi }}
{{- $timeoutMs := mul .Values.webhook.timeoutSeconds 1000 }}
{{- if ge $copyMs $timeoutMs }}
{{- fail (printf "server.copyDeadline (%s) must be shorter than webhook.timeoutSeconds (%ds): the API server gives up on the webhook after timeoutSeconds" .Values.server.copyDeadline (int .Values.webhook.timeoutSeconds)) }}
{{- end }}
{{- $graceMs := include "psi.durationMs" .Values.server.shutdownGrace | atoi }}
{{- $needMs := add $graceMs (mul .Values.preStopSleepSeconds 1000) }}
{{- if le (mul .Values.terminationGracePeriodSeconds 1000) $needMs }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds (%d) + server.shutdownGrace (%s)" (int .Values.terminationGracePeriodSeconds) (int .Values.preStopSleepSeconds) .Values.server.shutdownGrace) }}
{{- end }}
{{- if and (eq .Values.tls.mode "existingSecret") (not .Values.tls.existingSecret.caBundle) }}
{{- fail "tls.existingSecret.caBundle (PEM of the CA) is required when tls.mode is existingSecret" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: set only one of minAvailable and maxUnavailable (set the other to null)" }}
{{- end }}
{{- end }}

{{/*
The chart-generated CA and serving certificate (tls.mode generate), computed once per
render and shared by the Secret and the webhook's caBundle. An existing Secret of the
release is reused (lookup), so upgrades keep the certificate; `helm template` and
--dry-run=client cannot look up and always generate.
*/}}
{{- define "psi.generatedTLS" -}}
{{- $cache := .Values.__psiGeneratedTLS | default dict }}
{{- if not $cache.crt }}
{{- $secretName := include "psi.tlsSecretName" . }}
{{- $dnsNames := include "psi.serviceDNSNames" . | fromJsonArray }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $secretName }}
{{- $reuse := false }}
{{- if and $existing $existing.data }}
{{- if and (index $existing.data "tls.crt") (index $existing.data "tls.key") (index $existing.data "ca.crt") }}
{{- $reuse = true }}
{{- end }}
{{- end }}
{{- if $reuse }}
{{- $_ := set $cache "crt" (index $existing.data "tls.crt") }}
{{- $_ := set $cache "key" (index $existing.data "tls.key") }}
{{- $_ := set $cache "ca" (index $existing.data "ca.crt") }}
{{- else }}
{{- $ca := genCA (printf "%s-ca" (include "psi.fullname" .)) (int .Values.tls.generate.caDays) }}
{{- $cert := genSignedCert (first $dnsNames) nil $dnsNames (int .Values.tls.generate.certDays) $ca }}
{{- $_ := set $cache "crt" ($cert.Cert | b64enc) }}
{{- $_ := set $cache "key" ($cert.Key | b64enc) }}
{{- $_ := set $cache "ca" ($ca.Cert | b64enc) }}
{{- end }}
{{- $_ := set .Values "__psiGeneratedTLS" $cache }}
{{- end }}
{{- toJson $cache }}
{{- end }}

{{/* caBundle (base64 PEM) for the webhook configuration; empty with cert-manager (injected). */}}
{{- define "psi.caBundle" -}}
{{- if eq .Values.tls.mode "generate" }}
{{- (include "psi.generatedTLS" . | fromJson).ca }}
{{- else if eq .Values.tls.mode "existingSecret" }}
{{- .Values.tls.existingSecret.caBundle | b64enc }}
{{- end }}
{{- end }}

{{/*
ServiceAccount annotations: the user's, plus what each cloud's workload identity reads
(docs/tokens.md): IRSA's role ARN, GKE Workload Identity's Google service account, Azure
Workload Identity's client (and tenant) id. EKS Pod Identity needs none: it is an association
made on the cluster side.
*/}}
{{- define "psi.serviceAccountAnnotations" -}}
{{- $a := deepCopy (.Values.serviceAccount.annotations | default dict) }}
{{- with .Values.cloudIdentity.aws.roleArn }}
{{- $_ := set $a "eks.amazonaws.com/role-arn" . }}
{{- end }}
{{- with .Values.cloudIdentity.gcp.serviceAccount }}
{{- $_ := set $a "iam.gke.io/gcp-service-account" . }}
{{- end }}
{{- with .Values.cloudIdentity.azure.clientId }}
{{- $_ := set $a "azure.workload.identity/client-id" . }}
{{- end }}
{{- with .Values.cloudIdentity.azure.tenantId }}
{{- $_ := set $a "azure.workload.identity/tenant-id" . }}
{{- end }}
{{- if $a }}
{{- toYaml $a }}
{{- end }}
{{- end }}
