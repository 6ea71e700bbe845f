/*
 * Shared helpers of the escape suite (tests/escape): hostile i386 guest programs.
 *
 * Output protocol (esc-out.h; compared between plain Bochs and Bochs + plex86-accel by
 * tests/escape/run):
 *   case: <name> <outcome>   one per probe; compared
 *   result: <token>          exactly once; compared
 *   cpu: <key>=<value>       values that are documented leaks under acceleration; not compared
 *   info: <text>             never compared
 * These programs deliberately try to affect the host: never run them natively.
 *
 * Probes that change segment registers run in a forked child that, after the probe, uses
 * only raw system calls (no libc, no TLS through %gs) and reports through a pipe; a fault is
 * reported by a signal handler the same way. The programs are built with
 * -fno-stack-protector, since the canary lives at %gs:0x14.
 */
#ifndef ESC_H
#define ESC_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "esc-out.h"

#if !defined(__i386__)
#error "the escape suite is i386-only: build with gcc -m32"
#endif

/* i386 system call numbers, as the guest kernel and the host's compat ABI take them */
#define NR32_EXIT 1
#define NR32_WRITE 4
#define NR32_OPEN 5
#define NR32_CREAT 8
#define NR32_GETPID 20
#define NR32_MKDIR 39
#define NR32_OPENAT 295
/* x86-64 numbers, as the host's 64-bit ABI takes them */
#define NR64_OPEN 2
#define NR64_MKDIR 83
#define NR64_CREAT 85
#define NR64_OPENAT 257

#define USER_CS 0x73 /* Linux i386 __USER_CS */
#define USER_DS 0x7b /* Linux i386 __USER_DS */

static inline long raw3(long nr, long a, long b, long c)
{
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "0"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return r;
}

__attribute__((noreturn)) static inline void raw_exit(int code)
{
    for (;;)
        raw3(NR32_EXIT, code, 0, 0);
}

/* ---- evidence of native execution ------------------------------------------------------ */

/* Under acceleration a native `mov %ds, r` shows the executor's mirror selector (0xe7f for
 * the guest's 0x7b, a documented leak); emulated it shows the guest's 0x7b. wait_native() spins
 * until a read looks native, so that the probe which follows runs natively too (it only costs
 * time: the spin has no other effect). */
static int accel_seen;
static unsigned probes_run, probes_native; /* probes, and those that started natively */

static inline int ds_looks_native(void)
{
    uint32_t ds;
    __asm__ volatile("mov %%ds, %0" : "=r"(ds));
    return (ds & 0xffff) != USER_DS;
}

/* Returns 1 once a read looks native after a stretch of ~0.1 ms of native work, 0 when
 * max_iterations reads did not. The stretch matters: a run that a timer ends short of 32 us of
 * work (demand fills not counted, and a fresh child fills many pages) makes the accelerator
 * back off and emulate what follows for a while. So the stretch is checked at its end and,
 * when the run ended in it, waited for again. The caller's next few instructions (the probe)
 * then run natively unless a timer ends the run within them (about 1 in 10^5). */
static inline int wait_native(unsigned max_iterations)
{
    for (unsigned i = 0; i < max_iterations; i++) {
        if (!ds_looks_native())
            continue;
        for (unsigned j = 0; j < 200000; j++)
            __asm__ volatile("" ::: "memory");
        if (ds_looks_native())
            return 1;
    }
    return 0;
}

static inline void esc_init(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    setvbuf(stderr, NULL, _IONBF, 0);
    accel_seen = wait_native(3000000);
}

/* Selectors of the host GDT that CPL 3 code can load natively (0x20-0x33: user CS32, user
 * DS, user CS64, any RPL): under acceleration the load succeeds with the host's descriptor,
 * a documented leak (docs/ARCHITECTURE.md, "What leaks"), so such outcomes are cpu: lines. */
static inline int host_loadable(uint32_t sel)
{
    return (sel & 4) == 0 && (sel >> 3) >= 4 && (sel >> 3) <= 6;
}

static inline void report_leak(const char *name, const char *outcome)
{
    printf("cpu: leak %s %s\n", name, outcome);
}

/* ---- probes in a child ---------------------------------------------------------------- */

static int probe_fd = -1;
static char probe_mark = 'E'; /* N: the probe started in a native run */

/* Raw, async-signal-safe decimal/hex formatting into the child's report. */
static char *put_str(char *p, const char *s)
{
    while (*s)
        *p++ = *s++;
    return p;
}

static char *put_hex(char *p, uint32_t v)
{
    static const char digits[] = "0123456789abcdef";
    *p++ = '0';
    *p++ = 'x';
    int started = 0;
    for (int sh = 28; sh >= 0; sh -= 4) {
        unsigned d = (v >> sh) & 15;
        if (d || started || sh == 0) {
            *p++ = digits[d];
            started = 1;
        }
    }
    return p;
}

