{{/*
The release's base name, at most 30 characters: a StatefulSet's name must
leave room in 63 for its pods' controller-revision-hash label, and
"<base>-websocket-server-pods" must stay a valid Service name.
*/}}
{{- define "chat.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 30 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The name of a component's objects: (dict "root" $ "component" "ai-consumer"). */}}
{{- define "chat.name" -}}
{{- printf "%s-%s" (include "chat.fullname" .root) .component -}}
{{- end -}}

{{/*
The labels that select a component's pods. The component is the service's
name (websocket-server, ai-consumer, message-relay): the ServiceMonitor
makes it the scrape job, which the alerts select on (TargetDown).
*/}}
{{- define "chat.selectorLabels" -}}
app.kubernetes.io/name: {{ default .root.Chart.Name .root.Values.nameOverride }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "chat.labels" -}}
{{ include "chat.selectorLabels" . }}
app.kubernetes.io/part-of: chat
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "chat.secretName" -}}
{{- default (include "chat.fullname" .) .Values.secret.name -}}
{{- end -}}

{{/*
Whether an optional object is wanted: (list <value> <API group/version/kind> $).
true and false are what they say; auto means "when the cluster serves the
API", so that an install without the Prometheus Operator (or a custom
metrics adapter) neither fails nor renders what nothing would act on.
*/}}
{{- define "chat.wanted" -}}
{{- $v := toString (index . 0) -}}
{{- $api := index . 1 -}}
{{- $root := index . 2 -}}
{{- if eq $v "true" -}}
true
{{- else if eq $v "auto" -}}
{{- if $root.Capabilities.APIVersions.Has $api }}true{{ end -}}
{{- else if ne $v "false" -}}
{{- fail (printf "%q is not true, false or auto (for %s)" $v $api) -}}
{{- end -}}
{{- end -}}

{{/* KAFKA_LAG_GROUPS: every group a process of the system measures. */}}
{{- define "chat.lagGroups" -}}
{{- printf "%s=incoming_messages,%s=responses" .Values.aiConsumer.group .Values.messageRelay.group -}}
{{- end -}}

{{/*
The environment of one service's container: (dict "root" $ "component" <name>
"values" <its values> "env" <dict of the component's own variables>).
Built as a map and written sorted, so a variable appears once; a variable
the chart sets cannot be set again through env (that would hide which one
wins, or give every pod the same INSTANCE_ID).
*/}}
{{- define "chat.env" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $env := dict -}}
{{- $_ := set $env "KAFKA_BOOTSTRAP_SERVERS" (dict "value" (required "kafka.bootstrapServers: the Kafka brokers, host:port[,host:port...]" $v.kafka.bootstrapServers)) -}}
{{- $_ := set $env "KAFKA_TOPIC_PARTITIONS" (dict "value" (toString (int $v.kafka.partitions))) -}}
{{- $_ := set $env "KAFKA_REPLICATION_FACTOR" (dict "value" (toString (int $v.kafka.replicationFactor))) -}}
{{- $_ := set $env "KAFKA_LAG_GROUPS" (dict "value" (include "chat.lagGroups" $root)) -}}
{{- if $v.redis.urlFromSecret -}}
{{- if $v.redis.url -}}
{{- fail "redis.url and redis.urlFromSecret: set one (REDIS_URL comes from the Secret with urlFromSecret)" -}}
{{- end -}}
{{- $_ := set $env "REDIS_URL" (dict "valueFrom" (dict "secretKeyRef" (dict "name" (include "chat.secretName" $root) "key" "REDIS_URL"))) -}}
{{- else -}}
{{- $url := required "redis.url: the Redis URL (or redis.urlFromSecret: true and REDIS_URL in the Secret)" $v.redis.url -}}
{{- if regexMatch "^[^/]*//[^/@?]*:[^/@?]*@" $url -}}
{{- fail "redis.url carries a password: put REDIS_URL in the Secret and set redis.urlFromSecret: true instead" -}}
{{- end -}}
{{- $_ := set $env "REDIS_URL" (dict "value" $url) -}}
{{- end -}}
{{- $_ := set $env "OPS_ADDR" (dict "value" (printf ":%d" (int $v.ports.ops))) -}}
{{- $_ := set $env "SHUTDOWN_TIMEOUT" (dict "value" (printf "%ds" (int $v.shutdownTimeoutSeconds))) -}}
{{- /* One per pod, kept across container restarts: the pod's name (see consumers.yaml). */ -}}
{{- $_ := set $env "INSTANCE_ID" (dict "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.name"))) -}}
{{- range $name, $value := dict "OTEL_EXPORTER_OTLP_ENDPOINT" $v.otel.endpoint "OTEL_EXPORTER_OTLP_PROTOCOL" $v.otel.protocol "OTEL_TRACES_SAMPLER" $v.otel.sampler "OTEL_TRACES_SAMPLER_ARG" $v.otel.samplerArg -}}
{{- if $value -}}
{{- $_ := set $env $name (dict "value" (toString $value)) -}}
{{- end -}}
{{- end -}}
{{- range $name, $value := .env -}}
{{- $_ := set $env $name $value -}}
{{- end -}}
{{- $extra := merge (deepCopy (default dict .values.env)) (default dict $v.env) -}}
{{- /* GOMAXPROCS: the CPUs the pod requests, rounded up (the downward API
rounds up to the divisor), unless env sets it. Without a CPU limit Go would
run as many Ps as the node has cores, and a service that needs less than one
pays for the idle ones in thread wake-ups (docs/performance.md, "the eighth
round"). */ -}}
{{- if and (dig "requests" "cpu" "" (default dict .values.resources)) (not (hasKey $extra "GOMAXPROCS")) -}}
{{- $_ := set $env "GOMAXPROCS" (dict "valueFrom" (dict "resourceFieldRef" (dict "containerName" .component "resource" "requests.cpu" "divisor" "1"))) -}}
{{- end -}}
{{- range $name, $value := $extra -}}
{{- if hasKey $env $name -}}
{{- fail (printf "env %s: the chart sets it from its own values (see values.yaml); set those instead" $name) -}}
{{- end -}}
{{- $_ := set $env $name (dict "value" (include "chat.envValue" $value)) -}}
{{- end -}}
{{- range $name := keys $env | sortAlpha }}
- name: {{ $name }}
{{ toYaml (get $env $name) | indent 2 }}
{{- end -}}
{{- end -}}

