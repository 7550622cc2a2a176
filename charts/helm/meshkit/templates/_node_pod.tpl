{{/*
The pod template of a node StatefulSet. Called with
(dict "root" $ "component" "voter"|"member" "offset" N "resources" ... "raft" true|false).
*/}}
{{- define "meshkit.nodePod" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
metadata:
  labels:
    {{- include "meshkit.nodeSelector" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
  annotations:
    # A changed node.toml rolls the pods (a ConfigMap update alone does not).
    checksum/config: {{ include "meshkit.nodeToml" (dict "root" $root "voter" .raft) | sha256sum }}
spec:
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    fsGroup: 65532
  terminationGracePeriodSeconds: 30
  containers:
    - name: meshkitd
      image: {{ $v.image.meshkitd }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args: ["--config", "/etc/meshkit/config/node.toml", "--id-from-hostname={{ .offset }}", "--log-format", "json"]
      ports:
        - name: gossip
          containerPort: {{ $v.ports.gossip }}
          protocol: UDP
        - name: control
          containerPort: {{ $v.ports.control }}
          protocol: TCP
        - name: control-h3
          containerPort: {{ $v.ports.control }}
          protocol: UDP
      readinessProbe:
        httpGet:
          path: /readyz
          port: control
          scheme: HTTPS
        periodSeconds: 5
      livenessProbe:
        httpGet:
          path: /healthz
          port: control
          scheme: HTTPS
        periodSeconds: 10
        failureThreshold: 6
      resources:
        {{- toYaml .resources | nindent 8 }}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: ["ALL"]
      volumeMounts:
        - name: config
          mountPath: /etc/meshkit/config
          readOnly: true
        - name: certs
          mountPath: /etc/meshkit/certs
          readOnly: true
        {{- if .raft }}
        - name: raft
          mountPath: /var/lib/meshkit
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "meshkit.fullname" $root }}-{{ .component }}
    - name: certs
      secret:
        secretName: {{ $v.certsSecret }}
        defaultMode: 0400
{{- end -}}
