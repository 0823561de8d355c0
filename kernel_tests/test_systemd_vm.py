"""memmon's real systemd unit in a real systemd 252 (PID 1) on a cgroup v2 kernel (Debian bookworm, 6.1), under
QEMU: installed the way the README tells users to, started, watchdogged, and restarting a leaking unit before the
kernel OOM killer does.

The tests share one VM (see conftest.py) and run in file order; each sets up the memmon configuration it needs.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from kernel_tests.conftest import FACTS, Install, Run, fields

MIB = 1024 * 1024
# Reading tolerance for an idle service's memory between memmon's last check and the test's read of the same file.
TOLERANCE_MB = 1.0


def test_guest_runs_systemd_on_cgroup_v2_with_memory_psi(run: Run) -> None:
    """The platform is what this tier claims: systemd is PID 1, /sys/fs/cgroup is cgroup2 with the memory
    controller delegated, and the kernel exposes memory PSI (host-wide and per cgroup)."""
    rc, output = run(
        """
        echo "pid1=$(cat /proc/1/comm)"
        echo "cgroup_fs=$(stat -f -c %T /sys/fs/cgroup)"
        echo "subtree=$(cat /sys/fs/cgroup/cgroup.subtree_control)"
        echo "psi=$(tr '\\n' ';' </proc/pressure/memory)"
        echo "slice_psi=$(head -n 1 /sys/fs/cgroup/system.slice/memory.pressure)"
        echo "systemd=$(systemctl --version | head -n 1)"
        echo "kernel=$(uname -r)"
        """,
        60,
        name="platform",
    )
    found = fields(output)
    assert rc == 0, output
    FACTS["guest"] = f"kernel {found['kernel']}, {found['systemd']}"
    FACTS["/proc/pressure/memory"] = found["psi"]
    assert found["pid1"] == "systemd"
    assert found["cgroup_fs"] == "cgroup2fs"
    assert "memory" in found["subtree"].split()
    assert found["psi"].startswith("some avg10="), output
    assert found["slice_psi"].startswith("some avg10="), output


def test_install_script_installs_the_unit(installed: Install, run: Run) -> None:
    """README's install path in a real system: venv at /opt/memmon, scripts/install_systemd.sh copies the unit and
    the 0600 environment file and reloads systemd, which then knows memmon.service from that file."""
    assert installed.rc == 0, installed.output
    assert "install /etc/systemd/system/memmon.service" in installed.output
    assert "run systemctl daemon-reload" in installed.output
    assert "is missing" not in installed.output, "the venv exists, so no note about /opt/memmon/bin/memmon"
    found = fields(installed.output)
    assert found["env_mode"] == "600"
    assert found["memmon_version"]
    rc, output = run(
        """
        cmp /mnt/share/repo/deploy/systemd/memmon.service /etc/systemd/system/memmon.service && echo same=1
        echo "load=$(prop memmon.service LoadState)"
        echo "fragment=$(prop memmon.service FragmentPath)"
        """,
        60,
        name="unit-known",
    )
    assert rc == 0, output
    found = fields(output)
    assert found.get("same") == "1", output
    assert found["load"] == "loaded"
    assert found["fragment"] == "/etc/systemd/system/memmon.service"


@pytest.fixture(scope="module")
def memmon_on_idle_leak(installed: Install, run: Run) -> dict[str, str]:
    """memmon.service started (defaults, ARGS="--unit leak.service") watching an idle leak.service."""
    assert installed.rc == 0, installed.output
    rc, output = run(
        """
        leak_reset
        memmon_setup "--unit leak.service"
        echo "started=1"
        """,
        240,
        name="memmon-idle",
    )
    assert rc == 0, output
    return fields(output)


def test_unit_is_ready_with_status_text_and_health(memmon_on_idle_leak: dict[str, str], run: Run) -> None:
    """Type=notify: systemd reports the unit active only after READY=1, StatusText carries memmon's STATUS= line
    (level, target, memory) and /health answers on 127.0.0.1:8080 inside the guest."""
    rc, output = run(
        """
        echo "active=$(systemctl is-active memmon.service)"
        echo "type=$(prop memmon.service Type)"
        echo "notify_access=$(prop memmon.service NotifyAccess)"
        echo "status_text=$(prop memmon.service StatusText)"
        echo "watchdog_usec=$(prop memmon.service WatchdogUSec)"
        echo "health=$(http_get http://127.0.0.1:8080/health | tr -d '\\n')"
        """,
        60,
        name="ready",
    )
    assert rc == 0, output
    found = fields(output)
    assert found["active"] == "active"
    assert found["type"] == "notify"
    assert found["notify_access"] == "main"
    assert found["watchdog_usec"] == "30s"
    health = json.loads(found["health"])
    assert health["monitoring_active"] is True
    status = re.fullmatch(
        r"(ok|warning|critical|emergency): (\S+) (\d+) MB( \(\d+% of [^)]+\))?", found["status_text"]
    )
    assert status, found["status_text"]
    assert status.group(2) == health["target"]
    assert "leak.service" in health["target"]


def test_cgroup_v2_readings_equal_the_raw_files(memmon_on_idle_leak: dict[str, str], run: Run) -> None:
    """For --unit leak.service memmon reads the unit's v2 cgroup: path, limit (memory.max), usage (memory.current),
    working set (usage - inactive_file) and oom_kill (memory.events) are those of the kernel's files."""
    rc, output = run(
        """
        cg="/sys/fs/cgroup$(prop leak.service ControlGroup)"
        raw() {
            echo "$1_current=$(cat "$cg/memory.current")"
            echo "$1_inactive_file=$(awk '$1 == "inactive_file" {print $2}' "$cg/memory.stat")"
        }
        echo "control_group=$(prop leak.service ControlGroup)"
        echo "max=$(cat "$cg/memory.max")"
        echo "oom_kill=$(awk '$1 == "oom_kill" {print $2}' "$cg/memory.events")"
        sleep 6  # one check interval (5 s): the sample served below is younger than the first raw reading
        raw before
        echo "memory=$(http_get http://127.0.0.1:8080/health/memory | tr -d '\\n')"
        echo "metrics_limit=$(metric memmon_cgroup_memory_limit_bytes)"
        raw after
        """,
        120,
        name="readings",
    )
    assert rc == 0, output
    found = fields(output)
    memory: dict[str, Any] = json.loads(found["memory"])
    cgroup = memory["cgroup"]
    assert cgroup is not None, memory
    assert cgroup["version"] == 2
    assert cgroup["path"].endswith(found["control_group"]), (cgroup["path"], found["control_group"])
    assert cgroup["limit_mb"] == round(int(found["max"]) / MIB, 1) == 256.0
    assert float(found["metrics_limit"]) == int(found["max"])
    assert cgroup["oom_kill_count"] == int(found["oom_kill"])
    currents = [int(found[f"{when}_current"]) / MIB for when in ("before", "after")]
    working = [
        (int(found[f"{when}_current"]) - int(found[f"{when}_inactive_file"])) / MIB
        for when in ("before", "after")
    ]
    assert min(currents) - TOLERANCE_MB <= cgroup["usage_mb"] <= max(currents) + TOLERANCE_MB, (
        cgroup,
        currents,
    )
    assert min(working) - TOLERANCE_MB <= cgroup["working_set_mb"] <= max(working) + TOLERANCE_MB, (
        cgroup,
        working,
    )
    assert memory["effective_limit_mb"] == 256.0
    assert memory["limit_source"] != "host", memory


