"""Reading OOM kills from the kernel log: real kills in a real v1 memory cgroup read from /dev/kmsg, the records'
format, and what happens when the log cannot be read."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from memmon.sampling.kernel_log import KMSG, KernelLog, OomKill, parse_record, parse_summary
from tests.cgroups import v1_memory_cgroup

# Moves itself into the cgroup given as argv[1], then allocates until the OOM killer ends it.
LEAKER = r"""
import sys
with open(sys.argv[1] + "/cgroup.procs", "w") as procs:
    procs.write("0")
held = []
while True:
    held.append(b"\x01" * (1 << 20))
"""


def oom_killed_child(cgroup: Path) -> int:
    """Runs a child that leaks in ``cgroup`` until the kernel kills it; its pid."""
    child = subprocess.Popen([sys.executable, "-c", LEAKER, str(cgroup)])
    assert child.wait(60) == -9, "the child should have been OOM-killed (SIGKILL)"
    return child.pid


@pytest.fixture
def small_cgroup() -> Iterator[Path]:
    """A fresh v1 memory cgroup limited to 48 MiB (skips where one cannot be made)."""
    with v1_memory_cgroup(48 * 2**20, prefix="memmon-kmsg") as directory:
        yield directory


def kills_of(log: KernelLog, pids: set[int]) -> list[OomKill]:
    """The kills ``log`` read whose victims are ``pids`` (other tests on this machine may OOM-kill too)."""
    return [kill for kill in log.read_oom_kills() if kill.pid in pids]


def memcg_logged(kill: OomKill, cgroup: Path) -> bool:
    """The kill names ``cgroup``, or names none: the kernel rate-limits its header and ``oom-kill:`` summary
    (mm/oom_kill.c ``oom_kill_process``: ``__ratelimit(&oom_rs)``, 10 per 5 s) but never ``Killed process``."""
    name = "/" + cgroup.name
    return (kill.memcg, kill.oom_memcg) in ((name, name), (None, None))


def kmsg_readable() -> KernelLog:
    log = KernelLog()
    if not log.available:
        pytest.skip(f"{log.reason}")
    return log


def test_a_real_oom_kill_is_read_with_victim_and_cgroup(small_cgroup: Path) -> None:
    """A child OOM-killed in a 48 MiB v1 cgroup is read back from /dev/kmsg: its pid, its comm, its anon-rss
    (tens of MiB) and the cgroup's hierarchy path as task_memcg and oom_memcg (unless the kernel rate-limited
    that summary)."""
    log = kmsg_readable()
    try:
        pid = oom_killed_child(small_cgroup)
        (kill,) = kills_of(log, {pid})
    finally:
        log.close()
    assert kill.cgroup_oom and memcg_logged(kill, small_cgroup)
    assert kill.name == Path(sys.executable).name[:15]  # comm: the name exec() was given
    # anon-rss is the victim's own counter, not the cgroup's charge: 6.18 logged about 50 MiB at a 48 MiB limit here.
    assert kill.anon_rss_bytes is not None and 20 * 2**20 < kill.anon_rss_bytes < 96 * 2**20
    assert kill.usec_since_boot > 0


def test_only_kills_after_opening_are_read(small_cgroup: Path) -> None:
    """The log is read from its end at opening: a reader opened after the first kill sees only the second,
    one opened before sees both, and a second read returns nothing new."""
    early = kmsg_readable()
    try:
        first = oom_killed_child(small_cgroup)
        late = kmsg_readable()
        try:
            second = oom_killed_child(small_cgroup)
            assert [kill.pid for kill in kills_of(late, {first, second})] == [second]
            assert kills_of(late, {first, second}) == []
        finally:
            late.close()
        assert [kill.pid for kill in kills_of(early, {first, second})] == [first, second]
    finally:
        early.close()


def test_a_missing_log_is_reported_once_at_debug_level(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A kernel log that cannot be opened reads as no kills, says why in ``reason`` and logs it once (debug)."""
    log = KernelLog(tmp_path / "no-kmsg")
    with caplog.at_level(logging.DEBUG, logger="memmon.sampling.kernel_log"):
        assert log.read_oom_kills() == [] and log.read_oom_kills() == []
        assert not log.available
    assert log.reason is not None and "no-kmsg" in log.reason
    assert len([r for r in caplog.records if r.name == "memmon.sampling.kernel_log"]) == 1


