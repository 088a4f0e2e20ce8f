#!/usr/bin/env bash
# Build the Kubernetes control plane's binaries (and helm, Argo Rollouts) from Go
# modules into a tools cache outside the checkout, once per version.
#
#   tools/k8s/build.sh [NAME...]      NAME: etcd kube-apiserver kube-controller-manager
#                                     kube-scheduler helm rollouts-controller prometheus
#                                     metrics-server (default: all)
#   tools/k8s/build.sh --print-dir NAME   print NAME's cache dir and exit
#
# Each binary lands in $RELEASEGATE_TOOLS/<name>-<version>/<name> (default
# $RELEASEGATE_TOOLS = ~/.cache/releasegate/tools) with a stamp file
# `.built` written last; a dir whose stamp matches (the tool's go.mod and go.sum, the Go
# version and the link flags) is reused as is. CI runs in a fresh clone on the same machine, so the
# cache (and Go's module and build caches, under $HOME by default) must not live
# in the checkout.
#
# Nothing is downloaded but Go modules from the module proxy. Each tool has its own
# small module under tools/k8s/<group>/ so that its dependencies stay at the
# versions its own release was tested with (k8s.io/kubernetes, etcd, helm and Argo
# Rollouts each pin different k8s.io/etcd/grpc versions).
#
# Builds run under `nice -n 19` with one package compiled at a time (GOFLAGS=-p=1)
# by default, so a build never starves tests running on the same cores; set
# RELEASEGATE_BUILD_NICE=0 and GOFLAGS= to build at full speed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tools=${RELEASEGATE_TOOLS:-$HOME/.cache/releasegate/tools}

if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  PATH=/usr/local/go/bin:$PATH
fi
export GOFLAGS=${GOFLAGS--p=1}
# The machine's Go unless a module needs a newer one (then fetched as a module from the
# proxy, see toolchain_for).
default_toolchain=${GOTOOLCHAIN:-local}
export CGO_ENABLED=0 # the server binaries are static, as Kubernetes' own release builds them
nice_level=${RELEASEGATE_BUILD_NICE:-19}

# What Kubernetes' own build (hack/lib/version.sh) stamps into its binaries: /version and
# `--version` then say v1.37.2, not v0.0.0-master (the git commit is not in the module).
k8s_ldflags() { # version
  local version=$1 v=${1#v} flags=() key val
  for kv in "gitVersion=${version}" "gitMajor=${v%%.*}" "gitMinor=$(cut -d. -f2 <<<"$v")" \
            "gitTreeState=clean" "buildDate=1970-01-01T00:00:00Z"; do
    key=${kv%%=*}; val=${kv#*=}
    flags+=("-X k8s.io/client-go/pkg/version.${key}=${val}" "-X k8s.io/component-base/version.${key}=${val}")
  done
  echo "${flags[*]}"
}

tool_row() {
  case $1 in
    kube-apiserver|kube-controller-manager|kube-scheduler)
      echo "kubernetes|k8s.io/kubernetes/cmd/$1|k8s.io/kubernetes" ;;
    etcd) echo "etcd|go.etcd.io/etcd/server/v3|go.etcd.io/etcd/server/v3" ;;
    helm) echo "helm|helm.sh/helm/v4/cmd/helm|helm.sh/helm/v4" ;;
    rollouts-controller)
      echo "argo-rollouts|github.com/argoproj/argo-rollouts/cmd/rollouts-controller|github.com/argoproj/argo-rollouts" ;;
    prometheus) echo "prometheus|github.com/prometheus/prometheus/cmd/prometheus|github.com/prometheus/prometheus" ;;
    metrics-server) echo "metrics-server|sigs.k8s.io/metrics-server/cmd/metrics-server|sigs.k8s.io/metrics-server" ;;
    *) echo "unknown tool: $1" >&2; return 2 ;;
  esac
}

all=(etcd kube-apiserver kube-controller-manager kube-scheduler helm rollouts-controller prometheus
     metrics-server)

toolchain_for() { # moddir
  case $1 in
    argo-rollouts) echo go1.27.3 ;; # its go.mod says go 1.26.10
    *) echo "$default_toolchain" ;;
  esac
}

module_version() { # moddir module
  (cd "$here/$1" && GOTOOLCHAIN=$(toolchain_for "$1") go list -m -f '{{.Version}}' "$2")
}

ldflags_for() { # name version
  case $1 in
    kube-*) k8s_ldflags "$2" ;;
    etcd) echo "" ;; # its version is a constant of go.etcd.io/etcd/api/v3/version
    helm) echo "-X helm.sh/helm/v4/internal/version.version=$2 -X helm.sh/helm/v4/internal/version.gitTreeState=clean" ;;
    rollouts-controller)
      echo "-X github.com/argoproj/argo-rollouts/utils/version.version=${2#v} -X github.com/argoproj/argo-rollouts/utils/version.gitTreeState=clean -X github.com/argoproj/argo-rollouts/utils/version.buildDate=1970-01-01T00:00:00Z" ;;
    prometheus) # module v0.316.0 is Prometheus 3.16.0
      local minor=${2#v0.}; local patch=${minor#*.}; minor=${minor%%.*}
      echo "-X github.com/prometheus/common/version.Version=$((minor / 100)).$((minor % 100)).$patch -X github.com/prometheus/common/version.Branch=HEAD" ;;
    metrics-server) # as its Makefile stamps it: client-go's version package, `--version` says v0.8.0
      echo "-X k8s.io/client-go/pkg/version.gitVersion=$2 -X k8s.io/client-go/pkg/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.buildDate=1970-01-01T00:00:00Z" ;;
  esac
}

