"""An observed kernel OOM kill is an alert of its own: real kills in a real v1 memory cgroup, with the victim from
/dev/kmsg or guessed from the vanished process, and the alert's life (count, quiet period, recreated cgroups)."""

from __future__ import annotations

import contextlib
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from memmon.evaluation.oom_kills import COMPONENT, OomKillWatch
from memmon.model import (
    MB,
    CgroupSample,
    Evaluation,
    Level,
    MemorySample,
    ProcessMemory,
    ProcessSample,
    TargetKind,
)
from memmon.sampling.cgroup import CgroupSampler, cgroup_at
from memmon.sampling.kernel_log import KernelLog
from tests.cgroups import v1_memory_cgroup

# Moves itself into the cgroup given as argv[1], holds 8 MiB and says so, then leaks on a line from stdin until the
# OOM killer ends it.
VICTIM = r"""
import sys
with open(sys.argv[1] + "/cgroup.procs", "w") as procs:
    procs.write("0")
held = [b"\x01" * (8 << 20)]
print("ready", flush=True)
sys.stdin.readline()
while True:
    held.append(b"\x01" * (1 << 20))
"""


def evaluation_of(sample: MemorySample) -> Evaluation:
    return Evaluation(sample, Level.OK, Level.OK, (), (), ())


def sample_of(
    at: float,
    oom_kills: int | None,
    processes: list[tuple[int, str, float]],
    *,
    path: str = "/app",
    with_cgroup: bool = True,
) -> MemorySample:
    """A cgroup-target sample at ``at`` with the OOM-kill counter and the (pid, name, MiB) processes given."""
    procs = tuple(ProcessMemory(pid, name, int(mib * MB), int(mib * MB)) for pid, name, mib in processes)
    rss = sum(p.rss_bytes for p in procs)
    cgroup = CgroupSample(path, 1, rss, 512 * MB, 0, rss, oom_kills, 0) if with_cgroup else None
    return MemorySample(
        timestamp=at,
        monotonic=at,
        target=f"cgroup:{path}",
        target_kind=TargetKind.CGROUP,
        target_bytes=rss,
        effective_limit_bytes=512 * MB,
        limit_source="cgroup",
        process=ProcessSample(procs, rss, rss),
        cgroup=cgroup,
        host=None,
        pressure=None,
    )


@pytest.fixture
def kmsg_file(tmp_path: Path) -> Path:
    """A file standing in for /dev/kmsg (records appended by the test are read like the device's)."""
    path = tmp_path / "kmsg"
    path.write_text("")
    return path


def log_kill(kmsg: Path, pid: int, name: str, memcg: str, anon_kib: int = 102400) -> None:
    """Append the two records the kernel writes for a memory cgroup OOM kill."""
    with kmsg.open("a") as out:
        out.write(
            f"6,1,1,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
            f"oom_memcg={memcg},task_memcg={memcg},task={name},pid={pid},uid=0\n"
            f"3,2,2,-;Memory cgroup out of memory: Killed process {pid} ({name}) total-vm:1kB, "
            f"anon-rss:{anon_kib}kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:0\n"
        )


def watch(kmsg: Path, quiet: float = 300.0) -> OomKillWatch:
    log = KernelLog(kmsg)
    assert log.available
    return OomKillWatch(quiet_seconds=quiet, kernel_log=log, hostname="h1")


# -- real kills ----------------------------------------------------------------------------------------------------


