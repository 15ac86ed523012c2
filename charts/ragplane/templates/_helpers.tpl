{{/*
Names, labels and the env each service reads. A service's values block is
`index .Values <service>`; every helper that needs one takes a dict with
"root" (the chart's top context) and "name" (embedder, retriever, generator, gateway).
*/}}

{{- define "ragplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-ragplane", or the release name when it already says ragplane. */}}
{{- define "ragplane.fullname" -}}
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

{{/* The name of one service's Deployment, Service, PDB and HPA. */}}
{{- define "ragplane.componentName" -}}
{{- printf "%s-%s" (include "ragplane.fullname" .root | trunc 53 | trimSuffix "-") .name }}
{{- end }}

{{- define "ragplane.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ragplane.labels" -}}
helm.sh/chart: {{ include "ragplane.chart" . }}
{{ include "ragplane.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ragplane
{{- end }}

{{- define "ragplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ragplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one service's objects; selector labels add the component. */}}
{{- define "ragplane.componentLabels" -}}
{{ include "ragplane.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "ragplane.componentSelectorLabels" -}}
{{ include "ragplane.selectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "ragplane.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ragplane.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* [registry/]repository:tag or [registry/]repository@digest of the service's own image;
its image block overrides `image`. */}}
{{- define "ragplane.image" -}}
{{- $svc := index .root.Values .name }}
{{- $image := merge (deepCopy (default dict $svc.image)) .root.Values.image }}
{{- $repository := required (printf "%s.image.repository is required" .name) $image.repository }}
{{- with $image.registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- if $image.digest }}
{{- printf "%s@%s" $repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .root.Chart.AppVersion $image.tag | toString) }}
{{- end }}
{{- end }}

{{- define "ragplane.modelsClaimName" -}}
{{- default (printf "%s-models" (include "ragplane.fullname" .)) .Values.models.existingClaim }}
{{- end }}

{{/* Where a model folder on the models volume is mounted; fails when the volume is off. */}}
{{- define "ragplane.volumeModelPath" -}}
{{- if not .root.Values.models.enabled }}
{{- fail (printf "%s: a model with source \"volume\" needs models.enabled=true" .what) }}
{{- end }}
{{- if not .path }}
{{- fail (printf "%s: source \"volume\" needs a path (a folder on the models volume)" .what) }}
{{- end }}
{{- printf "%s/%s" (trimSuffix "/" .root.Values.models.mountPath) (trimPrefix "/" .path) }}
{{- end }}

{{- define "ragplane.requireHub" -}}
{{- if not .root.Values.allowHubDownloads }}
{{- fail (printf "%s: source \"hub\" downloads weights at run time; set allowHubDownloads=true to allow it, or mount them (source \"volume\")" .what) }}
{{- end }}
{{- end }}

{{/* A name: value map of RAGPLANE_* settings as EnvVars; anything else, and any
variable the chart already sets (`managed`, the env rendered so far), is refused. */}}
{{- define "ragplane.configEnv" -}}
{{- range $key, $value := .config }}
{{- if not (hasPrefix "RAGPLANE_" $key) }}
{{- fail (printf "%s.config.%s: only RAGPLANE_* settings belong here (use extraEnv)" $.name $key) }}
{{- end }}
{{- if regexMatch (printf "(?m)^- name: %s$" $key) $.managed }}
{{- fail (printf "%s.config.%s: the chart sets this variable itself; use the chart's value for it" $.name $key) }}
{{- end }}
{{- /* YAML numbers arrive as floats: 17179869184 must not become 1.7179869184e+10. */}}
{{- if and (kindIs "float64" $value) (eq (float64 (int64 $value)) $value) }}
{{- $value = int64 $value }}
{{- end }}
- name: {{ $key }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Env every service gets: listen addresses, state dir, telemetry, offline caches. */}}
{{- define "ragplane.commonEnv" -}}
{{- $root := .root }}
{{- $svc := index $root.Values .name }}
{{- $upper := upper .name }}
- name: RAGPLANE_{{ $upper }}_ADDR
  value: {{ printf "%s:%v" $root.Values.listenHost $svc.port | quote }}
- name: RAGPLANE_{{ $upper }}_METRICS_ADDR
  value: {{ printf "%s:%v" $root.Values.listenHost $svc.metricsPort | quote }}
- name: RAGPLANE_STATE_DIR
  value: {{ $root.Values.stateDir | quote }}
- name: RAGPLANE_LOG_LEVEL
  value: {{ $root.Values.logLevel | quote }}
- name: RAGPLANE_SHUTDOWN_GRACE_SECONDS
  value: {{ $svc.shutdownGraceSeconds | quote }}
{{- if $root.Values.maxMessageBytes }}
- name: RAGPLANE_MAX_MESSAGE_BYTES
  value: {{ $root.Values.maxMessageBytes | int64 | quote }}
{{- end }}
- name: RAGPLANE_GRPC_MAX_CONNECTION_AGE_SECONDS
  value: {{ $root.Values.grpc.maxConnectionAgeSeconds | quote }}
- name: RAGPLANE_GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS
  value: {{ $root.Values.grpc.maxConnectionAgeGraceSeconds | quote }}
{{- with $root.Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- /* The root filesystem is read-only: every cache goes under the state emptyDir. */}}
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: {{ printf "%s/cache/xdg" $root.Values.stateDir | quote }}
- name: HF_HOME
  value: {{ printf "%s/cache/huggingface" $root.Values.stateDir | quote }}
{{- if not $root.Values.allowHubDownloads }}
- name: HF_HUB_OFFLINE
  value: "1"
{{- end }}
{{- if include "ragplane.publicTls" . }}
- name: RAGPLANE_GATEWAY_TLS_CERT
  value: /etc/ragplane/tls/public/tls.crt
- name: RAGPLANE_GATEWAY_TLS_KEY
  value: /etc/ragplane/tls/public/tls.key
{{- with $root.Values.tls.gateway.clientCAKey }}
- name: RAGPLANE_GATEWAY_TLS_CLIENT_CA
  value: {{ printf "/etc/ragplane/tls/public/%s" . | quote }}
{{- end }}
{{- end }}
{{- if $root.Values.tls.internal.secretName }}
- name: RAGPLANE_TLS_CERT
  value: /etc/ragplane/tls/internal/tls.crt
- name: RAGPLANE_TLS_KEY
  value: /etc/ragplane/tls/internal/tls.key
- name: RAGPLANE_TLS_CA
  value: /etc/ragplane/tls/internal/ca.crt
- name: RAGPLANE_TLS_SERVER_NAME
  value: {{ $root.Values.tls.internal.serverName | quote }}
{{- end }}
{{- if include "ragplane.grpcTls" . }}
- name: RAGPLANE_HEALTH_ADDR
  value: {{ printf "%s:%v" $root.Values.listenHost $root.Values.tls.healthPort | quote }}
{{- end }}
{{- end }}

{{- /*
"true" when the service (dict "root" $ "name" <service>) is the gateway with a public TLS
Secret; "" otherwise.
*/}}
{{- define "ragplane.publicTls" -}}
{{- if and (eq .name "gateway") .root.Values.tls.gateway.secretName }}true{{ end }}
{{- end }}

{{- /*
"true" when the service's gRPC port is TLS: the gateway's with its public Secret, the
others' with the internal one (the gateway's public port never takes internal mTLS).
*/}}
{{- define "ragplane.grpcTls" -}}
{{- if or (include "ragplane.publicTls" .) (and (ne .name "gateway") .root.Values.tls.internal.secretName) }}true{{ end }}
{{- end }}

{{- define "ragplane.embedder.env" -}}
{{- $m := .Values.embedder.model }}
{{- $source := $m.source }}
{{- if eq $m.source "volume" }}
{{- $source = include "ragplane.volumeModelPath" (dict "root" . "path" $m.path "what" "embedder.model") }}
{{- else if eq $m.source "hub" }}
{{- include "ragplane.requireHub" (dict "root" . "what" "embedder.model") }}
{{- else if ne $m.source "package" }}
{{- fail (printf "embedder.model.source=%q: use package, volume or hub" $m.source) }}
{{- end }}
- name: RAGPLANE_EMBEDDER_MODEL_SOURCE
  value: {{ $source | quote }}
- name: RAGPLANE_EMBEDDER_MODEL_ID
  value: {{ required "embedder.model.id is required" $m.id | quote }}
- name: RAGPLANE_EMBEDDER_MODEL_REVISION
  value: {{ required "embedder.model.revision is required" $m.revision | quote }}
- name: RAGPLANE_EMBEDDER_WEIGHTS_SHA256
  value: {{ required "embedder.model.weightsSha256 pins the weights and is required" $m.weightsSha256 | quote }}
{{- end }}

{{- define "ragplane.retriever.env" -}}
- name: RAGPLANE_MILVUS_URI
  value: {{ required "milvus.uri: the Milvus proxy, e.g. http://milvus:19530" .Values.milvus.uri | quote }}
{{- with .Values.milvus.tokenSecret.name }}
- name: RAGPLANE_MILVUS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.milvus.tokenSecret.key }}
{{- end }}
{{- $r := .Values.retriever.reranker }}
- name: RAGPLANE_RERANKER
  value: {{ $r.backend | quote }}
{{- if ne $r.backend "none" }}
{{- $source := $r.model.source }}
{{- if eq $source "volume" }}
{{- $source = include "ragplane.volumeModelPath" (dict "root" . "path" $r.model.path "what" "retriever.reranker.model") }}
{{- else if eq $source "hub" }}
{{- include "ragplane.requireHub" (dict "root" . "what" "retriever.reranker.model") }}
{{- end }}
{{- with $source }}
- name: RAGPLANE_RERANKER_MODEL_SOURCE
  value: {{ . | quote }}
{{- end }}
{{- with $r.model.id }}
- name: RAGPLANE_RERANKER_MODEL_ID
  value: {{ . | quote }}
{{- end }}
{{- with $r.model.revision }}
- name: RAGPLANE_RERANKER_MODEL_REVISION
  value: {{ . | quote }}
{{- end }}
{{- with $r.model.weightsSha256 }}
- name: RAGPLANE_RERANKER_WEIGHTS_SHA256
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ragplane.generator.env" -}}
{{- $g := .Values.generator }}
- name: RAGPLANE_GENERATOR_BACKEND
  value: {{ $g.backend | quote }}
{{- if eq $g.backend "vllm" }}
{{- with $g.model.name }}
{{- if not (has . (list "smollm2-135m" "qwen2.5-coder-0.5b" "qwen2.5-coder-1.5b")) }}
{{- fail (printf "generator.model.name: %q is not in the catalogue (smollm2-135m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b)" .) }}
{{- end }}
- name: RAGPLANE_GENERATOR_MODEL
  value: {{ . | quote }}
{{- end }}
{{- with $g.model.path }}
- name: RAGPLANE_GENERATOR_MODEL_PATH
  value: {{ include "ragplane.volumeModelPath" (dict "root" $ "path" . "what" "generator.model") | quote }}
{{- end }}
{{- else if eq $g.backend "openai" }}
{{- if gt (int $g.gpu.count) 0 }}
{{- fail "generator.gpu.count: the openai backend runs no model in the pod; give the GPUs to the vLLM server" }}
{{- end }}
- name: RAGPLANE_GENERATOR_OPENAI_URL
  value: {{ required "generator.openai.url: the vLLM OpenAI-compatible server, e.g. http://vllm-router:80" $g.openai.url | quote }}
{{- with $g.openai.model }}
- name: RAGPLANE_GENERATOR_OPENAI_MODEL
  value: {{ . | quote }}
{{- end }}
{{- with $g.openai.apiKeySecret.name }}
- name: RAGPLANE_GENERATOR_OPENAI_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $g.openai.apiKeySecret.key }}
{{- end }}
{{- else }}
{{- fail (printf "generator.backend=%q: use vllm or openai" $g.backend) }}
{{- end }}
{{- with $g.model.id }}
- name: RAGPLANE_GENERATOR_MODEL_ID
  value: {{ . | quote }}
{{- end }}
{{- with $g.model.revision }}
- name: RAGPLANE_GENERATOR_MODEL_REVISION
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* The gateway reaches each service through that service's ClusterIP Service. */}}
{{- define "ragplane.gateway.env" -}}
- name: RAGPLANE_GATEWAY_HTTP_ADDR
  value: {{ printf "0.0.0.0:%v" .Values.gateway.httpPort | quote }}
{{- if .Values.gateway.auth.disabled }}
- name: RAGPLANE_GATEWAY_AUTH
  value: disabled
{{- else }}
- name: RAGPLANE_GATEWAY_API_KEYS_FILE
  value: {{ printf "/etc/ragplane/keys/%s" .Values.gateway.auth.secretKey | quote }}
{{- end }}
{{- with .Values.gateway.jobs.dsnSecret.name }}
- name: RAGPLANE_GATEWAY_JOBS_DSN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.gateway.jobs.dsnSecret.key }}
{{- end }}
{{- /* Rate and stream counters are per replica: the release-wide figures, divided. */}}
{{- $q := .Values.gateway.quotas }}
{{- $replicas := max 1 (int (ternary .Values.gateway.autoscaling.minReplicas .Values.gateway.replicas .Values.gateway.autoscaling.enabled)) }}
- name: RAGPLANE_GATEWAY_KEY_REQUESTS_PER_SECOND
  value: {{ divf $q.keyRequestsPerSecond $replicas | quote }}
- name: RAGPLANE_GATEWAY_KEY_BURST
  value: {{ max 1 (div (int $q.keyBurst) $replicas) | quote }}
- name: RAGPLANE_GATEWAY_KEY_MAX_STREAMS
  value: {{ ternary 0 (max 1 (div (int $q.keyMaxStreams) $replicas)) (eq (int $q.keyMaxStreams) 0) | quote }}
- name: RAGPLANE_GATEWAY_TENANT_MAX_CHUNKS
  value: {{ int $q.tenantMaxChunks | quote }}
{{- range $name := list "embedder" "retriever" "generator" }}
- name: RAGPLANE_GATEWAY_{{ upper $name }}_TARGET
  value: {{ printf "%s:%v" (include "ragplane.componentName" (dict "root" $ "name" $name)) (index $.Values $name).port | quote }}
{{- end }}
{{- end }}

{{/* The Secret holding the gateway's API keys file. */}}
{{- define "ragplane.apiKeysSecret" -}}
{{- .Values.gateway.auth.secretName | default (printf "%s-api-keys" (include "ragplane.fullname" .)) }}
{{- end }}
