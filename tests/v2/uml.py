"""Run a shell job inside User-Mode Linux: a real cgroup v2 kernel (Debian's ``user-mode-linux``, 6.1) as an
ordinary process, its root the host's own ``/`` through hostfs (../shared/PLATFORMS.md, "User-Mode Linux").

    result = run_in_uml("cat /sys/fs/cgroup/cgroup.controllers", workdir=tmp_path)
    assert result.rc == 0 and "memory" in result.output

What a job can rely on (set up by ``uml_init.sh``, PID 1 inside):

- it runs as root (uid 0) under ``bash -euo pipefail``, with ``workdir`` as its current directory, stdin from
  /dev/null, stdout and stderr together into ``workdir/uml/job.out`` (``UmlResult.output``);
- mounts: proc, sysfs, cgroup2 at ``/sys/fs/cgroup`` (``nsdelegate``; ``+memory +pids`` already enabled in the
  root's ``cgroup.subtree_control``), tmpfs on ``/run`` and ``/dev/shm``, devtmpfs on ``/dev``; everything
  else, ``/tmp`` included, is the live host file system (write only inside ``workdir``); ``lo`` is up;
- with ``scratch_mb`` > 0, an ext4 file system of that size at ``$SCRATCH`` (``/run/scratch``, mode 1777,
  on a ubd disk image in ``workdir/uml``): hostfs file data is not charged to memory cgroups (``file`` and
  ``inactive_file`` stay 0 in ``memory.stat``), this disk's page cache is;
- environment, and nothing else: ``PATH`` (the venv's bin first), ``HOME=/run/home`` and
  ``TMPDIR=/run/tmp`` (tmpfs, private to the boot), ``LANG=C.UTF-8``, ``PYTHON`` (this interpreter:
  the venv's python with memmon installed), ``MEMMON`` (the venv's ``memmon`` script), ``LEAKER``
  (tests/v2/leaker.py), ``WORKDIR``, ``CGROUP_ROOT=/sys/fs/cgroup``, ``SCRATCH`` (with a scratch disk), plus
  the ``env`` argument;
- an unprivileged user: ``setpriv --reuid=65534 --regid=65534 --clear-groups CMD`` (nobody), who can read
  but not write a root-owned cgroup's files. ``workdir`` is pytest's 0700 root directory: such a command
  cannot open files there itself, so let root redirect its output (``setpriv ... CMD > out``).

Share data through files in ``workdir``, written by the host *before* boot: hostfs may serve stale cached
data for files the host changes afterwards. The job's exit code is read from an rc file, not from UML's own
exit status (which is unrelated). The console (kernel log, init's own messages) goes to ``workdir/uml/console.log``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

UML_KERNEL = Path("/usr/bin/linux.uml")
HERE = Path(__file__).resolve().parent
INIT_SCRIPT = HERE / "uml_init.sh"
SHIM_SOURCE = HERE / "uml_xstate_shim.c"
LEAKER = HERE / "leaker.py"
CGROUP_ROOT = "/sys/fs/cgroup"
SCRATCH = "/run/scratch"
CONSOLE_TAIL = 3000
KILL_WAIT_SECONDS = 5.0
FP_REGS_FAILURE = "ptrace set fp regs failed"


class UmlError(RuntimeError):
    """UML did not run the job to its end (no rc file, a crash, or a timeout)."""


class UmlTimeout(UmlError):
    """UML (boot plus job) outlived its timeout and was killed with its helper processes."""

    def __init__(self, message: str, pgid: int) -> None:
        super().__init__(message)
        self.pgid = pgid
        """The process group UML ran in (UML's pid), now killed."""


@dataclass(frozen=True)
class UmlResult:
    """One job's run inside UML."""

    rc: int
    """The job's exit code (from the rc file init writes)."""
    output: str
    """The job's stdout and stderr, interleaved."""
    seconds: float
    """Wall time from starting UML to its power-off: boot, job and shutdown."""
    console: Path
    """The console log (kernel messages, init's own), for debugging."""


@cache
def xstate_shim() -> Path | None:
    """Build (once per source version) the LD_PRELOAD shim that lets Debian's UML run on AMX hosts; None when
    there is no C compiler (UML then runs without it, which works on hosts without AMX)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    source = SHIM_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"memmon-uml-xstate-{os.getuid()}-{digest}.so"
    if target.exists():
        return target
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(partial), str(SHIM_SOURCE), "-ldl"],
        check=True,
        capture_output=True,
    )
    partial.replace(target)
    return target


def _job_environment(workdir: Path, env: Mapping[str, str]) -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    variables = {
        "PATH": f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/run/home",
        "TMPDIR": "/run/tmp",
        "LANG": "C.UTF-8",
        "PYTHON": sys.executable,
        "MEMMON": str(bin_dir / "memmon"),
        "LEAKER": str(LEAKER),
        "WORKDIR": str(workdir),
        "CGROUP_ROOT": CGROUP_ROOT,
    }
    variables.update(env)
    return variables


def _memory_file_dir(mem: str) -> str:
    """Where UML keeps the file backing its RAM: /dev/shm when it is a tmpfs with room (UML warns "tempdir
    /tmp is not on tmpfs", and a leak inside ran 1.1-1.6x faster there), else the usual temporary directory."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    size = int(mem[:-1]) * units[mem[-1].upper()] if mem[-1:].upper() in units else int(mem)
    try:
        shm = os.statvfs("/dev/shm")
    except OSError:
        return tempfile.gettempdir()
    with open("/proc/mounts") as mounts:
        on_tmpfs = any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in mounts)
    return "/dev/shm" if on_tmpfs and shm.f_bavail * shm.f_frsize > size * 1.25 else tempfile.gettempdir()


def _make_ext4(image: Path, size_mb: int) -> None:
    """A fresh ext4 image file of ``size_mb`` MiB (e2fsprogs' mkfs.ext4, which Debian always installs)."""
    mkfs = shutil.which("mkfs.ext4", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if mkfs is None:
        raise UmlError("mkfs.ext4 not found (apt-get install e2fsprogs): needed for the scratch disk")
    image.unlink(missing_ok=True)
    subprocess.run([mkfs, "-q", "-F", str(image), f"{size_mb}M"], check=True, capture_output=True)


def _boot_path(path: Path) -> str:
    """A path as a kernel boot argument: the command line splits on white space, so none is allowed."""
    text = str(path)
    if any(c.isspace() for c in text):
        raise ValueError(f"UML boot arguments cannot carry white space: {text!r}")
    return text


def live_group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``, from /proc/PID/stat (proc(5): state, ppid, pgrp)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            members.append(int(entry))
    return members


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL UML and every helper it forked (they share its process group: UML starts a new session), and
    wait until they are gone: a killed helper unmapping UML's memory stays running for tens of ms."""
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    while live_group_members(proc.pid) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.01)


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-CONSOLE_TAIL:]
    except FileNotFoundError:
        return f"({path.name} missing)"


