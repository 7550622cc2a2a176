{{/*
The release's base name: the release name when it already says "meshkit", else
"<release>-meshkit". Every object and DNS name derives from it, so two releases can share a
namespace. `helm template meshkit .` gives the kustomize base's names.
*/}}
{{- define "meshkit.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "meshkit.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: meshkit
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* The selector of every node pod (voters and members). */}}
{{- define "meshkit.nodeSelector" -}}
app.kubernetes.io/name: meshkit
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The selector of the probe agent's pod. */}}
{{- define "meshkit.probeSelector" -}}
app.kubernetes.io/name: meshkit-probe
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
One node.toml for every pod of a StatefulSet: meshkitd --id-from-hostname fills {id} (the
pod's ordinal plus the StatefulSet's offset) and {hostname} (the pod's name). Called with
(dict "root" $ "voter" true|false).
*/}}
{{- define "meshkit.nodeToml" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $name := include "meshkit.fullname" $root -}}
{{- if gt (int $v.voters.seeds) (int $v.voters.count) -}}
{{- fail (printf "voters.seeds (%d) is more than voters.count (%d): every seed must be a voter" (int $v.voters.seeds) (int $v.voters.count)) -}}
{{- end -}}
{{- $seeds := list -}}
{{- range $i := until (int $v.voters.seeds) -}}
{{- $seeds = append $seeds (printf "\"%d@%s-voter-%d.%s:%d\"" (add1 $i) $name $i $name (int $v.ports.gossip)) -}}
{{- end -}}
{{- $voters := list -}}
{{- range $i := until (int $v.voters.count) -}}
{{- $voters = append $voters (add1 $i) -}}
{{- end -}}
{{- $campaign := list -}}
{{- range $v.campaign -}}
{{- $campaign = append $campaign (quote .) -}}
{{- end -}}
{{- $shards := list -}}
{{- range $ns, $count := $v.shards.namespaces -}}
{{- $shards = append $shards (printf "%s = %d" $ns (int $count)) -}}
{{- end -}}
id = {id}
listen = "0.0.0.0:{{ $v.ports.gossip }}"
advertise = "{hostname}.{{ $name }}:{{ $v.ports.gossip }}"
seeds = [{{ join ", " $seeds }}]
control = "0.0.0.0:{{ $v.ports.control }}"

[tls]
cert = "/etc/meshkit/certs/node-{id}.pem"
key = "/etc/meshkit/certs/node-{id}.key"
ca = "/etc/meshkit/certs/ca.pem"

[access]
token_key = "/etc/meshkit/certs/token-signing.pub"

[metadata]
cluster = {{ $v.cluster | quote }}

[leadership]
voters = [{{ join ", " $voters }}]
campaign = [{{ join ", " $campaign }}]
{{- if .voter }}
data_dir = "/var/lib/meshkit/raft"
{{- end }}
{{- if $shards }}

[shards]
namespaces = { {{ join ", " $shards }} }
{{- end }}
{{- end -}}

{{/*
A text block (a config file, the rules) on new lines indented by `indent` spaces, without the
spaces nindent would leave on its blank lines (yamllint refuses trailing spaces). Called with
(dict "text" TEXT "indent" N).
*/}}
{{- define "meshkit.block" -}}
{{- regexReplaceAll "(?m)[ \t]+$" (nindent (int .indent) .text) "" -}}
{{- end -}}
