#!/usr/bin/env bash
# Smoke-check the binaries that tools/k8s/build.sh made: each prints its version, then etcd,
# kube-apiserver, kube-controller-manager and kube-scheduler start on 127.0.0.1 in a temp dir,
# the API server answers /readyz and a kubectl-free request as the admin, and all of it is
# stopped again. Prints the flags it used. Nothing listens beyond loopback.
#
#   tools/k8s/smoke.sh            (KEEP=1 leaves the temp dir, not the processes)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin() { echo "$("$here/build.sh" --print-dir "$1")/$1"; }
etcd=$(bin etcd); apiserver=$(bin kube-apiserver)
kcm=$(bin kube-controller-manager); sched=$(bin kube-scheduler)
helm=$(bin helm); rollouts=$(bin rollouts-controller)

for b in "$etcd" "$apiserver" "$kcm" "$sched" "$helm" "$rollouts"; do
  [[ -x $b ]] || { echo "missing $b: run make k8s-tools" >&2; exit 1; }
done
echo "== versions"
"$etcd" --version | sed -n 1p
"$apiserver" --version
"$kcm" --version
"$sched" --version
"$helm" version --short
echo "rollouts-controller $("$rollouts" --version)"

dir=$(mktemp -d /tmp/releasegate-k8s-smoke.XXXXXX)
pids=()
cleanup() {
  # Newest first, each waited for (at most 20 s, then SIGKILL): an API server whose etcd is
  # already gone hangs in its shutdown on etcd timeouts.
  local i p t
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    p=${pids[i]}
    kill "$p" 2>/dev/null || continue
    for ((t = 0; t < 200; t++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  [[ -n ${KEEP:-} ]] && echo "kept $dir" || rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
etcd_client=$(free_port); etcd_peer=$(free_port); api=$(free_port); kcm_port=$(free_port); sched_port=$(free_port)

# A CA, the API server's serving cert (127.0.0.1, localhost), an admin client cert
# (O=system:masters) and the service-account key pair.
cd "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=releasegate-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >san.ext
openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out apiserver.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=admin" 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' >client.ext
openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out admin.crt 2>/dev/null
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
cat >kubeconfig <<EOF
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:$api", certificate-authority: $dir/ca.crt}}]
users: [{name: admin, user: {client-certificate: $dir/admin.crt, client-key: $dir/admin.key}}]
contexts: [{name: local, context: {cluster: local, user: admin}}]
current-context: local
EOF

etcd_flags=(--name default --data-dir "$dir/etcd"
  --listen-client-urls "http://127.0.0.1:$etcd_client" --advertise-client-urls "http://127.0.0.1:$etcd_client"
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer"
  --initial-cluster "default=http://127.0.0.1:$etcd_peer" --log-level warn)
api_flags=(--etcd-servers "http://127.0.0.1:$etcd_client"
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api" --cert-dir "$dir"
  --tls-cert-file "$dir/apiserver.crt" --tls-private-key-file "$dir/apiserver.key"
  --client-ca-file "$dir/ca.crt"
  --service-account-issuer https://kubernetes.default.svc.cluster.local
  --service-account-key-file "$dir/sa.pub" --service-account-signing-key-file "$dir/sa.key"
  --service-cluster-ip-range 10.96.0.0/24 --endpoint-reconciler-type none
  --authorization-mode RBAC --v 1)
kcm_flags=(--kubeconfig "$dir/kubeconfig" --authentication-kubeconfig "$dir/kubeconfig"
  --authorization-kubeconfig "$dir/kubeconfig"
  --bind-address 127.0.0.1 --secure-port "$kcm_port" --leader-elect=false
  --service-account-private-key-file "$dir/sa.key" --root-ca-file "$dir/ca.crt"
  --use-service-account-credentials --controllers '*' --v 1)
sched_flags=(--kubeconfig "$dir/kubeconfig" --authentication-kubeconfig "$dir/kubeconfig"
  --authorization-kubeconfig "$dir/kubeconfig"
  --bind-address 127.0.0.1 --secure-port "$sched_port" --leader-elect=false --v 1)

wait_for() { # what command...
  local what=$1 i; shift
  for ((i = 0; i < 600; i++)); do
    if "$@" >/dev/null 2>&1; then echo "$what ready after $((i / 10)).$((i % 10)) s"; return 0; fi
    sleep 0.1
  done
  echo "$what did not become ready" >&2; return 1
}
curl_api() { curl -sf --cacert "$dir/ca.crt" --cert "$dir/admin.crt" --key "$dir/admin.key" "https://127.0.0.1:$api$1"; }

echo "== etcd ${etcd_flags[*]}"
"$etcd" "${etcd_flags[@]}" >etcd.log 2>&1 & pids+=($!)
wait_for etcd curl -sf "http://127.0.0.1:$etcd_client/health"

echo "== kube-apiserver ${api_flags[*]}"
"$apiserver" "${api_flags[@]}" >apiserver.log 2>&1 & pids+=($!)
wait_for kube-apiserver curl_api /readyz
curl_api /version; echo

echo "== kube-controller-manager ${kcm_flags[*]}"
"$kcm" "${kcm_flags[@]}" >kcm.log 2>&1 & pids+=($!)
echo "== kube-scheduler ${sched_flags[*]}"
"$sched" "${sched_flags[@]}" >scheduler.log 2>&1 & pids+=($!)
wait_for kube-controller-manager curl -skf "https://127.0.0.1:$kcm_port/healthz"
wait_for kube-scheduler curl -skf "https://127.0.0.1:$sched_port/healthz"

# The namespace controller and the service-account controllers are real: a namespace gets its
# default ServiceAccount and kube-root-ca.crt from kube-controller-manager.
wait_for "default ServiceAccount" curl_api /api/v1/namespaces/default/serviceaccounts/default
"$helm" --kubeconfig "$dir/kubeconfig" list -A >/dev/null
echo "helm list -A: ok"
# Argo Rollouts' CRDs (copied beside its binary) are accepted and become Established.
for crd in "$(dirname "$rollouts")"/crds/*.yaml; do
  curl -sf --cacert "$dir/ca.crt" --cert "$dir/admin.crt" --key "$dir/admin.key" \
    -H 'Content-Type: application/yaml' --data-binary @"$crd" -o /dev/null \
    "https://127.0.0.1:$api/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
done
wait_for "Rollout CRD" eval 'curl_api /apis/apiextensions.k8s.io/v1/customresourcedefinitions/rollouts.argoproj.io | grep -q "\"type\": \"Established\""'
wait_for "rollouts.argoproj.io served" curl_api /apis/argoproj.io/v1alpha1/namespaces/default/rollouts
echo "== listening sockets of these processes"
ss -ltnp | grep -E "pid=($(IFS='|'; echo "${pids[*]}"))," | awk '{print $4, $6}' | sort -u
echo "smoke: ok"