static void probe_send(const char *s, size_t n)
{
    raw3(NR32_WRITE, probe_fd, (long)s, (long)n);
    raw_exit(0);
}

__attribute__((unused)) static void probe_signal(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    char buf[64], *p = buf;
    *p++ = probe_mark;
    p = put_str(p, sig == SIGSEGV ? "SIGSEGV" : sig == SIGILL ? "SIGILL" : sig == SIGBUS ? "SIGBUS"
                   : sig == SIGTRAP ? "SIGTRAP" : sig == SIGFPE ? "SIGFPE" : "SIG?");
    /* si_code says how (SI_KERNEL for #GP, SEGV_MAPERR...); the address only for page faults */
    p = put_str(p, "/");
    p = put_hex(p, (uint32_t)si->si_code);
    probe_send(buf, (size_t)(p - buf));
}

/* Ends the child with a value report; callable after segment games (raw calls only). */
__attribute__((noreturn, unused)) static void probe_done(uint32_t value)
{
    char buf[32], *p = buf;
    *p++ = probe_mark;
    p = put_str(p, "ok:");
    p = put_hex(p, value);
    probe_send(buf, (size_t)(p - buf));
    raw_exit(0);
}

/* Reads one byte of each page of the program's code. fork() leaves file-backed pages out of
 * the child's page tables, so the child's first call into a page takes a guest page fault,
 * which ends the native run; and when the next timer event is then too close, the
 * accelerator declines the entry and Bochs emulates up to it. A probe must not meet that
 * between wait_native() and its own instruction. (The linker defines both symbols.) */
extern const char __executable_start[], etext[];

static void touch_code_pages(void)
{
    for (const volatile char *p = __executable_start; p < etext; p += 4096)
        (void)*p;
}

/* Runs fn(arg) in a child; fn ends with probe_done() or a signal. Returns the child's report
 * ("ok:0x..", "SIGSEGV/0x80", or "died:..." when the child ended otherwise). */
__attribute__((unused)) static const char *probe(void (*fn)(uint32_t), uint32_t arg)
{
    static char out[96];
    int fds[2];
    fflush(stdout);
    if (pipe(fds) != 0)
        fail("pipe");
    pid_t pid = fork();
    if (pid < 0)
        fail("fork");
    if (pid == 0) {
        close(fds[0]);
        probe_fd = fds[1];
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = probe_signal;
        sa.sa_flags = SA_SIGINFO;
        int sigs[] = {SIGSEGV, SIGILL, SIGBUS, SIGTRAP, SIGFPE};
        for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
            sigaction(sigs[i], &sa, NULL);
        /* Written first: a copy-on-write fault after the wait would end the native run. Data
         * a probe uses is set up by the parent, before the fork, for the same reason. */
        probe_mark = 'E';
        touch_code_pages();
        probe_mark = accel_seen && wait_native(20000000) ? 'N' : 'E';
        fn(arg);
        probe_done(0xdead);
    }
    close(fds[1]);
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fds[0], out + n, sizeof out - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fds[0]);
    out[n] = 0;
    int st;
    if (waitpid(pid, &st, 0) != pid)
        fail("waitpid");
    probes_run++;
    if (n > 0) {
        probes_native += out[0] == 'N';
        printf("info: probe %u started %s\n", probes_run, out[0] == 'N' ? "natively" : "emulated");
        memmove(out, out + 1, n); /* the mark is not part of the outcome */
    } else {
        if (WIFSIGNALED(st))
            snprintf(out, sizeof out, "died:signal-%d", WTERMSIG(st));
        else
            snprintf(out, sizeof out, "died:exit-%d", WEXITSTATUS(st));
    }
    return out;
}

/* probe() for a case whose accelerated run must stop at the probe. Under acceleration a probe
 * that started emulated (a timer ended the run within the few instructions before it) would
 * let the run go on to the end untested, so it is tried again, up to 5 times in all. Plain
 * Bochs (accel_seen 0) runs it once. */
__attribute__((unused)) static const char *probe_natively(void (*fn)(uint32_t), uint32_t arg)
{
    const char *out;
    for (unsigned tries = 1;; tries++) {
        unsigned native_before = probes_native;
        out = probe(fn, arg);
        if (!accel_seen || probes_native != native_before || tries == 5)
            return out;
    }
}

/* cpu: line (never compared) that tests/escape/run checks in accelerated runs. */
static inline void native_evidence(void)
{
    printf("cpu: native-probes=%u/%u accel-seen=%d\n", probes_native, probes_run, accel_seen);
}

#endif
