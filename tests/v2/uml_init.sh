#!/bin/sh
# PID 1 inside User-Mode Linux for tests/v2/uml.py (see ../shared/PLATFORMS.md, "User-Mode Linux").
# The kernel hands unknown KEY=val boot arguments to init as its environment: UML_ENV (a file of exports
# for the job, written by the host before boot), UML_JOB, UML_OUT and UML_RC (absolute host paths, seen
# here through hostfs), UML_SCRATCH (where to mount the scratch disk, if any).
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

mount -t proc proc /proc
mount -t sysfs sysfs /sys
# nsdelegate: cgroup namespaces are delegation boundaries (Documentation/admin-guide/cgroup-v2.rst).
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# /tmp stays the host's /tmp (hostfs): a tmpfs there would hide the test's workdir, which pytest puts under
# /tmp. The job's scratch space (TMPDIR) and HOME are on the /run tmpfs instead, private to this boot.
mkdir -m 1777 /run/tmp
mkdir -m 0755 /run/home
# An ext4 scratch disk (ubd0, made by the host) when asked for: unlike hostfs, whose file data is not charged to
# memory cgroups (memory.stat file stays 0), its page cache is, so jobs can make inactive_file.
if [ -n "${UML_SCRATCH:-}" ]; then
    mkdir -p "$UML_SCRATCH"
    mount -t ext4 /dev/ubda "$UML_SCRATCH"
    chmod 1777 "$UML_SCRATCH"
fi
echo "+memory +pids" > /sys/fs/cgroup/cgroup.subtree_control
ip link set lo up

# A clean environment for the job: only what the host wrote into UML_ENV.
env -i /bin/sh -c '. "$1" && cd "$WORKDIR" && exec /bin/bash -euo pipefail "$2"' job "$UML_ENV" "$UML_JOB" \
    > "$UML_OUT" 2>&1 < /dev/null
echo $? > "$UML_RC"
# hostfs writes go through the guest page cache; sysrq power-off does not sync (Documentation/admin-guide/
# sysrq.rst: 'o' shuts the system off, 's' would sync), so sync first.
sync
echo o > /proc/sysrq-trigger
# PID 1 must outlive the asynchronous power-off: its exit would panic the kernel ("Attempted to kill init").
sleep 30