def test_watchdog_restarts_a_hung_memmon(memmon_on_idle_leak: dict[str, str], run: Run) -> None:
    """WatchdogSec=30s: a memmon that stops sending WATCHDOG=1 (SIGSTOP) is killed and restarted by systemd, with
    a new main PID, NRestarts one higher, and READY again."""
    rc, output = run(
        """
        pid0="$(prop memmon.service MainPID)"
        n0="$(prop memmon.service NRestarts)"
        echo "pid_before=$pid0"
        echo "restarts_before=$n0"
        kill -STOP "$pid0"
        start=$SECONDS
        restarted() {
            [ "$(prop memmon.service NRestarts)" -gt "$n0" ] && [ "$(systemctl is-active memmon.service)" = active ]
        }
        wait_until 240 restarted || echo "timeout=1"
        echo "seconds=$((SECONDS - start))"
        echo "pid_after=$(prop memmon.service MainPID)"
        echo "restarts_after=$(prop memmon.service NRestarts)"
        echo "active=$(systemctl is-active memmon.service)"
        wait_until 60 health_ok && echo "health=1"
        journalctl -u memmon.service -n 15 --no-pager -o cat
        """,
        330,
        name="watchdog",
    )
    assert rc == 0, output
    found = fields(output)
    assert "timeout" not in found, output
    assert int(found["restarts_after"]) == int(found["restarts_before"]) + 1, output
    assert found["pid_after"] != found["pid_before"]
    assert found["active"] == "active"
    assert found.get("health") == "1", output
    assert "Watchdog timeout" in output or "watchdog" in output.lower(), output


