#!/usr/bin/env bash
# Check Grafana dashboard JSON against the JSON schema generated from @grafana/schema's `Dashboard` type (Grafana's
# own generated TypeScript types of the classic, schemaVersion-numbered dashboard model).
#
#   scripts/grafana_schema.sh                       # prints the schema file's path (installing the first time)
#   scripts/grafana_schema.sh validate FILE...      # validates each file; prints every error as path: message
#
# Installs pinned versions with npm into .cache/tools/grafana-schema, then generates the schema once with
# ts-json-schema-generator from node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts. Idempotent:
# a second run finds the stamp of the pinned versions and neither installs nor regenerates; a changed pin installs
# and generates again, into a new directory that replaces the old one in one step. scripts/validate_dashboard.mjs
# does the validation (ajv, allErrors).
#
# Settings (environment): MEMMON_TOOLS_DIR (default <repo>/.cache/tools). Exit codes: 0 ok (every file valid),
# 1 a file is invalid or anything else failed, 3 npm (or node) is missing.
set -Eeuo pipefail
trap 'echo "grafana_schema: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

# @grafana/schema is published from the grafana/grafana repository together with Grafana itself: 13.2.3 holds the
# types of Grafana v13.2.3 (dashboard schemaVersion 42). ts-json-schema-generator 2.10.0 accepts typescript >=5.9 <7;
# its default compiler options name the "node" types, so @types/node is installed for its type check.
PACKAGES=(
    "@grafana/schema@13.2.3"
    "ts-json-schema-generator@2.10.0"
    "typescript@6.0.3"
    "@types/node@20.19.43"
    "ajv@8.20.0"
)
TYPES="node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${MEMMON_TOOLS_DIR:-$ROOT/.cache/tools}"
DIR="$TOOLS/grafana-schema"
SCHEMA="$DIR/dashboard.schema.json"
STAMP="$DIR/.installed"
VALIDATOR="$ROOT/scripts/validate_dashboard.mjs"
WANTED="${PACKAGES[*]}"

say() { echo "grafana_schema: $*" >&2; }

need() {
    local tool
    for tool in npm node; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            say "$tool is not on the PATH; it installs @grafana/schema and validates dashboards (apt-get install nodejs npm)"
            exit 3
        fi
    done
}

current() { [ -f "$SCHEMA" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANTED" ]; }

install() {
    mkdir -p "$TOOLS"
    work="$(mktemp -d "$TOOLS/.grafana-schema.XXXXXX")" # global: the EXIT trap runs outside this function
    trap 'rm -rf "$work"' EXIT
    say "installing ${PACKAGES[*]} into $DIR"
    echo '{"private": true}' >"$work/package.json"
    (cd "$work" && npm install --loglevel=error --no-fund --no-audit --no-package-lock "${PACKAGES[@]}" >/dev/null)
    [ -f "$work/$TYPES" ] || { say "@grafana/schema has no $TYPES"; exit 1; }
    say "generating the Dashboard schema from $TYPES"
    (cd "$work" && node_modules/.bin/ts-json-schema-generator --path "$TYPES" --type Dashboard \
        --out dashboard.schema.json >/dev/null)
    echo "$WANTED" >"$work/.installed"
    # Replace the directory in one step, so a reader never sees half of it.
    rm -rf "$DIR.old"
    [ -d "$DIR" ] && mv "$DIR" "$DIR.old"
    mv "$work" "$DIR"
    rm -rf "$DIR.old"
    trap - EXIT
}

case "${1:-}" in
"" | validate) ;;
*) say "unknown command '$1' (expected no argument or: validate FILE...)"; exit 1 ;;
esac
if [ "${1:-}" = validate ] && [ "$#" -lt 2 ]; then
    say "validate needs at least one dashboard file"
    exit 1
fi

if ! current; then
    need
    if command -v flock >/dev/null 2>&1; then
        mkdir -p "$TOOLS"
        exec 9>"$TOOLS/.lock"
        flock 9
        current || install # another run may have installed it while we waited
        flock -u 9
    else
        install
    fi
fi

if [ "$#" -eq 0 ]; then
    echo "$SCHEMA"
    exit 0
fi
shift
need
exec node "$VALIDATOR" "$DIR" "$@"
