"""The OOM race on a real cgroup v2 kernel (User-Mode Linux, tests/v2/uml.py): memmon as root and unprivileged,
after the watched cgroup was recreated, and the memory.high guard throttling a leak. UML fills memory far more
slowly than the host (PLATFORMS.md: about 35 MiB/s), so these test the mechanism; the rates are as measured."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.actions.leaking import LEAKER
from tests.v2.conftest import Uml

MIB = 1 << 20

# Shell helpers for the jobs. start_memmon NAME USER CONFIG [ARGS...]: a memmon on $CG in the background (USER
# root or nobody), its log in NAME.log, its port in $PORT, waits until /health is past "starting".
# leak NAME UID RATE [IGNORE]: one leaking child run to its end; appends "NAME rc oom_kills output" to results.
HELPERS = r"""
CG="$CGROUP_ROOT/app"
PORT=18080
oom_kills() { awk '$1 == "oom_kill" {print $2}' "$CG/memory.events"; }
new_cgroup() { mkdir "$CG"; echo 256M > "$CG/memory.max"; }
start_memmon() {
    name=$1; user=$2; config=$3; shift 3
    mkdir -p "$TMPDIR/$name"; chmod 777 "$TMPDIR/$name"; cp "$config" "$TMPDIR/$name/config.json"
    chmod 644 "$TMPDIR/$name/config.json"
    run=""; [ "$user" = nobody ] && run="setpriv --reuid=65534 --regid=65534 --clear-groups"
    $run "$MEMMON" --config "$TMPDIR/$name/config.json" --cgroup "$CG" --health-port $PORT \
        --prometheus-port 0 --state-dir "$TMPDIR/$name/state" --log-level INFO "$@" > "$name.log" 2>&1 &
    MEMMON_PID=$!
    "$PYTHON" wait_ready.py $PORT
}
stop_memmon() { kill -TERM "$MEMMON_PID"; wait "$MEMMON_PID" || true; }
leak() {
    before=$(oom_kills); rc=0
    out=$("$PYTHON" leaker.py "$CG" "$3" 1 "$2" "${4:-0}") || rc=$?
    echo "$1 $rc $(( $(oom_kills) - before )) $out" >> results
}
get() {
    "$PYTHON" -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
        "http://127.0.0.1:$PORT$1"
}
"""

WAIT_READY = r"""
import json, sys, time, urllib.request
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=5) as response:
            if json.loads(response.read())["status"] != "starting":
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit("memmon did not answer /health within 60 s")
"""

SIGNAL = {"auto_response": {"emergency_actions": {"graceful_restart": {"strategy": "signal"}}}}
"""Shipped settings apart from the restart strategy (shipped: none)."""


def prepare(uml: Uml, **configs: dict[str, Any]) -> None:
    """Write the leaker, the readiness probe and the named configs into the workdir before boot."""
    work = uml.workdir
    (work / "leaker.py").write_text(LEAKER)
    (work / "wait_ready.py").write_text(WAIT_READY)
    for name, config in configs.items():
        (work / f"{name}.json").write_text(json.dumps(config))


def results(uml: Uml) -> dict[str, tuple[int, int, str]]:
    """NAME -> (exit code, OOM kills during the run, output) of each leak."""
    rows = {}
    for line in (uml.workdir / "results").read_text().splitlines():
        name, rc, kills, *output = line.split()
        rows[name] = (int(rc), int(kills), " ".join(output))
    return rows


def test_v2_race_won_as_root_and_unprivileged_control_killed(uml: Uml) -> None:
    """On cgroup v2 a 256 MiB cgroup's leak at 20 MB/s and as fast as UML goes ends gracefully with memmon's
    shipped settings (but the signal strategy), as root and as nobody (no memory.high, no PSI: degraded), while
    the same leak without memmon is OOM-killed."""
    prepare(uml, signal=SIGNAL)
    result = uml(
        HELPERS
        + """
        new_cgroup
        leak control 0 100000
        for user in root nobody; do
            uid=0; [ "$user" = nobody ] && uid=65534
            for rate in 20 100000; do
                start_memmon "$user-$rate" "$user" signal.json
                [ "$rate" = 20 ] && get /health > "health-$user.json"
                leak "$user-$rate" "$uid" "$rate"
                stop_memmon
            done
        done
        """,
        timeout=400,
    )
    assert result.rc == 0, result.output
    rows = results(uml)
    assert rows["control"][0] == 137 and rows["control"][1] >= 1, rows["control"]
    for name in ("root-20", "root-100000", "nobody-20", "nobody-100000"):
        rc, kills, output = rows[name]
        assert (rc, kills) == (0, 0) and output.startswith("graceful"), (name, rows[name], result.output)
    root = json.loads((uml.workdir / "health-root.json").read_text())
    nobody = json.loads((uml.workdir / "health-nobody.json").read_text())
    assert "usage_watch" not in root["degraded"] and "memory_high_guard" not in root["degraded"], root
    assert {"kernel_events", "memory_high_guard"} <= set(nobody["degraded"]), nobody["degraded"]


def test_v2_recreated_cgroup_is_watched_again(uml: Uml) -> None:
    """The watched v2 cgroup removed and created again: memmon (30 s checks) watches memory.events of the new
    cgroup (its inotify watch names the new file's inode), puts its memory.high guard there, and a leak as fast
    as UML goes in the new cgroup ends gracefully."""
    prepare(uml, signal={**SIGNAL, "monitoring": {"check_interval": 30}})
    result = uml(
        HELPERS
        + """
        new_cgroup
        start_memmon agent root signal.json
        rmdir "$CG"; sleep 0.5; new_cgroup
        for _ in $(seq 100); do [ "$(cat "$CG/memory.high")" != max ] && break; sleep 0.1; done
        cat "$CG/memory.high" > high
        stat -c %i "$CG/memory.events" > events-inode
        cat /proc/$MEMMON_PID/fdinfo/* 2>/dev/null | grep '^inotify' > inotify || true
        leak after 0 100000
        stop_memmon
        cat "$CG/memory.high" > high-after-stop
        """,
        timeout=300,
    )
    assert result.rc == 0, result.output
    work = uml.workdir
    assert (work / "high").read_text().strip() != "max", (work / "agent.log").read_text()
    inode = int((work / "events-inode").read_text())
    watched = {int(ino, 16) for ino in re.findall(r"ino:([0-9a-f]+)", (work / "inotify").read_text())}
    assert inode in watched, (inode, watched)
    assert results(uml)["after"][:2] == (0, 0), results(uml)
    assert (work / "high-after-stop").read_text().strip() == "max"


def test_v2_memory_high_guard_throttles_and_is_put_back(uml: Uml) -> None:
    """With the guard on (emergency 70 %, guard at 72 %) and no restart, a leak as fast as UML goes is slowed at
    memory.high to a fraction of its speed instead of reaching memory.max: memory.events counts high, memmon is
    woken by it (memory.events notifications counted), nothing is OOM-killed; when memmon stops, memory.high is
    max again."""
    guard = {
        "thresholds": {
            "memory_percent_warning": 50,
            "memory_percent_critical": 60,
            "memory_percent_emergency": 70,
        },
        "auto_response": {"memory_high_guard": {"enabled": "on"}},
    }
    prepare(uml, guard=guard)
    result = uml(
        HELPERS
        + """
        new_cgroup
        start_memmon agent root guard.json
        HIGH=$(cat "$CG/memory.high"); echo "$HIGH" > high
        "$PYTHON" leaker.py "$CG" 100000 1 0 0 > leaker.out &
        LEAKER_PID=$!
        started=$(date +%s.%N)
        until [ "$(cat "$CG/memory.current")" -ge "$HIGH" ]; do sleep 0.05; done
        reached=$(date +%s.%N); at_high=$(cat "$CG/memory.current")
        sleep 4
        later=$(date +%s.%N); after=$(cat "$CG/memory.current")
        echo "$started $reached $at_high $later $after" > progress
        cat "$CG/memory.events" > events
        get /metrics > metrics
        kill -0 $LEAKER_PID && echo alive > leaker-state
        kill -KILL $LEAKER_PID; wait $LEAKER_PID || true
        stop_memmon
        cat "$CG/memory.high" > high-after-stop
        """,
        timeout=300,
    )
    assert result.rc == 0, result.output
    work = uml.workdir
    high = int((work / "high").read_text())
    assert 0.71 * 256 * MIB < high < 0.73 * 256 * MIB, high  # emergency 70 % + 2 % of the limit
    started, reached, at_high, later, after = (float(x) for x in (work / "progress").read_text().split())
    free_rate = at_high / MIB / (reached - started)
    throttled_rate = (after - at_high) / MIB / (later - reached)
    print(f"leak {free_rate:.1f} MiB/s up to memory.high, {throttled_rate:.2f} MiB/s above it")
    assert throttled_rate < free_rate / 3, (free_rate, throttled_rate)
    events = dict(line.split() for line in (work / "events").read_text().splitlines())
    assert int(events["high"]) > 0 and int(events["oom_kill"]) == 0, events
    assert (work / "leaker-state").read_text().strip() == "alive"
    notified = [
        line for line in (work / "metrics").read_text().splitlines()
        if line.startswith('memmon_memory_events_total{kind="memory.events"}')
    ]  # fmt: skip
    assert notified and float(notified[0].split()[-1]) > 0, notified
    assert (work / "high-after-stop").read_text().strip() == "max"
