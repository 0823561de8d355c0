#!/usr/bin/env bash
# Install memmon's systemd unit.
#
#   scripts/install_systemd.sh [--dry-run] [--root DIR]
#
#   1. deploy/systemd/memmon.service      -> /etc/systemd/system/memmon.service  (0644, replaced when it differs)
#   2. deploy/systemd/memmon.env.example  -> /etc/default/memmon                 (0600, only when absent: it is
#                                                                                   your configuration)
#   3. systemctl daemon-reload                                                   (when systemd runs this system)
#
# It neither enables nor starts the service: put the target in /etc/default/memmon first (ARGS="--unit app.service"),
# then `systemctl enable --now memmon`. memmon itself is expected at /opt/memmon/bin/memmon (a venv); the script
# only warns when it is missing.
#
#   --dry-run   print what would be done, change nothing
#   --root DIR  install under DIR instead of / (a package build or image root); no daemon-reload then
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
unit_src="$repo/deploy/systemd/memmon.service"
env_src="$repo/deploy/systemd/memmon.env.example"
exec_path=/opt/memmon/bin/memmon

dry_run=0
root=/
while [ "$#" -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --root)
            [ "$#" -ge 2 ] || { echo "install_systemd: --root needs a directory" >&2; exit 2; }
            root="$2"
            shift
            ;;
        --root=*) root="${1#--root=}" ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) echo "install_systemd: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

[ -d "$root" ] || { echo "install_systemd: --root $root is not a directory" >&2; exit 2; }
root="$(cd "$root" && pwd)"
prefix="${root%/}"   # "" for /
unit_dst="$prefix/etc/systemd/system/memmon.service"
env_dst="$prefix/etc/default/memmon"

for src in "$unit_src" "$env_src"; do
    [ -f "$src" ] || { echo "install_systemd: missing $src" >&2; exit 1; }
done
if [ "$dry_run" = 0 ] && [ "$root" = / ] && [ "$(id -u)" != 0 ]; then
    echo "install_systemd: installing into / needs root (sudo $0, or --dry-run / --root DIR)" >&2
    exit 1
fi

say() { if [ "$dry_run" = 1 ]; then echo "would $*"; else echo "$*"; fi; }
run() { if [ "$dry_run" = 0 ]; then "$@"; fi; }

# 1. the unit
if [ -f "$unit_dst" ] && cmp -s "$unit_src" "$unit_dst"; then
    echo "keep $unit_dst (already up to date)"
else
    if [ -f "$unit_dst" ]; then verb=replace; else verb=install; fi
    say "$verb $unit_dst (from deploy/systemd/memmon.service, mode 0644)"
    run install -D -m 0644 "$unit_src" "$unit_dst"
fi

# 2. the environment file, never overwritten
if [ -e "$env_dst" ]; then
    echo "keep $env_dst (exists; compare with deploy/systemd/memmon.env.example for new settings)"
else
    say "install $env_dst (from deploy/systemd/memmon.env.example, mode 0600: it may hold secrets)"
    run install -D -m 0600 "$env_src" "$env_dst"
fi

# 3. tell systemd
if [ "$root" != / ]; then
    echo "skip systemctl daemon-reload (installing under $root, not into the running system)"
elif [ ! -d /run/systemd/system ] || ! command -v systemctl >/dev/null 2>&1; then
    echo "skip systemctl daemon-reload (systemd is not running this system)"
else
    say "run systemctl daemon-reload"
    run systemctl daemon-reload
fi

# What is left to the operator.
if [ ! -x "$prefix$exec_path" ]; then
    echo "note: $prefix$exec_path is missing: create it with"
    echo "        python3 -m venv /opt/memmon && /opt/memmon/bin/pip install $repo"
    echo "      or point ExecStart= elsewhere with 'systemctl edit memmon'"
fi
echo "next: set the target in $env_dst (ARGS=\"--unit app.service\"), then: systemctl enable --now memmon"
echo "      check: systemctl status memmon; journalctl -u memmon; systemd-analyze security memmon.service"