def _graceful(found: dict[str, str], output: str, action: str) -> None:
    """The leak ended without the kernel OOM killer, and memmon's restart action did it."""
    assert "leak_timeout" not in found, f"the leak was neither restarted nor stopped:\n{output}"
    assert found["oom_kills"] == "0", f"the kernel OOM killer acted:\n{output}"
    assert found["result"] != "oom-kill", output
    actions = [a for a in json.loads(found["actions"]) if a["action"] == action]
    assert actions, f"memmon did not run {action}:\n{output}"
    assert actions[-1]["success"] is True, actions[-1]


def test_systemd_strategy_restarts_the_leaking_unit_before_the_oom_killer(
    installed: Install, run: Run
) -> None:
    """strategy systemd, emergency at 70 % of a 256 MiB unit leaking 20 MB/s: memmon runs `systemctl try-restart`
    in time; the unit gets a new invocation, no OOM kill anywhere in the VM, and the new instance runs."""
    rc, output = run(
        """
        leak_reset
        memmon_setup "--unit leak.service" restart-systemd.json
        sleep 6
        leak_run 20 90
        """,
        400,
        name="systemd-strategy",
    )
    assert rc == 0, output
    found = fields(output)
    _graceful(found, output, "restart:systemd")
    assert found["invocation_after"] != found["invocation_before"], output
    assert found["pid_after"] != found["pid_before"]
    assert found["active_state"] == "active", output
    assert found["unit_oom_kill"] == "0", output


def test_a_leak_after_a_manual_restart_is_still_caught(installed: Install, run: Run) -> None:
    """After `systemctl restart leak.service` by hand (systemd removes the unit's cgroup and creates a new one),
    memmon still restarts the next leak gracefully: its watch follows the new cgroup."""
    rc, output = run(
        """
        leak_reset
        memmon_setup "--unit leak.service" restart-systemd.json
        sleep 6
        old_inode="$(cg_inode leak.service)"
        systemctl restart leak.service
        wait_until 30 test -d /run/leak
        [ "$(cg_inode leak.service)" != "$old_inode" ] && echo "cgroup_recreated=1"
        sleep 12  # two of memmon's checks on the new cgroup
        leak_run 20 90
        """,
        400,
        name="after-manual-restart",
    )
    assert rc == 0, output
    found = fields(output)
    assert found.get("cgroup_recreated") == "1", output
    _graceful(found, output, "restart:systemd")
    assert found["invocation_after"] != found["invocation_before"], output
    assert found["active_state"] == "active", output


def test_oom_race_at_full_speed_with_read_only_cgroups(installed: Install, run: Run) -> None:
    """memmon.service with ProtectControlGroups=yes (read-only /sys/fs/cgroup, as in a container: no PSI trigger
    can be armed), shipped 5 s checks, strategy signal, emergency at 80 %: a leak at the fastest rate the VM allows
    into a 256 MiB unit still ends with memmon's SIGTERM, not the OOM killer."""
    rc, output = run(
        """
        trap 'rm -rf /etc/systemd/system/memmon.service.d; systemctl daemon-reload' EXIT
        mkdir -p /etc/systemd/system/memmon.service.d
        printf '[Service]\\nProtectControlGroups=yes\\n' >/etc/systemd/system/memmon.service.d/protect-cgroups.conf
        leak_reset
        memmon_setup "--unit leak.service" race-signal.json
        echo "protect_control_groups=$(prop memmon.service ProtectControlGroups)"
        echo "degraded=$(health_field degraded)"
        sleep 6
        leak_run 0 60
        """,
        400,
        name="race-read-only-cgroups",
    )
    assert rc == 0, output
    found = fields(output)
    assert found["protect_control_groups"] == "yes"
    _graceful(found, output, "restart:signal")
    assert found["active_state"] != "active", "SIGTERM stopped the unit (Restart=no)"


