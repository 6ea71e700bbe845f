/*
 * Shared helpers of the escape suite's x86-64 programs (tests/escape, esc64-*.c; built with
 * `make -C tests/escape ARCH=amd64`, run in the amd64 guest by `tests/escape/run --arch amd64`).
 * Output protocol: esc-out.h (case:/result: lines compared with plain Bochs, the oracle).
 * These programs deliberately try to affect the host: never run them natively.
 *
 * Where the stub executor keeps its region S (protocol/src/stub.rs, docs/ARCHITECTURE.md "The
 * stub executor"): 2 MiB-aligned at 0x3f00_0000_0000 unless the bochsrc says stub_base=, its
 * code page R-X at S, the library's pages R-- at S+0x1000..S+0x5000, the stub's pages RW from
 * S+0x5000 to S+0x17000; the 4 GiB block that holds S is never a guest mirror (step 5 of
 * issue 15: guest pages there are emulated access by access).
 *
 * Native evidence: x86-64 user code has no cheap tell like the i386 programs' mirror DS
 * selector (esc.h's ds_looks_native()): its CS/SS 0x33/0x2b are the host's own. The tell is
 * time: a fixed stretch of work (~1.2 M instructions) takes ~20 ms of guest time emulated
 * (Bochs charges instructions at the bochsrc's ips, ci/run-guest's 60 M/s) and well under 2 ms
 * native (the library charges the host's nanoseconds). Emulated it never looks native; a
 * native stretch that the host preempted for long only costs a retry.
 */
#ifndef ESC64_H
#define ESC64_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "esc-out.h"

#if !defined(__x86_64__)
#error "the esc64 programs are x86-64: build with gcc -m64 (make ARCH=amd64)"
#endif

#define STUB_DEFAULT_BASE 0x3f0000000000UL /* protocol::stub::DEFAULT_BASE */
#define STUB_CODE_LEN 0x1000UL             /* S+0: code page, R-X */
#define STUB_LIB 0x1000UL                  /* S+0x1000: library's pages, R-- */
#define STUB_LIB_LEN 0x4000UL
#define STUB_STUB 0x5000UL                 /* S+0x5000: stub's pages, RW */
#define STUB_STUB_LEN 0x12000UL
#define STUB_S_LEN (STUB_STUB + STUB_STUB_LEN) /* 0x17000 */
#define STUB_ALIGN 0x200000UL              /* S is 2 MiB-aligned; the probes cover 2 MiB */

/* A raw x86-64 system call with six arguments (rdi rsi rdx r10 r8 r9): the `syscall`
 * instruction in the program's own code, no libc wrapper and no errno. */
static inline long sys6(long nr, long a, long b, long c, long d, long e, long f)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long r;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "0"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return r;
}

/* INT 0x80 from 64-bit code: the i386 (compat) ABI, i386 numbers; pointers must be below
 * 4 GiB (static data of this non-PIE program is). */
static inline long int80_3(long nr, long a, long b, long c)
{
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "0"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return r;
}

static int accel_seen; /* a stretch of work looked native at start */
static unsigned probes_run, probes_native;

/* Guest nanoseconds of a fixed stretch of work (CLOCK_MONOTONIC: the guest's vDSO; its RDTSC
 * is emulated when native RDTSC faults). */
static inline long long work_ns(void)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (volatile unsigned i = 0; i < 200000; i++)
        ;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
}

static inline int looks_native(void)
{
    return work_ns() < 2000000;
}

/* 1 once a stretch looks native within `tries` (the code after it then most likely runs
 * natively too: the run goes on until an exit), else 0. */
static inline int wait_native(unsigned tries)
{
    while (tries--)
        if (looks_native())
            return 1;
    return 0;
}

static inline void esc_init(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    setvbuf(stderr, NULL, _IONBF, 0);
    accel_seen = wait_native(20);
}

/* Stretches a probe waits for at most (a failed try is ~20 ms of emulated guest time). */
static unsigned probe_tries = 50;

/* Counts a probe; under acceleration it first waits for a native stretch, so that the probe's
 * instruction runs natively (counted when it did). */
static inline void probe_start(void)
{
    probes_run++;
    probes_native += accel_seen && wait_native(probe_tries);
}

/* A raw return value as the guest sees it: "ok" (or "ok=N" with show_value), else the errno
 * name's text. */
static inline const char *rv(long r, int show_value)
{
    static char buf[4][64];
    static unsigned slot;
    char *b = buf[slot++ % 4];
    if (r < 0 && r > -4096)
        snprintf(b, sizeof buf[0], "%s", strerror((int)-r));
    else if (show_value)
        snprintf(b, sizeof buf[0], "ok=%ld", r);
    else
        snprintf(b, sizeof buf[0], "ok");
    return b;
}

/* A wait status as text: exit-N or signal-N. */
static inline const char *status_text(int st)
{
    static char buf[32];
    if (WIFEXITED(st))
        snprintf(buf, sizeof buf, "exit-%d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, sizeof buf, "signal-%d", WTERMSIG(st));
    else
        snprintf(buf, sizeof buf, "status-%#x", st);
    return buf;
}

static inline void native_evidence(void)
{
    printf("cpu: native-probes=%u/%u accel-seen=%d\n", probes_native, probes_run, accel_seen);
}

#endif
