"""Real cgroup v2, on a cgroup-v1 host: each test boots User-Mode Linux (tests/v2/uml.py) and runs a job in it.
Results come back through files in the test's tmp_path (hostfs)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.v2.conftest import Uml
from tests.v2.uml import UmlTimeout, live_group_members

MIB = 1 << 20
MB = 1_000_000

# Polls memmon's /health/memory inside UML until it has a cgroup sample, then at once reads the same cgroup's
# raw files, and writes both to a JSON file: python probe.py PORT CGROUP_DIR OUT.
PROBE = r"""
import json, sys, time, urllib.error, urllib.request
port, cgroup, out = sys.argv[1], sys.argv[2], sys.argv[3]
deadline = time.monotonic() + 30
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/memory", timeout=5) as response:
            payload = json.loads(response.read())
        if payload.get("cgroup"):
            break
    except (OSError, ValueError):
        pass
    if time.monotonic() > deadline:
        sys.exit("no /health/memory with a cgroup sample within 30 s")
    time.sleep(0.1)
def read(name):
    with open(f"{cgroup}/{name}") as f:
        return f.read()
def field(text, key):
    return next(int(line.split()[1]) for line in text.splitlines() if line.split()[0] == key)
raw = {
    "memory.current": int(read("memory.current")),
    "memory.max": read("memory.max").strip(),
    "inactive_file": field(read("memory.stat"), "inactive_file"),
    "oom_kill": field(read("memory.events"), "oom_kill"),
}
with open(out, "w") as f:
    json.dump({"payload": payload, "raw": raw}, f)
