#!/usr/bin/env bash
# Copies memmon's canonical Grafana dashboard, the one the Helm chart ships
# (deploy/helm/memmon/files/memmon-dashboard.json), to deploy/grafana/memmon-dashboard.json for people who import
# it by hand. Edit the canonical file, then run this; tests/deploy/test_dashboard.py fails while they differ.
#   scripts/sync_dashboard.sh           copy (after checking that the canonical file is valid JSON)
#   scripts/sync_dashboard.sh --check   only compare: exit 0 when identical, 1 when not
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
canonical="$root/deploy/helm/memmon/files/memmon-dashboard.json"
copy="$root/deploy/grafana/memmon-dashboard.json"

case "${1:-}" in
  "")
    python3 -m json.tool "$canonical" >/dev/null || { echo "error: $canonical is not valid JSON" >&2; exit 1; }
    mkdir -p "$(dirname "$copy")"
    cp "$canonical" "$copy"
    echo "copied ${canonical#"$root"/} -> ${copy#"$root"/}"
    ;;
  --check)
    if cmp -s "$canonical" "$copy"; then
      echo "ok: ${copy#"$root"/} is identical to ${canonical#"$root"/}"
    else
      echo "error: ${copy#"$root"/} differs from ${canonical#"$root"/}; run scripts/sync_dashboard.sh" >&2
      exit 1
    fi
    ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac
