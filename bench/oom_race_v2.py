"""The OOM race on a real cgroup v2 kernel: User-Mode Linux (Debian's 6.1 ``linux.uml``, see
``tests/v2/uml.py``) booted once per configuration, a 256 MiB v2 cgroup inside, a child leaking into it.

The child joins the cgroup, drops to the agent's user (so an unprivileged agent may signal it), leaks at the
given rate in 1 MiB steps (pages touched; ``fastest``: as fast as UML lets it, about 50-70 MiB/s), and on SIGTERM
notes ``memory.current``, stops and exits 0 (``graceful``). Configurations (memmon with its shipped settings but
the ``signal`` strategy and restart cool-downs lifted for back-to-back runs, as in ``bench/oom_race.py``):

- **root**: memmon may write the cgroup: the ``memory.high`` guard (auto: on with a restart strategy) sits at
  97 %; no PSI in this kernel; v2 has no usage-threshold notification, so the usage watcher does the detecting;
- **unprivileged**: memmon as nobody: no guard, no kernel notification it could arm; the usage watcher alone;
- **no agent**: the control.

UML is slower than the host at syscalls and page faults (PLATFORMS.md): these are v2's figures for the mechanism,
not for the host's speed. Usage: ``python bench/oom_race_v2.py [--quick] [--runs N]``; needs ``linux.uml``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the UML harness lives with the tests

from tests.v2.uml import UML_KERNEL, run_in_uml  # noqa: E402

LIMIT_MIB = 256
RATES = (("20", 20), ("fastest", 100000))
CHILD = r"""
import os, signal, sys, time
cgroup, rate, uid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
with open(cgroup + "/cgroup.procs", "w") as procs:
    procs.write("0")
current = os.open(cgroup + "/memory.current", os.O_RDONLY)
if uid:
    os.setgid(uid)
    os.setuid(uid)
stopping, at_term = False, None
def drain(signum, frame):
    global stopping, at_term
    at_term = int(os.pread(current, 64, 0))
    stopping = True
signal.signal(signal.SIGTERM, drain)
held, leaked, started = [], 0, time.monotonic()
while not stopping and leaked < 4096:
    held.append(b"\x01" * (1 << 20))
    leaked += 1
    pause = started + leaked / rate - time.monotonic()
    if pause > 0 and not stopping:
        time.sleep(pause)
took = time.monotonic() - started
print("graceful" if at_term is not None else "unsignalled", leaked, at_term, f"{took:.3f}", flush=True)
"""
SETTLE = r"""
import json, sys, time, urllib.request
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=5) as response:
            if json.loads(response.read())["status"] in sys.argv[3].split(","):
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.05)
sys.exit(1)
"""
JOB = r"""
CG="$CGROUP_ROOT/app"; mkdir "$CG"; echo {limit}M > "$CG/memory.max"
kills() {{ awk '$1 == "oom_kill" {{print $2}}' "$CG/memory.events"; }}
mkdir -m 777 "$TMPDIR/agent"; cp config.json "$TMPDIR/agent/"; chmod 644 "$TMPDIR/agent/config.json"
uid=0; run=""
if [ "{who}" = nobody ]; then uid=65534; run="setpriv --reuid=65534 --regid=65534 --clear-groups"; fi
if [ "{who}" != none ]; then
    $run "$MEMMON" --config "$TMPDIR/agent/config.json" --cgroup "$CG" --health-port 18080 --prometheus-port 0 \
        --state-dir "$TMPDIR/agent/state" > agent.log 2>&1 &
    AGENT=$!
    "$PYTHON" settle.py 18080 60 healthy,warning,critical,emergency
fi
for rate in {rates}; do
    for run in $(seq {runs}); do
        before=$(kills); rc=0
        out=$("$PYTHON" child.py "$CG" "$rate" "$uid") || rc=$?
        echo "$rate $rc $(( $(kills) - before )) $out" >> results
        for _ in $(seq 200); do [ -z "$(cat "$CG/cgroup.procs")" ] && break; sleep 0.05; done
        [ "{who}" = none ] || "$PYTHON" settle.py 18080 30 healthy,warning || echo "$rate settle-timeout" >> notes
    done
done
if [ "{who}" != none ]; then
    "$PYTHON" -c 'import urllib.request as u; print(u.urlopen("http://127.0.0.1:18080/health").read().decode())' \
        > health.json
    kill -TERM $AGENT; wait $AGENT || true
