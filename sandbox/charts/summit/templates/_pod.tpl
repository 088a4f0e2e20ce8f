{{/* The pod template the Deployment and the Rollout share. */}}
{{- define "summit.pod" -}}
metadata:
  labels:
    app: summit
    app.kubernetes.io/instance: {{ .Release.Name }}
  {{- with .Values.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  terminationGracePeriodSeconds: 5
  containers:
    - name: summit-server
      image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
      ports: [{containerPort: 8080}]
      {{- if or .Values.env .Values.secretEnv }}
      env:
        {{- range $name, $value := .Values.env }}
        - {name: {{ $name }}, value: {{ $value | quote }}}
        {{- end }}
        {{- range $name, $ref := .Values.secretEnv }}
        - name: {{ $name }}
          valueFrom: {secretKeyRef: {name: {{ $ref.secret }}, key: {{ $ref.key }}}}
        {{- end }}
      {{- end }}
      lifecycle:
        preStop: {sleep: {seconds: 1}}   # serve on while the pod leaves the Services' endpoints
      readinessProbe:
        httpGet: {path: /health, port: 8080}
        periodSeconds: 1
        failureThreshold: 1
{{- end }}