"""

# Waits (up to 30 s) until FILE has a line starting with WORD.
WAIT_FOR = """
wait_for() {
    for _ in $(seq 600); do grep -q "^$2" "$1" && return 0; sleep 0.05; done
    echo "timed out waiting for '$2' in $1"; cat "$1"; return 1
}
"""


def test_boots_cgroup_v2_and_memory_max_oom_kills(uml: Uml) -> None:
    """UML gives cgroup v2 with the memory controller, and a 64M memory.max OOM-kills a leaker (the control)."""
    result = uml(
        """
        cat "$CGROUP_ROOT/cgroup.controllers" > controllers
        stat -f -c %T "$CGROUP_ROOT" > fstype
        mkdir "$CGROUP_ROOT/oom"
        echo 64M > "$CGROUP_ROOT/oom/memory.max"
        cat "$CGROUP_ROOT/oom/memory.max" > memory.max
        rc=0; "$PYTHON" "$LEAKER" "$CGROUP_ROOT/oom" 0 8 > leaker.out || rc=$?
        echo "$rc" > leaker.rc
        cat "$CGROUP_ROOT/oom/memory.events" > memory.events
        """
    )
    work = uml.workdir
    assert result.rc == 0, result.output
    assert (work / "fstype").read_text().strip() == "cgroup2fs"
    assert "memory" in (work / "controllers").read_text().split()
    assert (work / "memory.max").read_text().strip() == str(64 * MIB)
    assert (work / "leaker.rc").read_text().strip() == "137", "the leaker should die of SIGKILL (128 + 9)"
    assert (work / "leaker.out").read_text().split() == ["ready"], "killed before holding its 4096 MiB"
    events = dict(line.split() for line in (work / "memory.events").read_text().splitlines())
    assert int(events["oom_kill"]) >= 1, events


def test_fastest_leak_rate_inside_uml(uml: Uml, record_property: Callable[[str, object], None]) -> None:
    """The leaker at full speed (rate 0) fills memory inside UML at a measurable rate, recorded as a property."""
    target = 256
    result = uml(
        WAIT_FOR
        + f"""
        mkdir "$CGROUP_ROOT/fast"
        "$PYTHON" "$LEAKER" "$CGROUP_ROOT/fast" 0 16 0 {target} > leaker.out &
        wait_for leaker.out held
        kill $!
        wait $!
        cat leaker.out
        """
    )
    assert result.rc == 0, result.output
    lines = (uml.workdir / "leaker.out").read_text().splitlines()
    assert lines[0] == "ready" and lines[-1] == f"graceful {target}", lines
    _, held, seconds = lines[1].split()
    assert int(held) == target
    mb_per_s = target * MIB / MB / float(seconds)
    record_property("uml_leak_mb_per_s", round(mb_per_s, 1))
    record_property("uml_boot_job_seconds", round(result.seconds, 1))
    print(
        f"leak rate inside UML: {mb_per_s:.1f} MB/s ({target} MiB in {seconds} s); run {result.seconds:.1f} s"
    )
    assert mb_per_s > 1, f"leaked {target} MiB at only {mb_per_s:.2f} MB/s"


def test_health_memory_on_v2_equals_raw_files(uml: Uml) -> None:
    """memmon's /health/memory on a v2 cgroup reports the raw memory.max, memory.current and working set."""
    (uml.workdir / "probe.py").write_text(PROBE)
    result = uml(
        WAIT_FOR
        + """
        app="$CGROUP_ROOT/app"
        mkdir "$app"
        echo 128M > "$app/memory.max"
        "$PYTHON" "$LEAKER" "$app" 0 8 0 40 > leaker.out &
        leaker=$!
        wait_for leaker.out held
        # 16 MiB of page cache charged to the cgroup (a file written on the ext4 scratch disk from inside it):
        # new file pages start on the inactive list, so the working set (usage - inactive_file) is not usage.
        sh -c 'echo $$ > "$1/cgroup.procs" && exec dd if=/dev/zero of="$SCRATCH/cache" bs=1M count=16 status=none' \
            cache "$app"
        "$MEMMON" --cgroup "$app" --health-port 18080 --prometheus-port 0 --bind 127.0.0.1 \
            --state-dir "$TMPDIR/memmon" --check-interval 0.5 > memmon.log 2>&1 &
        agent=$!
        "$PYTHON" probe.py 18080 "$app" result.json
        kill $agent $leaker
        wait $agent
        wait $leaker
        """,
        scratch_mb=64,
    )
    assert result.rc == 0, result.output + (uml.workdir / "memmon.log").read_text()
    data = json.loads((uml.workdir / "result.json").read_text())
    payload, raw = data["payload"], data["raw"]
    group = payload["cgroup"]
    assert group["version"] == 2
    assert payload["limit_source"] == "cgroup"
    # Exact: the limit is a setting, and the payload's MiB figures are rounded to 0.1.
    assert raw["memory.max"] == str(128 * MIB)
    assert group["limit_mb"] == payload["effective_limit_mb"] == 128.0
    assert group["oom_kill_count"] == raw["oom_kill"] == 0
    # Close, not equal: memmon sampled up to one check interval (0.5 s) before the probe read the raw files,
    # and the kernel's own charges (page tables, slab) move a little meanwhile. The leaker holds 40 MiB steady.
    usage = raw["memory.current"] / MIB
    working_set = (raw["memory.current"] - raw["inactive_file"]) / MIB
    assert usage > 40 + 16
    assert raw["inactive_file"] > 8 * MIB, "the page cache written in the cgroup should be inactive_file"
    assert group["usage_mb"] == pytest.approx(usage, abs=1.0)
    assert group["working_set_mb"] == pytest.approx(working_set, abs=1.0)
    assert payload["memory_usage_mb"] == group["working_set_mb"]
    assert group["inactive_file_mb"] == pytest.approx(raw["inactive_file"] / MIB, abs=1.0)


def test_unprivileged_user_reads_but_cannot_write_cgroup_files(uml: Uml) -> None:
    """Inside UML, nobody (via setpriv) reads a root-owned cgroup's files but cannot write them."""
    result = uml(
        """
        as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
        mkdir "$CGROUP_ROOT/owned"
        as_nobody id -u > uid
        as_nobody cat "$CGROUP_ROOT/owned/memory.max" > read
        rc=0; as_nobody sh -c "echo 10M > $CGROUP_ROOT/owned/memory.max" 2> write.err || rc=$?
        echo "$rc" > write.rc
        cat "$CGROUP_ROOT/owned/memory.max" > after
        """
    )
    work = uml.workdir
    assert result.rc == 0, result.output
    assert (work / "uid").read_text().strip() == "65534"
    assert (work / "read").read_text().strip() == "max"
    assert (work / "write.rc").read_text().strip() != "0"
    assert "Permission denied" in (work / "write.err").read_text()
    assert (work / "after").read_text().strip() == "max"


def test_timeout_kills_uml_and_its_helpers(uml: Uml) -> None:
    """A job past its timeout raises UmlTimeout and leaves no process of UML's group behind."""
    with pytest.raises(UmlTimeout, match="still running after 4 s") as caught:
        uml("sleep 60", timeout=4)
    # Killed helpers are reparented to the host's init and may stay zombies (state Z) until it reaps them.
    left = live_group_members(caught.value.pgid)
    assert left == [], f"live processes left in UML's group {caught.value.pgid}: {left}"