def test_memory_high_guard_throttles_and_psi_trigger_fires(installed: Install, run: Run) -> None:
    """memory.high guard on (emergency 70 %, guard 72 %) and no restart strategy: a leak at the VM's full speed is
    throttled at the guard instead of reaching MemoryMax (memory.events counts high, no OOM kill), the stall wakes
    memmon through its PSI trigger and its memory.events watch (counted per kind), and memory.high is put back to
    max when memmon stops. The one place PSI is tested for real (User-Mode Linux has none)."""
    rc, output = run(
        """
        leak_reset
        memmon_setup "--unit leak.service" guard-psi.json
        sleep 6
        cg="/sys/fs/cgroup$(prop leak.service ControlGroup)"
        echo "degraded=$(health_field degraded)"
        echo "memory_high=$(cat "$cg/memory.high")"
        oom0="$(vm_oom_kills)"
        leak_go 0
        sleep 25
        events() {
            http_get http://127.0.0.1:8080/metrics |
                awk -v k="memmon_memory_events_total{kind=\\"$1\\"}" '$1 == k {print $2}'
        }
        echo "psi_events=$(events psi)"
        echo "memory_events_events=$(events memory.events)"
        echo "high_events=$(cg_event leak.service high)"
        echo "usage=$(cat "$cg/memory.current")"
        echo "pressure=$(head -n 1 "$cg/memory.pressure")"
        echo "leak_state=$(prop leak.service ActiveState)"
        echo "oom_kills=$(($(vm_oom_kills) - oom0))"
        # Stop the leaker first: once memory.high is max again it would run into MemoryMax at once, be OOM-killed
        # (Restart=no) and take its cgroup along before memory.high is read (seen once in CI). A throttled task
        # takes the signal only on its way back to user space, hence the wait for state T.
        systemctl kill -s SIGSTOP leak.service
        stopped() { [ "$(awk '{print $3}' "/proc/$(prop leak.service MainPID)/stat")" = T ]; }
        wait_until 20 stopped || echo "leak_not_stopped=1"
        systemctl stop memmon.service
        echo "memory_high_after_stop=$(cat "$cg/memory.high")"
        systemctl stop leak.service
        """,
        300,
        name="guard-psi",
    )
    assert rc == 0, output
    found = fields(output)
    assert found["degraded"] == "[]", output  # inotify, the PSI trigger and the guard all armed
    assert 0.71 * 256 * MIB < int(found["memory_high"]) < 0.73 * 256 * MIB, output
    assert int(found["high_events"]) > 0 and found["oom_kills"] == "0", output
    assert found["leak_state"] == "active" and int(found["usage"]) < 256 * MIB, output
    assert float(found["psi_events"] or 0) > 0, output
    assert float(found["memory_events_events"] or 0) > 0, output
    assert found["memory_high_after_stop"] == "max", output


# One agent, three units: ARGS for /etc/default/memmon and the config file (kernel_tests/configs/).
THREE_UNITS = {
    # The README's `targets` list: each unit with its own restart strategy (systemd), global thresholds.
    "targets-list": ("", "three-units.json"),
    # Three --unit flags and the strategy in the global auto_response section.
    "unit-flags": (
        "--unit leak@a.service --unit leak@b.service --unit leak@c.service",
        "restart-systemd-global.json",
    ),
    # A unit glob (re-resolved every 5 s; each match is restarted by its own unit name) and the strategy in the global
    # auto_response section.
    "unit-glob": ("--unit leak@*.service", "restart-systemd-global.json"),
}