# Build tags: Prometheus with only the service discovery the sandbox uses (Kubernetes; file
# discovery is always in), which builds in a fraction of the time of every cloud's SDK.
tags_for() { # name
  case $1 in
    prometheus) echo "remove_all_sd,enable_kubernetes_sd" ;;
    *) echo "" ;;
  esac
}

# The Argo Rollouts controller listens for its metrics and health on 0.0.0.0, a constant with no
# flag (controller/controller.go: listenAddr). Nothing of the sandbox may listen beyond
# loopback, so its build compiles a copy of the module (in the cache dir) with that one line
# changed, "0.0.0.0:%d" made "127.0.0.1:%d", through a `replace` in a copy of the tool's go.mod
# given to `go build -modfile` (an -overlay may not replace files in the module cache).
# Prints the -modfile's path.
ROLLOUTS_LISTEN_PATCH='s/"0\.0\.0\.0:%d"/"127.0.0.1:%d"/'
# A module's source directory in the module cache, downloaded first: on a cold module cache
# `go list -m -f {{.Dir}}` prints nothing, and a copy of "$src/." would copy the whole disk.
module_dir() { # moddir module
  local dir
  (cd "$here/$1" && GOTOOLCHAIN=$(toolchain_for "$1") go mod download "$2") >&2
  dir=$(cd "$here/$1" && GOTOOLCHAIN=$(toolchain_for "$1") go list -m -f '{{.Dir}}' "$2")
  [[ -n $dir && -f $dir/go.mod ]] || { echo "k8s-tools: no source of $2 in the module cache (${dir:-none})" >&2; return 1; }
  echo "$dir"
}

rollouts_modfile() { # moddir module dest
  local src copy=$3/.src
  src=$(module_dir "$1" "$2") || return 1
  rm -rf "$copy"; mkdir -p "$copy"
  cp -r "$src"/. "$copy"/; chmod -R u+w "$copy"; rm -rf "$copy/ui" "$copy/docs"
  sed -i "$ROLLOUTS_LISTEN_PATCH" "$copy/controller/controller.go"
  grep -q '"127.0.0.1:%d"' "$copy/controller/controller.go" \
    || { echo "k8s-tools: $src/controller/controller.go no longer has the listen address to patch" >&2; return 1; }
  cp "$here/$1/go.mod" "$copy.go.mod"; cp "$here/$1/go.sum" "$copy.go.sum"
  echo "replace $2 => $copy" >>"$copy.go.mod"
  echo "$copy.go.mod"
}

stamp_of() { # moddir name version: everything a build depends on
  { GOTOOLCHAIN=$(toolchain_for "$1") go version; cat "$here/$1/go.mod" "$here/$1/go.sum"
    echo "CGO_ENABLED=$CGO_ENABLED $(ldflags_for "$2" "$3")"
    [[ -z $(tags_for "$2") ]] || echo "tags $(tags_for "$2")"
    [[ $2 != rollouts-controller ]] || echo "overlay $ROLLOUTS_LISTEN_PATCH"; } | sha256sum | cut -d' ' -f1
}

dir_of() { # name -> cache dir
  local row moddir mod
  row=$(tool_row "$1"); IFS='|' read -r moddir _ mod <<<"$row"
  echo "$tools/$1-$(module_version "$moddir" "$mod")"
}

is_built() { # dest name stamp
  [[ -x $1/$2 && -f $1/.built && $(<"$1/.built") == "$3" ]]
}

build_one() {
  local name=$1 row moddir pkg mod version dest stamp tmp
  row=$(tool_row "$name"); IFS='|' read -r moddir pkg mod <<<"$row"
  version=$(module_version "$moddir" "$mod")
  dest=$tools/$name-$version
  stamp=$(stamp_of "$moddir" "$name" "$version")
  if is_built "$dest" "$name" "$stamp"; then
    echo "k8s-tools: $name $version: cached in $dest"
    return 0
  fi
  if [[ -z ${locked-} ]]; then
    # One build at a time on this machine (a developer's `make k8s-tools` and CI's may
    # overlap); whoever waited finds the other's result.
    exec 9>"$tools/.lock"
    flock 9
    locked=1
    if is_built "$dest" "$name" "$stamp"; then
      echo "k8s-tools: $name $version: built meanwhile in $dest"
      return 0
    fi
  fi
  echo "k8s-tools: building $name $version into $dest ..."
  mkdir -p "$dest"
  rm -f "$dest/.built"
  tmp=$(mktemp "$dest/.$name.XXXXXX")
  local start=$SECONDS
  local overlay=()
  if [[ $name == rollouts-controller ]]; then
    local modfile
    modfile=$(rollouts_modfile "$moddir" "$mod" "$dest")
    overlay=(-modfile "$modfile")
  fi
  (cd "$here/$moddir" && GOTOOLCHAIN=$(toolchain_for "$moddir") nice -n "$nice_level" go build -trimpath \
      "${overlay[@]}" -tags "$(tags_for "$name")" -ldflags "-s -w $(ldflags_for "$name" "$version")" -o "$tmp" "$pkg")
  mv -f "$tmp" "$dest/$name"
  if [[ $name == rollouts-controller ]]; then
    # The CRDs ship in the same module: copy them beside the binary.
    local src
    src=$(module_dir "$moddir" "$mod")
    rm -rf "$dest/crds"; mkdir -p "$dest/crds"
    cp "$src"/manifests/crds/*-crd.yaml "$dest/crds/"
    chmod -R u+w "$dest/crds"
  fi
  echo "$stamp" >"$dest/.built"
  echo "k8s-tools: built $name $version in $((SECONDS - start)) s: $dest/$name"
}

if [[ ${1-} == --print-dir ]]; then
  dir_of "$2"
  exit 0
fi

names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=("${all[@]}")
mkdir -p "$tools"
for name in "${names[@]}"; do
  build_one "$name"
done
