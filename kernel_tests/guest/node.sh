# Helpers of the node-mode kernel test (kernel_tests/test_node_mode_vm.py), sourced after lib.sh: a Kubernetes node's
# cgroup tree built the way the kubelet's systemd cgroup driver and containerd's runc build it, through systemd.
#
# The kubelet creates each pod's slice with a StartTransientUnit call on systemd's D-Bus API (pkg/kubelet/cm,
# through runc's libcontainer/cgroups/systemd); runc puts each container (the sandbox's pause container included) in
# a transient scope cri-containerd-<id>.scope in that slice (StartTransientUnit with the process's PID). systemd
# nests slices by the dashes of their names: kubepods-burstable-pod<uid>.slice lives in kubepods-burstable.slice in
# kubepods.slice, each created on demand; the kubelet turns the dashes of the pod UID into underscores for that
# reason. `systemd-run --scope` makes the same StartTransientUnit call for a scope.
KT_NODE=/run/kt-node
NODE_PORT=16443
MEMMON_PORT=18080

# node_slice QOS UID: the pod slice's unit name (QOS burstable, besteffort or guaranteed: directly in kubepods.slice).
node_slice() {
    local qos="$1" uid="${2//-/_}"
    if [ "$qos" = guaranteed ]; then echo "kubepods-pod$uid.slice"; else echo "kubepods-$qos-pod$uid.slice"; fi
}

# node_pod QOS UID MEMORY_MAX_BYTES: create the pod's slice with its memory limit, as the kubelet does (D-Bus).
node_pod() {
    busctl call --quiet org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager \
        StartTransientUnit 'ssa(sv)a(sa(sv))' "$(node_slice "$1" "$2")" fail \
        3 Description s "kubepods pod $2" MemoryAccounting b true MemoryMax t "$3" 0
}

# node_container SLICE ID MEMORY_MAX COMMAND...: run COMMAND in the background in the transient scope
# cri-containerd-ID.scope of SLICE, as the scope's main process (systemd-run execs COMMAND once the scope holds
# it): $! is its PID, a child of the calling shell (`wait` gives its exit status).
node_container() {
    local slice="$1" id="$2" max="$3"
    shift 3
    systemd-run --quiet --scope --unit="cri-containerd-$id.scope" --slice="$slice" \
        -p MemoryMax="$max" -p MemorySwapMax=0 -- "$@" </dev/null >/dev/null 2>&1 &
}

# node_cgroup ID: the container's cgroup directory (nothing when its scope is gone).
node_cgroup() {
    local cg
    cg="$(prop "cri-containerd-$1.scope" ControlGroup)"
    [ -n "$cg" ] && echo "/sys/fs/cgroup$cg"
}

# node_procs ID: the container scope's processes (one line, sorted), "" when it has no cgroup.
node_procs() {
    local cg
    cg="$(node_cgroup "$1")" || return 0
    sort -n "$cg/cgroup.procs" 2>/dev/null | tr '\n' ' '
}

# node_holds ID PID: PID runs in cri-containerd-ID.scope.
node_holds() { grep -q "cri-containerd-$1.scope" "/proc/$2/cgroup" 2>/dev/null; }

# node_standin_start NODE_JSON: the API stand-in as a transient service on 127.0.0.1:NODE_PORT (memmon's venv has
# aiohttp); returns when it wrote its token and first state.
node_standin_start() {
    mkdir -p -m 0755 "$KT_NODE"
    rm -f "$KT_NODE/token" "$KT_NODE/state.json"
    systemctl reset-failed kt-kube-standin.service 2>/dev/null || true
    systemd-run --quiet --unit=kt-kube-standin --setenv=PYTHONDONTWRITEBYTECODE=1 \
        /opt/memmon/bin/python "$KT/guest/kube_standin_serve.py" "$1" "$NODE_PORT" "$KT_NODE"
    wait_until 120 test -s "$KT_NODE/state.json" || { journalctl -u kt-kube-standin --no-pager -o cat; return 1; }
}

# node_memmon_start CONFIG_JSON PROPERTY...: memmon in node mode as the transient service memmon-node.service
# (Type=notify: returns once memmon sent READY=1), with the in-cluster variables pointed at the stand-in and the
# systemd PROPERTY settings given (its identity and sandbox).
node_memmon_start() {
    local config="$1"
    shift
    install -m 0644 "$config" "$KT_NODE/config.json"
    systemctl reset-failed memmon-node.service 2>/dev/null || true
    # A fresh state each time: memmon restores its targets' last levels (and would report a recovery first).
    rm -rf /var/lib/memmon-node /var/lib/private/memmon-node
    systemd-run --quiet --unit=memmon-node -p Type=notify -p NotifyAccess=main -p StateDirectory=memmon-node \
        "$@" \
        --setenv=MEMMON_KUBE_API="http://127.0.0.1:$NODE_PORT" --setenv=MEMMON_KUBE_TOKEN_FILE="$KT_NODE/token" \
        --setenv=POD_NAMESPACE=memmon --setenv=POD_NAME=memmon-node-x --setenv=PYTHONDONTWRITEBYTECODE=1 \
        /opt/memmon/bin/memmon --state-dir /var/lib/memmon-node --config "$KT_NODE/config.json" \
        --health-port "$MEMMON_PORT" --prometheus-port 0 ||
        { journalctl -u memmon-node --no-pager -o cat | tail -n 40; return 1; }
}

# node_get PATH: memmon-node's HTTP answer at PATH.
node_get() { http_get "http://127.0.0.1:$MEMMON_PORT$1"; }

# node_all_ok N: /health/targets lists shop/web-0..N-1 and their containers shop/web-I/app, every one ok.
node_all_ok() {
    node_get /health/targets 2>/dev/null | python3 -c '
import json, sys
n = int(sys.argv[1])
status = {t["name"]: t["status"] for t in json.load(sys.stdin)["targets"]}
names = [f"shop/web-{i}" for i in range(n)] + [f"shop/web-{i}/app" for i in range(n)]
sys.exit(0 if all(status.get(name) == "ok" for name in names) else 1)
' "$1"
}

# node_state KEY: one field of the stand-in's state.json, as JSON.
node_state() {
    python3 -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))[sys.argv[2]]))' \
        "$KT_NODE/state.json" "$1"
}

# node_evicted: the stand-in has seen an eviction.
node_evicted() { [ "$(node_state evictions)" != "[]" ]; }

# node_stop: stop memmon-node and the stand-in (each only if running).
node_stop() {
    systemctl stop memmon-node.service kt-kube-standin.service 2>/dev/null || true
    systemctl reset-failed memmon-node.service kt-kube-standin.service 2>/dev/null || true
}

# node_series NAME [GREP_PATTERN]: memmon-node's /metrics series NAME{...} (those matching GREP_PATTERN), joined by ";".
node_series() {
    node_get /metrics | grep -E "^$1\{" | grep -e "${2:-}" | tr '\n' ';'
}

# node_actions: memmon-node's recent actions from /health, as one JSON list.
node_actions() {
    node_get /health | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["recent_actions"]))'
}

# node_status FIELD: a field of /proc/<memmon-node's main pid>/status (Uid: its real uid; CapEff: its capabilities).
node_status() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$(prop memmon-node.service MainPID)/status"; }