class Victim:
    """A child in the cgroup holding 8 MiB until told to leak."""

    def __init__(self, cgroup: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", VICTIM, str(cgroup)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert select.select([self.proc.stdout], [], [], 20)[0], "child did not start"
        assert self.proc.stdout.readline().strip() == "ready"

    def leak_until_killed(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.wait(60) == -9, "the OOM killer should have killed the child"


@pytest.fixture
def cgroup_with_victim() -> Iterator[tuple[Path, Victim]]:
    """A 48 MiB v1 memory cgroup (skips where one cannot be made) with a victim child in it."""
    with v1_memory_cgroup(48 * MB, prefix="memmon-oomwatch") as directory:
        victim = Victim(directory)
        try:
            yield directory, victim
        finally:
            with contextlib.suppress(ProcessLookupError):
                victim.proc.kill()
            victim.proc.wait(10)


def real_sample(sampler: CgroupSampler, directory: Path) -> MemorySample:
    """The cgroup as memmon's sampler reads it, with its processes' RSS from /proc."""
    cgroup = sampler.sample()
    processes = []
    for pid in (directory / "cgroup.procs").read_text().split():
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(int(pid))
            info = process.memory_info()
            processes.append(ProcessMemory(process.pid, process.name(), info.rss, info.vms))
    rss = sum(p.rss_bytes for p in processes)
    assert cgroup.limit_bytes is not None
    return MemorySample(
        timestamp=time.time(),
        monotonic=time.monotonic(),
        target=f"cgroup:{cgroup.path}",
        target_kind=TargetKind.CGROUP,
        target_bytes=cgroup.working_set_bytes,
        effective_limit_bytes=cgroup.limit_bytes,
        limit_source="cgroup",
        process=ProcessSample(tuple(processes), rss, rss),
        cgroup=cgroup,
        host=None,
        pressure=None,
    )


def test_a_real_oom_kill_fires_one_emergency_alert_naming_the_victim(
    cgroup_with_victim: tuple[Path, Victim],
) -> None:
    """A child OOM-killed in a real cgroup between two checks fires one emergency ``oom_kill`` alert whose
    message names the victim's pid and comm as the kernel logged them."""
    directory, victim = cgroup_with_victim
    log = KernelLog()
    if not log.available:
        pytest.skip(f"{log.reason}")
    oom = OomKillWatch(kernel_log=log, hostname="h1")
    sampler = CgroupSampler(cgroup_at(directory))
    try:
        assert oom.on_evaluation(evaluation_of(real_sample(sampler, directory))) == ()
        victim.leak_until_killed()
        (alert,) = oom.on_evaluation(evaluation_of(real_sample(sampler, directory)))
    finally:
        log.close()
    pid = victim.proc.pid
    assert (alert.component, alert.severity, alert.state) == (COMPONENT, Level.EMERGENCY, "firing")
    assert alert.message.startswith(f"OOM KILL: the kernel's OOM killer killed pid {pid} (python")
    assert f"in cgroup /{directory.name}" in alert.message
    assert alert.metadata["oom_kills"] == 1 and alert.metadata["alertname"] == "MemmonOomKill"
    (logged,) = alert.metadata["victims"]  # type: ignore[misc]
    assert logged["pid"] == pid and logged["source"] == "kernel_log"
    assert oom.active_alerts() == (alert,)


def test_without_the_kernel_log_the_vanished_process_is_named_as_probable_victim(
    cgroup_with_victim: tuple[Path, Victim], tmp_path: Path
) -> None:
    """With the kernel log unreadable, a real OOM kill still fires, naming the process that vanished since the
    previous check (largest RSS) as the probable victim."""
    directory, victim = cgroup_with_victim
    oom = OomKillWatch(kernel_log=KernelLog(tmp_path / "unreadable"), hostname="h1")
    sampler = CgroupSampler(cgroup_at(directory))
    before = real_sample(sampler, directory)
    assert before.process is not None and [p.pid for p in before.process.processes] == [victim.proc.pid]
    rss_mb = round(before.process.processes[0].rss_bytes / MB, 1)
    assert oom.on_evaluation(evaluation_of(before)) == ()
    victim.leak_until_killed()
    (alert,) = oom.on_evaluation(evaluation_of(real_sample(sampler, directory)))
    assert alert.message.endswith(
        f"killed probably pid {victim.proc.pid} (python, {rss_mb} MiB), gone since the previous check "
        f"in cgroup /{directory.name}"
    )


# -- the alert's life ----------------------------------------------------------------------------------------------


def test_further_kills_update_the_alert_without_new_transitions_then_it_resolves(kmsg_file: Path) -> None:
    """Kills while the alert fires raise its count and name the latest victim in place (no new transition); it
    resolves once quiet_seconds pass after the last kill, saying how many kills there were."""
    oom = watch(kmsg_file, quiet=60.0)
    app = [(10, "gunicorn", 100.0), (11, "gunicorn", 300.0), (12, "gunicorn", 120.0)]
    assert oom.on_evaluation(evaluation_of(sample_of(0.0, 5, app))) == ()  # 5 kills before memmon: a baseline
    log_kill(kmsg_file, 11, "gunicorn", "/app")
    (fired,) = oom.on_evaluation(evaluation_of(sample_of(10.0, 6, [app[0], app[2]])))
    assert (
        fired.message
        == "OOM KILL: the kernel's OOM killer killed pid 11 (gunicorn, 100.0 MiB anon-rss) in cgroup /app"
    )
    log_kill(kmsg_file, 12, "gunicorn", "/app")
    log_kill(kmsg_file, 10, "gunicorn", "/app")
    assert oom.on_evaluation(evaluation_of(sample_of(40.0, 8, []))) == ()
    (updated,) = oom.active_alerts()
    assert updated.id == fired.id and updated.metadata["oom_kills"] == 3
    assert "3 kernel OOM kills in cgroup /app since" in updated.message
    assert updated.message.endswith("the last killed pid 10 (gunicorn, 100.0 MiB anon-rss)")
    assert oom.on_evaluation(evaluation_of(sample_of(99.0, 8, []))) == ()  # 59 s after the last kill
    (resolved,) = oom.on_evaluation(evaluation_of(sample_of(100.0, 8, [])))
    assert (resolved.id, resolved.state, resolved.resolved_at) == (fired.id, "resolved", 100.0)
    assert resolved.message.startswith("RESOLVED: oom_kill: no OOM kill for 60 s (3 in all")
    assert oom.active_alerts() == ()
    log_kill(kmsg_file, 13, "gunicorn", "/app")
    (again,) = oom.on_evaluation(evaluation_of(sample_of(110.0, 9, [])))
    assert again.state == "firing" and again.id != fired.id and again.metadata["oom_kills"] == 1


def test_a_counter_that_goes_down_or_another_cgroup_is_no_kill(kmsg_file: Path) -> None:
    """A recreated cgroup (counter back to 0) or a different cgroup path sets a new baseline; only a rise after
    it is a kill."""
    oom = watch(kmsg_file)
    procs = [(10, "app", 50.0)]
    assert oom.on_evaluation(evaluation_of(sample_of(0.0, 4, procs))) == ()
    assert oom.on_evaluation(evaluation_of(sample_of(1.0, 0, procs))) == ()  # recreated: counter restarted
    assert oom.on_evaluation(evaluation_of(sample_of(2.0, 7, procs, path="/other"))) == ()  # another cgroup
    assert oom.on_evaluation(evaluation_of(sample_of(3.0, 7, procs, path="/other"))) == ()
    (fired,) = oom.on_evaluation(evaluation_of(sample_of(4.0, 8, [], path="/other")))
    assert "probably pid 10 (app, 50.0 MiB), gone since the previous check" in fired.message


def test_a_kill_logged_for_another_cgroup_is_not_taken_for_the_victim(kmsg_file: Path) -> None:
    """A kill the kernel logged in another cgroup is ignored: the victim is guessed from the vanished process."""
    oom = watch(kmsg_file)
    oom.on_evaluation(evaluation_of(sample_of(0.0, 0, [(10, "app", 80.0), (20, "app", 20.0)])))
    log_kill(kmsg_file, 999, "elsewhere", "/someone-else")
    (fired,) = oom.on_evaluation(evaluation_of(sample_of(1.0, 1, [])))
    assert "probably pid 10 (app, 80.0 MiB)" in fired.message and "999" not in fired.message


def test_a_kernel_record_read_one_check_late_names_the_real_victim_silently(kmsg_file: Path) -> None:
    """When the counter rose before the kernel's record could be read, the guessed victim is replaced by the
    logged one at the next check, without a new transition."""
    oom = watch(kmsg_file)
    oom.on_evaluation(evaluation_of(sample_of(0.0, 0, [(10, "app", 80.0), (20, "app", 90.0)])))
    (fired,) = oom.on_evaluation(evaluation_of(sample_of(1.0, 1, [(10, "app", 80.0)])))
    assert "probably pid 20" in fired.message
    log_kill(kmsg_file, 20, "app", "/app", anon_kib=90 * 1024)
    assert oom.on_evaluation(evaluation_of(sample_of(2.0, 1, [(10, "app", 80.0)]))) == ()
    (alert,) = oom.active_alerts()
    assert alert.id == fired.id and alert.message.endswith(
        "killed pid 20 (app, 90.0 MiB anon-rss) in cgroup /app"
    )


def test_without_a_counter_a_logged_kill_of_a_watched_process_counts(kmsg_file: Path) -> None:
    """Without the cgroup counter (no cgroup, or a kernel before 4.13) a kill the kernel logged for a watched pid
    fires; one of a pid memmon does not watch does not."""
    oom = watch(kmsg_file)
    procs = [(10, "app", 80.0)]
    oom.on_evaluation(evaluation_of(sample_of(0.0, None, procs, with_cgroup=False)))
    log_kill(kmsg_file, 77, "other", "/x")
    assert oom.on_evaluation(evaluation_of(sample_of(1.0, None, procs, with_cgroup=False))) == ()
    log_kill(kmsg_file, 10, "app", "/x")
    (fired,) = oom.on_evaluation(evaluation_of(sample_of(2.0, None, [], with_cgroup=False)))
    assert fired.message.startswith("OOM KILL: the kernel's OOM killer killed pid 10 (app")
    assert fired.target == "cgroup:/app" and "in cgroup:/app" in fired.message


def test_restore_resumes_the_firing_alert_until_its_quiet_period_ends(kmsg_file: Path) -> None:
    """A firing oom_kill alert restored after a restart keeps firing (no new notification) and resolves
    quiet_seconds after its last kill; other alerts are handed back."""
    first = watch(kmsg_file, quiet=30.0)
    first.on_evaluation(evaluation_of(sample_of(0.0, 0, [(10, "app", 80.0)])))
    (fired,) = first.on_evaluation(evaluation_of(sample_of(5.0, 1, [])))
    other = fired.__class__(
        **{**{f: getattr(fired, f) for f in fired.__slots__}, "component": "process_memory"}
    )
    resumed = watch(kmsg_file, quiet=30.0)
    assert resumed.restore([fired, other]) == [other]
    assert resumed.active_alerts() == (fired,)
    assert resumed.on_evaluation(evaluation_of(sample_of(30.0, 1, []))) == ()
    (resolved,) = resumed.on_evaluation(evaluation_of(sample_of(35.0, 1, [])))
    assert (resolved.id, resolved.state) == (fired.id, "resolved")


def test_close_releases_the_kernel_log_and_a_later_check_reopens_it_at_its_end(kmsg_file: Path) -> None:
    """close() releases the log; kills logged while closed are not read, later ones are."""
    oom = watch(kmsg_file)
    oom.on_evaluation(evaluation_of(sample_of(0.0, 0, [(10, "app", 80.0), (11, "app", 20.0)])))
    oom.close()
    log_kill(kmsg_file, 10, "app", "/app")
    (fired,) = oom.on_evaluation(evaluation_of(sample_of(1.0, 1, [(11, "app", 20.0)])))
    assert "probably pid 10" in fired.message  # the record written while closed is behind the new end
    log_kill(kmsg_file, 11, "app", "/app")
    oom.on_evaluation(evaluation_of(sample_of(2.0, 2, [])))
    assert oom.active_alerts()[0].message.endswith("the last killed pid 11 (app, 100.0 MiB anon-rss)")


def test_quiet_seconds_must_be_positive() -> None:
    """A quiet period of zero or less is refused at construction."""
    with pytest.raises(ValueError, match="quiet_seconds"):
        OomKillWatch(quiet_seconds=0)


def test_a_record_read_before_the_counter_rose_names_the_victim_at_the_next_check(kmsg_file: Path) -> None:
    """The sample's counter can predate a kill whose record the same check already read (the log is read after
    sampling): the record waits, and the check whose counter shows the kill names that victim."""
    oom = watch(kmsg_file)
    oom.on_evaluation(evaluation_of(sample_of(1.0, 0, [(41, "gunicorn", 100.0), (42, "gunicorn", 200.0)])))
    log_kill(kmsg_file, 42, "gunicorn", "/app", anon_kib=200 * 1024)
    assert (
        oom.on_evaluation(
            evaluation_of(sample_of(2.0, 0, [(41, "gunicorn", 100.0), (42, "gunicorn", 200.0)]))
        )
        == ()
    )
    (alert,) = oom.on_evaluation(
        evaluation_of(sample_of(3.0, 1, [(41, "gunicorn", 100.0), (43, "gunicorn", 30.0)]))
    )
    assert alert.metadata["victims"] == [
        {"pid": 42, "name": "gunicorn", "rss_mb": 200.0, "source": "kernel_log", "memcg": "/app"}
    ]
    assert "killed pid 42 (gunicorn, 200.0 MiB anon-rss)" in alert.message
