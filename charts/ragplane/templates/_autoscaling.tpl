{{/*
Autoscaling on queue depth. Each service's queue metric, as the services export it
(services/<service>/metrics.py, src/ragplane/telemetry.py) and Prometheus scrapes it under the
job ragplane-<service>:
  embedder   ragplane_embedder_queue_texts              texts waiting in the batcher
  retriever  rate(ragplane_rpc_server_duration_seconds_sum)  calls in progress (no queue
             of its own: busy seconds per second is the mean number of calls being served)
  generator  ragplane_generator_queued_requests         generations waiting in vLLM's
             scheduler (what vllm:num_requests_waiting counts)
  gateway    ragplane_gateway_asks_in_flight + ragplane_gateway_asks_queued
Mode "keda" queries the sum over the release's pods and KEDA divides it by queueTarget;
mode "queue" asks prometheus-adapter for the same series per pod (Pods metrics, averaged
by the HPA; docs/deploy.md has the adapter rules that serve them).
Called with dict "root" $ "name" <service>.
*/}}

{{- define "ragplane.autoscalingMode" -}}
{{- $mode := (index .root.Values .name).autoscaling.mode | default "cpu" }}
{{- if not (has $mode (list "cpu" "queue" "keda")) }}
{{- fail (printf "%s.autoscaling.mode=%q: use cpu, queue or keda" .name $mode) }}
{{- end }}
{{- $mode }}
{{- end }}

{{/* The PromQL KEDA's trigger runs: the service's whole queue in this namespace. */}}
{{- define "ragplane.queueQuery" -}}
{{- $selector := printf "namespace=%q,job=%q" .root.Release.Namespace (printf "ragplane-%s" .name) }}
{{- if eq .name "embedder" }}
{{- printf "sum(ragplane_embedder_queue_texts{%s})" $selector }}
{{- else if eq .name "retriever" }}
{{- printf "sum(rate(ragplane_rpc_server_duration_seconds_sum{%s,service=\"retriever\"}[2m]))" $selector }}
{{- else if eq .name "generator" }}
{{- printf "sum(ragplane_generator_queued_requests{%s})" $selector }}
{{- else }}
{{- printf "sum(ragplane_gateway_asks_in_flight{%s}) + sum(ragplane_gateway_asks_queued{%s})" $selector $selector }}
{{- end }}
{{- end }}

{{/* The HPA's Pods metrics, by the names prometheus-adapter serves them under. */}}
{{- define "ragplane.queuePodsMetrics" -}}
{{- $target := (index .root.Values .name).autoscaling.queueTarget | toString }}
{{- $names := dict
  "embedder" (list "ragplane_embedder_queue_texts")
  "retriever" (list "ragplane_retriever_calls_in_progress")
  "generator" (list "ragplane_generator_queued_requests")
  "gateway" (list "ragplane_gateway_asks_in_flight" "ragplane_gateway_asks_queued") }}
{{- range $metric := index $names .name }}
- type: Pods
  pods:
    metric:
      name: {{ $metric }}
    target:
      type: AverageValue
      averageValue: {{ $target | quote }}
{{- end }}
{{- end }}