{{/*
A value of env as the variable's text. YAML numbers reach a template as
floats, which print 1000000 as 1e+06: a whole number prints as one.
*/}}
{{- define "chat.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) -}}
{{- printf "%d" (int64 .) -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* The security context of the Go services' containers (the image's user). */}}
{{- define "chat.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
The pod spec of one Go service: (dict "root" $ "component" <name> "values"
<its values> "env" <its own variables> "ports" <list of container ports>
"volumes" <list> "mounts" <list>).
*/}}
{{- define "chat.goPodSpec" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $preStop := int (default 0 .values.preStopSleepSeconds) -}}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
# The services call no Kubernetes API, and the API's service variables
# (<SERVICE>_PORT...) of every Service in the namespace are only noise in
# an environment read by name.
automountServiceAccountToken: false
enableServiceLinks: false
terminationGracePeriodSeconds: {{ add $preStop (int $v.shutdownTimeoutSeconds) 10 }}
{{- with $v.nodeSelector }}
nodeSelector:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
{{- toYaml . | nindent 2 }}
{{- end }}
# Spread over nodes, so that losing one takes few of a component's pods.
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "chat.selectorLabels" . | nindent 8 }}
containers:
  - name: {{ .component }}
    image: {{ printf "%s:%s" $v.image.repository (required "image.tag: the tag of the image you built from the repository's Dockerfile and pushed" $v.image.tag) | quote }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    command: [{{ printf "/usr/local/bin/%s" .component | quote }}]
    env:
      {{- include "chat.env" . | trim | nindent 6 }}
    ports:
      {{- toYaml .ports | nindent 6 }}
    # Alive while the process serves its ops listener; ready while its
    # dependencies (Kafka, Redis) answer and, for a consumer, while it is
    # not fenced out of its group. The start-up probe gives a process that
    # waits for Kafka at start a minute before liveness counts.
    startupProbe:
      httpGet:
        path: /healthz
        port: ops
      periodSeconds: 2
      failureThreshold: 30
    livenessProbe:
      httpGet:
        path: /healthz
        port: ops
      periodSeconds: 10
      timeoutSeconds: 3
      failureThreshold: 3
    readinessProbe:
      httpGet:
        path: /readyz
        port: ops
      periodSeconds: 5
      # /readyz bounds its checks at 2 s.
      timeoutSeconds: 3
      failureThreshold: 2
    {{- if $preStop }}
    lifecycle:
      preStop:
        sleep:
          seconds: {{ $preStop }}
    {{- end }}
    resources:
      {{- toYaml .values.resources | nindent 6 }}
    securityContext:
      {{- include "chat.containerSecurityContext" . | nindent 6 }}
    {{- with .mounts }}
    volumeMounts:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- with .volumes }}
volumes:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A PodDisruptionBudget for a component: (dict "root" $ "component" <name> "values" <its values>). */}}
{{- define "chat.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "chat.name" . }}
  labels:
    {{- include "chat.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .values.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "chat.selectorLabels" . | nindent 6 }}
{{- end -}}
