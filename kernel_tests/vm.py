"""A Debian bookworm VM under QEMU (software emulation) with systemd as PID 1 on cgroup v2, driven through a 9p share.

The image comes from ``scripts/kernel_vm/build_image.sh`` (cached in ``.cache/kernel-vm/<key>/``). Each session boots
a qcow2 overlay on it, so the cached image stays pristine. Inside, ``kt-runner`` (scripts/kernel_vm/guest/) runs every
script renamed into ``share/queue/NAME.sh`` as root and writes ``out/NAME.out`` and ``out/NAME.rc``; a file
``queue/poweroff`` shuts the VM down. QEMU flags: ../shared/PLATFORMS.md, "systemd as PID 1 with cgroup v2".
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD_IMAGE = REPO / "scripts" / "kernel_vm" / "build_image.sh"
QEMU = "qemu-system-x86_64"
# /dev/kvm here is kvm_pvm: `-cpu host` aborts and other CPU models hang in the kernel's decompressor (PLATFORMS.md),
# so the VM always runs under TCG, about 10x slower than native.
KERNEL_ARGS = "console=ttyS0 root=/dev/vda rw systemd.unified_cgroup_hierarchy=1 panic=-1 quiet"


class QemuCannotStart(RuntimeError):
    """QEMU exited before the guest printed anything: this machine cannot run the VM."""


class GuestError(RuntimeError):
    """The guest did not come up, or a job did not finish in time."""


class VM:
    """One QEMU process and its share; ``run`` executes a bash script inside as root."""

    def __init__(self, image_dir: Path, session_dir: Path, *, memory_mb: int = 2048, cpus: int = 2) -> None:
        self.image_dir = image_dir
        self.session_dir = session_dir
        self.share = session_dir / "share"
        self.console = session_dir / "console.log"
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.process: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        self.boot_seconds: float | None = None

    # --- life cycle ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the overlay and the share, start QEMU (returns at once; see ``wait_ready``)."""
        if shutil.which(QEMU) is None:
            raise QemuCannotStart(f"{QEMU} is not installed (Debian package qemu-system-x86)")
        if self.session_dir.exists():
            shutil.rmtree(self.session_dir)
        for sub in ("queue", "out", "running"):
            (self.share / sub).mkdir(parents=True)
        overlay = self.session_dir / "overlay.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.image_dir / "base.raw"), "-F", "raw",
             str(overlay)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        command = [
            QEMU, "-accel", "tcg", "-cpu", "max", "-m", str(self.memory_mb), "-smp", str(self.cpus),
            "-display", "none", "-nodefaults", "-no-reboot",
            "-kernel", str(self.image_dir / "vmlinuz"), "-initrd", str(self.image_dir / "initrd.img"),
            "-append", KERNEL_ARGS,
            "-drive", f"file={overlay},format=qcow2,if=virtio",
            "-fsdev", f"local,id=fs0,path={self.share},security_model=none",
            "-device", "virtio-9p-pci,fsdev=fs0,mount_tag=share",
            "-serial", f"file:{self.console}", "-nic", "none",
        ]  # fmt: skip
        self.started_at = time.monotonic()
        self.qemu_log = (self.session_dir / "qemu.log").open("wb")
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self.qemu_log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float) -> str:
        """Wait until systemd has finished starting the guest; returns ``out/ready`` (system state, kernel)."""
        ready = self.share / "out" / "ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready.exists():
                self.boot_seconds = time.monotonic() - self.started_at
                return ready.read_text()
            self._check_alive(booting=True)
            time.sleep(0.5)
        raise GuestError(f"the guest was not ready after {timeout:.0f} s; console:\n{self.console_tail()}")

    def poweroff(self, timeout: float = 120) -> None:
        """Ask the guest to power off; kill QEMU if it is still running after ``timeout``."""
        if self.process is None:
            return
        if self.process.poll() is None:
            (self.share / "queue" / "poweroff").touch()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.qemu_log.close()

    # --- jobs ---------------------------------------------------------------------------------------------------

    def run(self, script: str, timeout: float, *, name: str | None = None) -> tuple[int, str]:
        """Run a bash script in the guest as root; returns its exit code and output (stdout and stderr)."""
        name = f"{next(self._names):03d}-{name or 'job'}"
        queued = self.share / "queue" / f"{name}.sh"
        tmp = queued.with_suffix(".tmp")
        tmp.write_text(script)
        os.rename(tmp, queued)  # the runner only picks up *.sh: it never sees a half-written script
        rc_file, out_file = self.share / "out" / f"{name}.rc", self.share / "out" / f"{name}.out"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if rc_file.exists():
                return int(rc_file.read_text().strip()), out_file.read_text(errors="replace")
            self._check_alive(booting=False)
            time.sleep(0.25)
        partial = out_file.read_text(errors="replace") if out_file.exists() else "(no output yet)"
        raise GuestError(f"job {name} did not finish in {timeout:.0f} s; output so far:\n{partial}")

    # --- diagnostics --------------------------------------------------------------------------------------------

    def console_tail(self, lines: int = 40) -> str:
        """The end of the serial console (kernel messages, systemd's status lines)."""
        if not self.console.exists():
            return "(no console output)"
        return "\n".join(self.console.read_text(errors="replace").splitlines()[-lines:])

    def _check_alive(self, *, booting: bool) -> None:
        assert self.process is not None
        code = self.process.poll()
        if code is None:
            return
        qemu_output = (self.session_dir / "qemu.log").read_text(errors="replace").strip()
        console = self.console.read_text(errors="replace") if self.console.exists() else ""
        if booting and not console.strip():
            raise QemuCannotStart(f"{QEMU} exited with {code} before the guest started: {qemu_output}")
        raise GuestError(f"QEMU exited with {code}: {qemu_output}\nconsole:\n{self.console_tail()}")