def run_in_uml(
    job: str,
    *,
    workdir: Path,
    mem: str = "1G",
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    scratch_mb: int = 0,
) -> UmlResult:
    """Boot UML with ``mem`` of RAM, run ``job`` (bash script text) as root inside, power off; see the module
    docstring for what the job can rely on. Raises UmlTimeout (after killing UML) past ``timeout`` seconds,
    UmlError when the job's rc file is missing afterwards. ``scratch_mb`` > 0 adds an ext4 disk at $SCRATCH."""
    if not UML_KERNEL.exists():
        raise UmlError(f"{UML_KERNEL} is missing: apt-get install user-mode-linux")
    workdir = workdir.resolve()
    files = workdir / "uml"
    files.mkdir(parents=True, exist_ok=True)
    init, job_file, env_file = files / "init.sh", files / "job.sh", files / "env.sh"
    out_file, rc_file, console = files / "job.out", files / "rc", files / "console.log"
    for stale in (out_file, rc_file):
        stale.unlink(missing_ok=True)
    # Everything the guest reads is written now, before boot (hostfs may cache what changes later).
    shutil.copyfile(INIT_SCRIPT, init)
    init.chmod(0o755)
    job_file.write_text(job)
    variables = _job_environment(workdir, env or {})
    disk_args: list[str] = []
    if scratch_mb > 0:
        disk = files / "scratch.img"
        _make_ext4(disk, scratch_mb)
        disk_args = [f"ubd0={_boot_path(disk)}", f"UML_SCRATCH={SCRATCH}"]
        variables["SCRATCH"] = SCRATCH
    env_file.write_text("".join(f"export {key}={shlex.quote(value)}\n" for key, value in variables.items()))
    command = [
        str(UML_KERNEL),
        f"mem={mem}",
        "root=/dev/root",
        "rootfstype=hostfs",
        "rootflags=/",
        "rw",
        "quiet",
        f"init={_boot_path(init)}",
        "con=null",
        "con0=fd:0,fd:1",
        f"uml_dir={_boot_path(files)}",  # the umid directory (default ~/.uml) stays in workdir
        f"UML_ENV={_boot_path(env_file)}",
        f"UML_JOB={_boot_path(job_file)}",
        f"UML_OUT={_boot_path(out_file)}",
        f"UML_RC={_boot_path(rc_file)}",
        *disk_args,
    ]
    host_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": _memory_file_dir(mem)}
    shim = xstate_shim()
    if shim is not None:
        host_env["LD_PRELOAD"] = str(shim)
    started = time.monotonic()
    with console.open("wb") as console_out:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=console_out,
            stderr=subprocess.STDOUT,
            env=host_env,
            start_new_session=True,
        )
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise UmlTimeout(
                f"UML (boot + job) still running after {timeout:g} s: killed. Job output so far:\n"
                f"{_tail(out_file)}\nConsole ({console}):\n{_tail(console)}",
                pgid=proc.pid,
            ) from None
        finally:
            # Helpers outliving the kernel process would be a leak; the group is gone after a clean power-off.
            if proc.poll() is not None:
                _kill_group(proc)
    seconds = time.monotonic() - started
    try:
        rc = int(rc_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        hint = ""
        if FP_REGS_FAILURE in _tail(console):
            hint = (
                "\nUML cannot restore FPU state on this host (a larger XSAVE area, e.g. AMX): it needs the "
                f"LD_PRELOAD shim {SHIM_SOURCE.name}, which needs a C compiler (apt-get install gcc)."
            )
        raise UmlError(
            f"UML exited with {proc.returncode} after {seconds:.1f} s without the job's rc file{hint}\n"
            f"Job output:\n{_tail(out_file)}\nConsole ({console}):\n{_tail(console)}"
        ) from None
    return UmlResult(rc=rc, output=out_file.read_text(errors="replace"), seconds=seconds, console=console)
