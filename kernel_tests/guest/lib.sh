# Helpers for the kernel tests' guest scripts (every job sources /mnt/share/kt/guest/lib.sh; bash).
# Output convention: `key=value` lines, read by kernel_tests/conftest.py:fields().
set -u
KT=/mnt/share/kt

prop() { systemctl show -p "$2" --value "$1"; }

# wait_until SECONDS COMMAND...: run COMMAND every 0.2 s until it succeeds; 1 when SECONDS passed.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# http_get URL: the body (curl is not in the image; Python's urllib is).
http_get() {
    python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' "$1"
}

# health_field KEY: one field of /health as JSON.
health_field() {
    http_get http://127.0.0.1:8080/health |
        python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin).get(sys.argv[1])))' "$1"
}

# metric NAME: the value of the series NAME on memmon's /metrics (its first one, labels or not).
metric() {
    http_get http://127.0.0.1:8080/metrics |
        awk -v n="$1" 'index($1, n) == 1 && substr($1, length(n) + 1, 1) ~ /^(\{|)$/ {print $NF; exit}'
}

# cg_inode UNIT: the inode of the unit's cgroup directory (a new one when systemd recreated the cgroup).
cg_inode() { stat -c %i "/sys/fs/cgroup$(prop "$1" ControlGroup)"; }

health_ok() { http_get http://127.0.0.1:8080/health >/dev/null 2>&1; }

# vm_oom_kills: the kernel's count of OOM kills since boot, cgroup OOM kills included (oom_kill in /proc/vmstat).
vm_oom_kills() { awk '$1 == "oom_kill" {print $2}' /proc/vmstat; }

# cg_event UNIT KEY: one counter of the unit's memory.events ("" when the unit has no cgroup).
cg_event() {
    local cg
    cg="$(prop "$1" ControlGroup)"
    [ -n "$cg" ] && awk -v k="$2" '$1 == k {print $2}' "/sys/fs/cgroup$cg/memory.events" 2>/dev/null
}

# leak_reset: (re)install the leaking service from the share and start a fresh, idle instance of it.
leak_reset() {
    install -m 0644 "$KT/guest/leaker.py" /usr/local/bin/kt-leaker
    install -m 0644 "$KT/guest/leak.service" /etc/systemd/system/leak.service
    systemctl daemon-reload
    systemctl reset-failed leak.service 2>/dev/null || true
    systemctl restart leak.service
    wait_until 30 test -d /run/leak
}

# leak_go RATE_MB_S: tell the running leak.service to start leaking (0 = as fast as it can).
leak_go() { echo "$1" >/run/leak/go.tmp && mv /run/leak/go.tmp /run/leak/go; }

# memmon_setup ARGS [CONFIG]: what an operator does: flags in /etc/default/memmon, a config file in /etc/memmon,
# then (re)start the unit; returns when systemd got READY=1 and /health answers.
memmon_setup() {
    local args="$1" config="${2:-}"
    if [ -n "$config" ]; then
        install -D -m 0644 "$KT/configs/$config" "/etc/memmon/$config"
        args="$args --config /etc/memmon/$config"
    fi
    printf 'ARGS="%s"\n' "$args" >/etc/default/memmon
    systemctl daemon-reload
    systemctl reset-failed memmon.service 2>/dev/null || true
    systemctl restart memmon.service || { journalctl -u memmon -n 30 --no-pager; return 1; }
    wait_until 60 health_ok || { echo "memmon: /health does not answer"; return 1; }
}

# memmon_actions: memmon's recent actions from /health, as one JSON list.
memmon_actions() {
    http_get http://127.0.0.1:8080/health |
        python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin).get("recent_actions", [])))'
}

# leak_ended INVOCATION: leak.service is no longer that invocation, or no longer running.
leak_ended() { [ "$(prop leak.service InvocationID)" != "$1" ] || [ "$(prop leak.service ActiveState)" != active ]; }

