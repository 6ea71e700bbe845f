/*
 * The SYSCALL instruction from 32-bit code, with the host's compat open() number on a canary
 * path. A CPU model like the guest's (Intel) has no SYSCALL in legacy mode: the guest gets
 * SIGILL. Natively on an AMD host the host kernel's compat fast-syscall path takes it (and
 * seccomp traps it): the accelerator cannot resume such an exit and must stop the run with a
 * message naming SYSCALL. The canary must never appear on the host.
 *
 *   esc-syscall-insn CANARY-DIR
 */
#include "esc.h"

#include <fcntl.h>
#include <termios.h>

long raw_syscall(const long *args);

static char file[600];

static void try_syscall(uint32_t spin)
{
    /* enough native work first that the accelerator runs the SYSCALL natively */
    volatile uint32_t x = 0;
    for (uint32_t i = 0; i < spin; i++)
        x += i;
    long args[7] = {NR32_OPEN, (long)file, O_CREAT | O_WRONLY, 0644};
    long r = raw_syscall(args);
    probe_done((uint32_t)(r >= 0 ? 0 : r));
}

int main(int argc, char **argv)
{
    esc_init();
    if (argc != 2 || argv[1][0] != '/')
        fail("usage: esc-syscall-insn /ABSOLUTE/CANARY-DIR");
    snprintf(file, sizeof file, "%s/canary-syscall-insn-open", argv[1]);
    native_evidence();
    tcdrain(1); /* the console has everything before an accelerated run stops */
    report("syscall-open", "%s", probe_natively(try_syscall, 2000000));
    finish();
    return 0;
}