def test_without_cap_syslog_the_log_is_unavailable_and_says_why() -> None:
    """Under kernel.dmesg_restrict = 1 a process without CAP_SYSLOG (nobody) cannot open /dev/kmsg: it reads no
    kills and names the missing capability."""
    if os.geteuid() != 0:
        pytest.skip("dropping to nobody needs root")
    if Path("/proc/sys/kernel/dmesg_restrict").read_text().strip() != "1":
        pytest.skip("kernel.dmesg_restrict is 0 here: anyone may read the kernel log")
    script = (
        "from memmon.sampling.kernel_log import KernelLog\n"
        "log = KernelLog()\n"
        "print(log.read_oom_kills(), log.available)\n"
        "print(log.reason)\n"
    )
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "agent")},
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    first, reason = result.stdout.splitlines()
    assert first == "[] False"
    assert str(KMSG) in reason and "CAP_SYSLOG" in reason


def test_records_are_parsed_as_the_kernel_writes_them(tmp_path: Path) -> None:
    """A system-wide OOM, a record with extra prefix fields (caller id), continuation lines and a summary that
    belongs to another pid are parsed as the kernel means them; other records are ignored."""
    path = tmp_path / "kmsg"
    path.write_text("6,1,1,-;an old record, before opening\n")
    log = KernelLog(path)
    assert log.read_oom_kills() == []  # opened at the end: the old record is not read
    with path.open("a") as kmsg:
        kmsg.write(
            "4,2,100,-;app invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n"
            "6,3,101,-,caller=T42;oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,"
            "global_oom,task_memcg=/system.slice/app.service,task=gunicorn,pid=4242,uid=33\n"
            " SUBSYSTEM=memory\n"
            "3,4,102,-,caller=T42;Out of memory: Killed process 4242 (gunicorn: work) total-vm:900000kB, "
            "anon-rss:409600kB, file-rss:0kB, shmem-rss:0kB, UID:33 pgtables:1000kB oom_score_adj:0\n"
            "6,5,200,-;oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/a,task_memcg=/a,task=x,pid=1,uid=0\n"
            "3,6,201,-;Memory cgroup out of memory: Killed process 7 (y) total-vm:10kB, anon-rss:4kB, "
            "file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB oom_score_adj:0\n"
        )
    first, second = log.read_oom_kills()
    assert (first.pid, first.name, first.memcg, first.oom_memcg, first.cgroup_oom) == (
        4242,
        "gunicorn: work",
        "/system.slice/app.service",
        None,
        False,
    )
    assert (first.anon_rss_bytes, first.total_vm_bytes, first.usec_since_boot) == (
        409600 * 1024,
        900000 * 1024,
        102,
    )
    assert (second.pid, second.memcg, second.cgroup_oom) == (7, None, True)  # the summary was pid 1's
    log.close()


def test_record_and_summary_parsers_reject_what_is_not_theirs() -> None:
    """A continuation line or a line without a prefix is no record; only ``oom-kill:`` lines are summaries."""
    assert parse_record(" SUBSYSTEM=memory") is None
    assert parse_record("no prefix here") is None
    assert parse_record("6,1,12,-;hello\n") == (12, "hello")
    assert parse_summary("oom-kill:constraint=CONSTRAINT_NONE,pid=3") == {
        "constraint": "CONSTRAINT_NONE",
        "pid": "3",
    }
    assert parse_summary("Out of memory: Killed process 3 (x)") is None
