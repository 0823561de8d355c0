/*
 * LD_PRELOAD shim for /usr/bin/linux.uml (Debian's UML 6.1 kernel) on hosts whose XSAVE area is larger than
 * the one UML was built for (CPUs with AMX: the host's xstate is 11008 bytes, UML passes 2696).
 *
 * Why: UML saves and restores its processes' FPU state with PTRACE_GETREGSET / PTRACE_SETREGSET on
 * NT_X86_XSTATE using a fixed-size buffer. GETREGSET with a short buffer is fine (the host copies what fits),
 * but the host's xstateregs_set() rejects anything but the whole buffer:
 *     if (pos != 0 || count != fpu_user_cfg.max_size) return -EFAULT;
 * (arch/x86/kernel/fpu/regset.c, Linux 5.16 and later). UML then prints "userspace - ptrace set fp regs
 * failed, errno = 14" and its init dies (seen here on a 6.18 host with amx_tile in /proc/cpuinfo).
 *
 * Fix: for a short SETREGSET, read the whole current state of the target first, overlay UML's part, and
 * write the whole buffer back. The state past UML's buffer (the AMX tile registers, which no process inside
 * UML can enable) is written back unchanged; a buffer longer than the host's is cut to the host's size.
 * Calls of the size the host expects go straight through.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#define PROBE_SIZE 65536 /* larger than any XSAVE area: the host shortens iov_len to the real size */

typedef long (*ptrace_fn)(enum __ptrace_request, ...);

static unsigned char whole[PROBE_SIZE];
static size_t whole_size; /* the host's XSAVE size, learnt on first use (the same for every task) */

long ptrace(enum __ptrace_request request, ...) {
    static ptrace_fn real;
    va_list args;
    va_start(args, request);
    pid_t pid = va_arg(args, pid_t);
    void *addr = va_arg(args, void *);
    void *data = va_arg(args, void *);
    va_end(args);
    if (!real)
        real = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
    if (request == PTRACE_SETREGSET && (long)addr == NT_X86_XSTATE && data) {
        struct iovec *theirs = data;
        if (theirs->iov_len != whole_size) {
            struct iovec ours = {whole, PROBE_SIZE};
            if (real(PTRACE_GETREGSET, pid, addr, &ours) < 0)
                return -1;
            whole_size = ours.iov_len;
            if (theirs->iov_len != whole_size) {
                memcpy(whole, theirs->iov_base, theirs->iov_len < whole_size ? theirs->iov_len : whole_size);
                return real(PTRACE_SETREGSET, pid, addr, &ours);
            }
        }
    }
    return real(request, pid, addr, data);
}