# leak_run RATE_MB_S SECONDS: make the running leak.service leak, wait until it was restarted or stopped (at most
# SECONDS), then print what happened as key=value lines (oom_kills: OOM kills in the whole VM meanwhile).
leak_run() {
    local rate="$1" limit="$2" inv0 pid0 oom0 since start
    inv0="$(prop leak.service InvocationID)"
    pid0="$(prop leak.service MainPID)"
    oom0="$(vm_oom_kills)"
    since="$(date +%s)"
    echo "invocation_before=$inv0"
    echo "pid_before=$pid0"
    leak_go "$rate"
    start=$SECONDS
    wait_until "$limit" leak_ended "$inv0" || echo "leak_timeout=1"
    echo "leak_seconds=$((SECONDS - start))"
    # The new instance (if any) settles; memmon records the action's result when systemctl or the signal returns.
    wait_until 30 test "$(prop leak.service ActiveState)" != activating || true
    sleep 3
    echo "invocation_after=$(prop leak.service InvocationID)"
    echo "pid_after=$(prop leak.service MainPID)"
    echo "active_state=$(prop leak.service ActiveState)"
    echo "result=$(prop leak.service Result)"
    echo "unit_oom_kill=$(cg_event leak.service oom_kill)"
    # memory.high of the (new) cgroup as the kernel has it, and as systemd believes it is (MemoryHigh=).
    echo "memory_high=$(cat "/sys/fs/cgroup$(prop leak.service ControlGroup)/memory.high" 2>/dev/null)"
    echo "systemd_memory_high=$(prop leak.service MemoryHigh)"
    echo "oom_kills=$(($(vm_oom_kills) - oom0))"
    echo "memmon_status=$(prop memmon.service StatusText)"
    echo "actions=$(memmon_actions)"
    echo "--- the leaker's journal (its rate)"
    journalctl -u leak.service --since "@$since" --no-pager -o cat | grep -E "^(leaking at|kept )" | tail -n 3
    echo "--- memmon's journal since the leak started"
    journalctl -u memmon --since "@$since" --no-pager -o cat | tail -n 40
    echo "--- kernel OOM messages since then"
    journalctl -k --since "@$since" --no-pager -o cat | grep -iE "oom|killed process" | tail -n 10
}

# --- leak@.service: several leaking units side by side (the multi-target test) ---

# leaks_reset INSTANCE...: (re)install the leak@.service template from the share and start a fresh, idle
# leak@INSTANCE.service of each (run directory /run/leak-INSTANCE).
leaks_reset() {
    local i
    install -m 0644 "$KT/guest/leaker.py" /usr/local/bin/kt-leaker
    install -m 0644 "$KT/guest/leak@.service" /etc/systemd/system/leak@.service
    systemctl daemon-reload
    for i in "$@"; do
        systemctl reset-failed "leak@$i.service" 2>/dev/null || true
        systemctl restart "leak@$i.service"
    done
    for i in "$@"; do wait_until 30 test -d "/run/leak-$i" || return 1; done
}

# leak_at_go INSTANCE RATE_MB_S: tell the running leak@INSTANCE.service to start leaking.
leak_at_go() { echo "$2" >"/run/leak-$1/go.tmp" && mv "/run/leak-$1/go.tmp" "/run/leak-$1/go"; }

# unit_ended UNIT INVOCATION: UNIT is no longer that invocation, or no longer running.
unit_ended() { [ "$(prop "$1" InvocationID)" != "$2" ] || [ "$(prop "$1" ActiveState)" != active ]; }

# unit_facts UNIT KEY_SUFFIX: the unit's invocation, main pid, state, result and cgroup OOM kills as key=value lines
# (keys invocation_SUFFIX, pid_SUFFIX, active_SUFFIX, result_SUFFIX, oom_kill_SUFFIX).
unit_facts() {
    echo "invocation_$2=$(prop "$1" InvocationID)"
    echo "pid_$2=$(prop "$1" MainPID)"
    echo "active_$2=$(prop "$1" ActiveState)"
    echo "result_$2=$(prop "$1" Result)"
    echo "oom_kill_$2=$(cg_event "$1" oom_kill)"
}
