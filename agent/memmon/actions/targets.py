"""Which processes an agent-mode action may touch: the configured target and nothing else.

Wrong or repeated victims are the top complaint about OOM daemons (earlyoom, systemd-oomd), so the set is never
guessed: the ``--pid`` processes, the ``--match`` processes, or, with ``--cgroup``/``--unit`` and neither of
those, the cgroup's main processes: its members (``cgroup.procs``, read at the moment of acting) whose parent is
outside it. Signalling every member would hit a pre-fork server's workers directly, behind their master's back
(gunicorn's master on SIGTERM drains its workers itself; a worker SIGHUPed by memmon dies mid-request). memmon's
own pid and ancestors are excluded, except in library mode where memmon's own process *is* the target.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from memmon.sampling.prefork import lineage, tree_tops


class TargetProcesses:
    """Resolves the pids to act on, fresh at each call."""

    def __init__(
        self,
        *,
        pids: Callable[[], tuple[int, ...]],
        cgroup_dir: Callable[[], Path | None] | None = None,
        own_target: bool = False,
        own_pid: int | None = None,
    ) -> None:
        self._pids = pids
        self._cgroup_dir = cgroup_dir
        self.own_target = own_target
        self.own_pid = os.getpid() if own_pid is None else own_pid

    def resolve(self) -> tuple[tuple[int, ...], str]:
        """(pids, where they came from); an empty tuple when there is nothing to act on."""
        if self._cgroup_dir is not None:
            directory = self._cgroup_dir()
            if directory is None:
                return (), "cgroup not found"
            try:
                members = tuple(int(pid) for pid in (directory / "cgroup.procs").read_text().split())
            except (OSError, ValueError) as exc:
                return (), f"cannot read {directory}/cgroup.procs: {exc}"
            never = lineage(self.own_pid)
            tops = tree_tops(p for p in members if p not in never)
            return tops, f"main process(es) of {directory}"
        pids = self._pids()
        if self.own_target:
            return pids, "memmon's own process (library mode)"
        return tuple(p for p in pids if p != self.own_pid), "target processes"