@pytest.mark.parametrize("setup", list(THREE_UNITS))
def test_one_memmon_restarts_the_one_leaking_unit_of_three(installed: Install, run: Run, setup: str) -> None:
    """One memmon.service watching three units of a template (a `targets` list, three --unit flags, or a unit glob;
    strategy systemd, emergency at 70 %): a 10 MB/s leak in leak@a.service alerts and restarts that unit alone (new
    invocation, no OOM kill); leak@b and leak@c keep their invocation and main PID, stay active and ok, with no
    action and no alert, and /health/targets lists all three and the host."""
    args, config = THREE_UNITS[setup]
    names = {i: f"cgroup:leak@{i}.service" for i in "abc"}
    rc, output = run(
        f"""
        leaks_reset a b c
        memmon_setup "{args}" {config} || exit 1
        """
        + """
        sleep 8  # every target checked at least once (their checks are spread over the 5 s interval)
        for i in a b c; do unit_facts "leak@$i.service" "before_$i"; done
        echo "targets_before=$(http_get http://127.0.0.1:8080/health/targets | tr -d '\\n')"
        oom0="$(vm_oom_kills)"
        since="$(date +%s)"
        inv0="$(prop leak@a.service InvocationID)"
        leak_at_go a 10
        start=$SECONDS
        wait_until 120 unit_ended leak@a.service "$inv0" || echo "leak_timeout=1"
        echo "leak_seconds=$((SECONDS - start))"
        wait_until 30 test "$(prop leak@a.service ActiveState)" != activating || true
        sleep 6  # every target checked again after the restart; memmon has recorded the action's result
        for i in a b c; do unit_facts "leak@$i.service" "after_$i"; done
        echo "oom_kills=$(($(vm_oom_kills) - oom0))"
        echo "actions=$(memmon_actions)"
        echo "targets=$(http_get http://127.0.0.1:8080/health/targets | tr -d '\\n')"
        echo "alerts=$(http_get 'http://127.0.0.1:8080/health/alerts?hours=1' | tr -d '\\n')"
        echo "--- the leaker's journal (its rate)"
        journalctl -u leak@a.service --since "@$since" --no-pager -o cat | grep -E "^(leaking at|kept )" | tail -n 3
        echo "--- memmon's journal since the leak started"
        journalctl -u memmon --since "@$since" --no-pager -o cat | tail -n 40
        echo "--- kernel OOM messages since then"
        journalctl -k --since "@$since" --no-pager -o cat | grep -iE "oom|killed process" | tail -n 10
        systemctl stop leak@a.service leak@b.service leak@c.service
        """,
        240,
        name=f"three-units-{setup}",
    )
    assert rc == 0, output
    found = fields(output)
    assert "leak_timeout" not in found, f"leak@a.service was neither restarted nor stopped:\n{output}"
    assert found["oom_kills"] == "0", f"the kernel OOM killer acted:\n{output}"
    before: dict[str, Any] = {t["name"]: t for t in json.loads(found["targets_before"])["targets"]}
    assert set(before) == {*names.values(), "host"}, before
    assert all(before[name]["status"] == "ok" for name in names.values()), before

    # The leaking unit: restarted by memmon's systemd strategy (a new invocation), not killed by the kernel.
    assert found["invocation_after_a"] != found["invocation_before_a"], output
    assert found["pid_after_a"] != found["pid_before_a"], output
    assert found["active_after_a"] == "active", output
    assert found["result_after_a"] != "oom-kill", output
    actions: list[dict[str, Any]] = json.loads(found["actions"])
    restarts = [a for a in actions if a.get("target") == names["a"] and a["action"] == "restart:systemd"]
    assert restarts, f"memmon did not restart leak@a.service:\n{output}"
    assert restarts[-1]["success"] is True, restarts[-1]
    assert restarts[-1]["detail"]["unit"] == "leak@a.service", restarts[
        -1
    ]  # a glob's match: its own unit name
    alerts: list[dict[str, Any]] = json.loads(found["alerts"])["alerts"]
    assert any(a["target"] == names["a"] for a in alerts), f"no alert for {names['a']}:\n{output}"

    # The two others: untouched (same invocation and main PID), ok, no action, no alert.
    targets: dict[str, Any] = {t["name"]: t for t in json.loads(found["targets"])["targets"]}
    assert set(targets) == {*names.values(), "host"}, targets
    assert targets[names["a"]]["last_action"]["action"] == "restart:systemd", targets[names["a"]]
    assert targets["host"]["last_action"] is None, targets["host"]
    for i in "bc":
        assert found[f"invocation_after_{i}"] == found[f"invocation_before_{i}"], (i, output)
        assert found[f"pid_after_{i}"] == found[f"pid_before_{i}"], (i, output)
        assert found[f"active_after_{i}"] == "active", (i, output)
        assert targets[names[i]]["status"] == "ok", targets[names[i]]
        assert targets[names[i]]["last_action"] is None, targets[names[i]]
        assert targets[names[i]]["active_alerts"] == [], targets[names[i]]
        assert not [a for a in actions if a.get("target") == names[i]], (i, actions)
        assert not [a for a in alerts if a["target"] == names[i]], (i, alerts)
