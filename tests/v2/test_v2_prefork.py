"""A pre-fork server on a real cgroup v2 kernel (User-Mode Linux, tests/v2/uml.py): real gunicorn in a 256 MiB
v2 cgroup, memmon with ``--server gunicorn --cgroup`` (the master is the cgroup's main process), a leaking load."""

from __future__ import annotations

import re
from pathlib import Path

from tests.v2.conftest import Uml

ROOT = Path(__file__).resolve().parents[2]

LOAD = r"""
import sys, time, urllib.request
port, rate, seconds, leak = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
ok = failed = 0
start = time.monotonic()
for i in range(int(rate * seconds)):
    time.sleep(max(0.0, start + i / rate - time.monotonic()))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?bytes={leak}", timeout=10) as answer:
            ok += answer.status == 200
    except OSError:
        failed += 1
print(f"ok {ok} failed {failed}")
"""

JOB = r"""
CG="$CGROUP_ROOT/app"
mkdir "$CG"; echo 256M > "$CG/memory.max"
oom_kills() { awk '$1 == "oom_kill" {print $2}' "$CG/memory.events"; }
GUNICORN="$(dirname "$PYTHON")/gunicorn"
sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' _ "$CG" "$GUNICORN" --bind 127.0.0.1:18081 --workers 2 \
    --control-socket "$TMPDIR/gunicorn.ctl" --chdir "$REPO" 'tests.prefork:create_app()' > gunicorn.log 2>&1 &
for _ in $(seq 300); do "$PYTHON" -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:18081/ping")' \
    2>/dev/null && break; sleep 0.2; done
"$MEMMON" --server gunicorn --cgroup "$CG" --health-port 18080 --prometheus-port 0 --state-dir "$TMPDIR/state" \
    > memmon.log 2>&1 &
MEMMON_PID=$!
for _ in $(seq 300); do "$PYTHON" -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:18080/health")' \
    2>/dev/null && break; sleep 0.2; done
before=$(oom_kills)
"$PYTHON" load.py 18081 10 30 2097152 > load
echo $(( $(oom_kills) - before )) > kills
"$PYTHON" -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:18080/health/memory').read().decode())" \
    > memory.json
kill -TERM $MEMMON_PID; wait $MEMMON_PID || true
"""


def test_v2_gunicorn_workers_are_recycled_before_the_oom_killer(uml: Uml) -> None:
    """On cgroup v2, a 20 MB/s leak for 30 s (600 MiB into a 256 MiB cgroup) is answered by recycling gunicorn's
    workers one at a time: no OOM kill, no failed request, the master found as the cgroup's main process."""
    (uml.workdir / "load.py").write_text(LOAD)
    result = uml(JOB, timeout=400, env={"REPO": str(ROOT)})
    work = uml.workdir
    logs = f"{result.output}\n{_read(work / 'memmon.log')}\n{_read(work / 'gunicorn.log')}"
    assert result.rc == 0, logs
    assert (work / "kills").read_text().strip() == "0", logs
    assert re.fullmatch(r"ok 300 failed 0\s*", (work / "load").read_text()), logs
    recycles = _read(work / "memmon.log").count("action recycle:worker: success")
    assert recycles >= 2, logs
    assert '"server": "gunicorn"' in _read(work / "memory.json")


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else f"({path.name} missing)"