fi
"""
CONFIG = {
    "monitoring": {"prometheus_port": 0},
    "auto_response": {
        "cooldown_seconds": 0.01,
        "emergency_actions": {
            "graceful_restart": {"strategy": "signal", "cooldown_seconds": 0, "max_restarts_per_hour": 1000}
        },
    },
}


def run_config(who: str, runs: int) -> tuple[dict[str, list[list[str]]], dict[str, object] | None, float]:
    """Boot UML once, run every leak of one configuration; (rate -> result rows, /health at the end, seconds)."""
    with tempfile.TemporaryDirectory(prefix="memmon-bench-v2-") as work:
        workdir = Path(work)
        (workdir / "child.py").write_text(CHILD)
        (workdir / "settle.py").write_text(SETTLE)
        (workdir / "config.json").write_text(json.dumps(CONFIG))
        job = JOB.format(limit=LIMIT_MIB, who=who, rates=" ".join(str(r) for _, r in RATES), runs=runs)
        result = run_in_uml(job, workdir=workdir, timeout=120 + 60 * runs)
        if result.rc != 0:
            raise SystemExit(f"oom_race_v2: the {who} job failed: {result.output[-2000:]}")
        rows: dict[str, list[list[str]]] = {}
        for line in (workdir / "results").read_text().splitlines():
            rate, *rest = line.split()
            rows.setdefault(rate, []).append(rest)
        health_file = workdir / "health.json"
        health = json.loads(health_file.read_text()) if health_file.exists() else None
        return rows, health, result.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run per rate and configuration: a smoke test")
    parser.add_argument("--runs", type=int, default=10, help="runs per configuration and rate (default 10)")
    args = parser.parse_args()
    if not UML_KERNEL.exists():
        print(
            "# oom_race_v2: not run on this machine: user-mode-linux is not installed (make test installs it)"
        )
        return
    runs = 1 if args.quick else args.runs
    print(f"# OOM race on cgroup v2 (User-Mode Linux) — {time.strftime('%Y-%m-%d')}, host {os.cpu_count()} CPUs, "
          "guest: Debian's linux.uml (6.1)"
          + (" (quick smoke run, figures not meaningful)" if args.quick else ""))  # fmt: skip
    print(f"a child leaking in 1 MiB steps into a {LIMIT_MIB} MiB v2 cgroup; memmon shipped but for the signal "
          "strategy and lifted restart cool-downs (emergency 95 %); runs per configuration and rate: "
          f"{runs}")  # fmt: skip
    print()
    print("| configuration | leak | runs | graceful | OOM-killed | other | measured leak MiB/s (median) "
          "| median headroom at SIGTERM, MiB |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    notes = []
    for who, name in (("root", "memmon as root (memory.high guard)"), ("nobody", "memmon unprivileged"),
                      ("none", "no agent")):  # fmt: skip
        rows, health, seconds = run_config(who, runs)
        for label, rate in RATES:
            results = rows.get(str(rate), [])
            graceful = [r for r in results if r[0] == "0" and r[1] == "0" and r[2] == "graceful"]
            killed = [r for r in results if r[0] == "137" and int(r[1]) > 0]
            other = len(results) - len(graceful) - len(killed)
            speeds = [int(r[3]) / float(r[5]) for r in results if len(r) > 5 and float(r[5]) > 0]
            headroom = [LIMIT_MIB - int(r[4]) / 2**20 for r in graceful if r[4] != "None"]
            speed = f"{statistics.median(speeds):.1f}" if speeds else "-"
            room = f"{statistics.median(headroom):.1f}" if headroom else "-"
            print(f"| {name} | {label} MB/s | {len(results)} | {len(graceful)} | {len(killed)} | {other} "
                  f"| {speed} | {room} |")  # fmt: skip
        degraded = health.get("degraded") if health else None
        notes.append(
            f"- {name}: one boot, {seconds:.0f} s" + (f"; degraded at the end: {degraded}" if health else "")
        )
    print()
    print("graceful: exit 0 after SIGTERM with no OOM kill; OOM-killed: exit 137 and memory.events oom_kill rose; "
          "measured leak: MiB leaked / seconds leaking (an OOM-killed child prints nothing: not counted).")  # fmt: skip
    print("\n".join(notes))


if __name__ == "__main__":
    main()
