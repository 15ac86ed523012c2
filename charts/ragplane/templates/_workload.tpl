{{/*
One service's Deployment, Service, PodDisruptionBudget and HorizontalPodAutoscaler.
Called by embedder.yaml, retriever.yaml, generator.yaml and gateway.yaml with
dict "root" $ "name" <service> "env" <the service's own env, a YAML list>.
*/}}
{{- define "ragplane.workload" -}}
{{- $root := .root }}
{{- $name := .name }}
{{- $svc := index $root.Values $name }}
{{- $fullname := include "ragplane.componentName" . }}
{{- $gpus := 0 }}
{{- if eq $name "generator" }}
{{- $gpus = int $svc.gpu.count }}
{{- end }}
{{- $models := and $root.Values.models.enabled (ne $name "gateway") }}
{{- $publicTls := include "ragplane.publicTls" . }}
{{- $internalTls := $root.Values.tls.internal.secretName }}
{{- /* The kubelet's gRPC probes cannot speak TLS: they ask the plaintext health port. */}}
{{- $probePort := $svc.port }}
{{- if include "ragplane.grpcTls" . }}
{{- $probePort = $root.Values.tls.healthPort }}
{{- end }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullname }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ragplane.componentLabels" . | nindent 4 }}
spec:
  {{- if not $svc.autoscaling.enabled }}
  replicas: {{ $svc.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "ragplane.componentSelectorLabels" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      {{- if gt $gpus 0 }}
      # A GPU node rarely has a spare GPU for a surge pod: replace one at a time.
      maxSurge: 0
      maxUnavailable: 1
      {{- else }}
      maxSurge: 25%
      maxUnavailable: 0
      {{- end }}
  template:
    metadata:
      labels:
        {{- include "ragplane.componentLabels" . | nindent 8 }}
        {{- with $svc.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $svc.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "ragplane.serviceAccountName" $root }}
      automountServiceAccountToken: false
      # Service links would put RAGPLANE_<SERVICE>_PORT=tcp://... into the environment:
      # the chart sets every address itself.
      enableServiceLinks: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $svc.runtimeClassName }}
      runtimeClassName: {{ . }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ add $svc.shutdownGraceSeconds $svc.preStopSleepSeconds 10 }}
      containers:
        - name: {{ $name }}
          image: {{ include "ragplane.image" . | quote }}
          imagePullPolicy: {{ (merge (deepCopy (default dict $svc.image)) $root.Values.image).pullPolicy }}
          command:
            - ragplane-{{ $name }}
          ports:
            - name: grpc
              containerPort: {{ $svc.port }}
              protocol: TCP
            {{- with $svc.httpPort }}
            - name: http
              containerPort: {{ . }}
              protocol: TCP
            {{- end }}
            - name: metrics
              containerPort: {{ $svc.metricsPort }}
              protocol: TCP
            {{- if include "ragplane.grpcTls" . }}
            - name: health
              containerPort: {{ $root.Values.tls.healthPort }}
              protocol: TCP
            {{- end }}
          env:
            {{- $managed := printf "%s\n%s" (include "ragplane.commonEnv" . | trim) (.env | trim) }}
            {{- $managed | nindent 12 }}
            {{- with include "ragplane.configEnv" (dict "name" $name "config" $svc.config "managed" $managed) | trim }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with $root.Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          # grpc.health.v1 on the service port (the health port when that is TLS):
          # SERVING once the model is loaded, NOT_SERVING while it drains on SIGTERM.
          startupProbe:
            grpc:
              port: {{ $probePort }}
            periodSeconds: {{ $svc.startupProbe.periodSeconds }}
            failureThreshold: {{ $svc.startupProbe.failureThreshold }}
            timeoutSeconds: 5
          readinessProbe:
            grpc:
              port: {{ $probePort }}
            periodSeconds: {{ $svc.readinessProbe.periodSeconds }}
            failureThreshold: {{ $svc.readinessProbe.failureThreshold }}
            timeoutSeconds: 5
          livenessProbe:
            grpc:
              port: {{ $probePort }}
            periodSeconds: {{ $svc.livenessProbe.periodSeconds }}
            failureThreshold: {{ $svc.livenessProbe.failureThreshold }}
            timeoutSeconds: 5
          {{- if gt (int $svc.preStopSleepSeconds) 0 }}
          lifecycle:
            preStop:
              sleep:
                seconds: {{ $svc.preStopSleepSeconds }}
          {{- end }}
          resources:
            {{- $resources := deepCopy $svc.resources }}
            {{- if gt $gpus 0 }}
            {{- $_ := set $resources "limits" (merge (dict $svc.gpu.resourceName $gpus) (default dict $resources.limits)) }}
            {{- $_ := set $resources "requests" (merge (dict $svc.gpu.resourceName $gpus) (default dict $resources.requests)) }}
            {{- end }}
            {{- toYaml $resources | nindent 12 }}
          securityContext:
            {{- toYaml (merge (deepCopy (default dict $svc.securityContext)) $root.Values.securityContext) | nindent 12 }}
          volumeMounts:
            - name: state
              mountPath: {{ $root.Values.stateDir }}
            - name: tmp
              mountPath: /tmp
            {{- if $models }}
            - name: models
              mountPath: {{ $root.Values.models.mountPath }}
              readOnly: true
            {{- end }}
            {{- if eq $name "generator" }}
            - name: shm
              mountPath: /dev/shm
            {{- end }}
            {{- if $publicTls }}
            - name: tls-public
              mountPath: /etc/ragplane/tls/public
              readOnly: true
            {{- end }}
            {{- if $internalTls }}
            - name: tls-internal
              mountPath: /etc/ragplane/tls/internal
              readOnly: true
            {{- end }}
            {{- if and (eq $name "gateway") (not $root.Values.gateway.auth.disabled) }}
            {{- /* A folder, not a subPath: a changed Secret shows through. */}}
            - name: api-keys
              mountPath: /etc/ragplane/keys
              readOnly: true
            {{- end }}
      volumes:
        - name: state
          emptyDir:
            sizeLimit: {{ $svc.stateSizeLimit }}
        - name: tmp
          emptyDir:
            sizeLimit: {{ $root.Values.tmpSizeLimit }}
        {{- if $models }}
        - name: models
          persistentVolumeClaim:
            claimName: {{ include "ragplane.modelsClaimName" $root }}
            readOnly: true
        {{- end }}
        {{- if eq $name "generator" }}
        - name: shm
          emptyDir:
            medium: Memory
            sizeLimit: {{ $svc.shmSizeLimit }}
        {{- end }}
        {{- /* Readable by the pod's group (fsGroup) only; read at start-up. */}}
        {{- if $publicTls }}
        - name: tls-public
          secret:
            secretName: {{ $root.Values.tls.gateway.secretName }}
            defaultMode: 0440
        {{- end }}
        {{- if $internalTls }}
        - name: tls-internal
          secret:
            secretName: {{ $internalTls }}
            defaultMode: 0440
        {{- end }}
        {{- if and (eq $name "gateway") (not $root.Values.gateway.auth.disabled) }}
        - name: api-keys
          secret:
            secretName: {{ include "ragplane.apiKeysSecret" $root }}
            defaultMode: 0440
        {{- end }}
      {{- with $svc.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $fullname }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ragplane.componentLabels" . | nindent 4 }}
    # The ServiceMonitor names each scrape job after this label (ragplane-<service>),
    # as the alert rules and dashboards expect.
    ragplane.io/job: ragplane-{{ $name }}
  {{- if eq $name "gateway" }}
  {{- with $svc.serviceAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- end }}
spec:
  {{- if eq $name "gateway" }}
  type: {{ $svc.serviceType }}
  {{- else }}
  # Headless: the name resolves to every ready pod, over which the gateway's channels
  # go round-robin (values: grpc).
  type: ClusterIP
  clusterIP: None
  {{- end }}
  selector:
    {{- include "ragplane.componentSelectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $svc.port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    {{- with $svc.httpPort }}
    - name: http
      port: {{ . }}
      targetPort: http
      protocol: TCP
      appProtocol: http
    {{- end }}
    - name: metrics
      port: {{ $svc.metricsPort }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
{{- if $svc.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $fullname }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ragplane.componentLabels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $svc.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "ragplane.componentSelectorLabels" . | nindent 6 }}
{{- end }}
{{- /* mode "keda": KEDA makes the HPA from the ScaledObject (scaledobjects.yaml). */}}
{{- if and $svc.autoscaling.enabled (ne (include "ragplane.autoscalingMode" .) "keda") }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $fullname }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "ragplane.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $fullname }}
  minReplicas: {{ $svc.autoscaling.minReplicas }}
  maxReplicas: {{ $svc.autoscaling.maxReplicas }}
  metrics:
    {{- if eq (include "ragplane.autoscalingMode" .) "queue" }}
    {{- include "ragplane.queuePodsMetrics" . | trim | nindent 4 }}
    {{- else if $svc.autoscaling.metrics }}
    {{- toYaml $svc.autoscaling.metrics | nindent 4 }}
    {{- else }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $svc.autoscaling.targetCPUUtilizationPercentage }}
    {{- end }}
{{- end }}
{{- end }}
