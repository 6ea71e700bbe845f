/*
 * faults: deliberate faults caught and recovered from with siglongjmp
 * (dynamically linked).
 *
 *  - NULL write: SIGSEGV, SEGV_MAPERR, si_addr == NULL;
 *  - jump to an unmapped address: SIGSEGV, si_addr == target;
 *  - integer divide by zero and INT_MIN / -1: SIGFPE, FPE_INTDIV;
 *  - ud2: SIGILL, ILL_ILLOPN;  int3: SIGTRAP;
 *  - privileged instructions (cli, hlt) and into/bound traps: SIGSEGV
 *    with si_code SI_KERNEL.
 * Each fault is provoked several times and the program must keep
 * working normally afterwards (callee-saved registers, stack, FPU).
 * Whether a non-executable page really refuses execution depends on the
 * kernel (NX needs PAE on 32-bit kernels): reported on a cpu: line.
 */
#define _GNU_SOURCE
#include "common.h"
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>

static sigjmp_buf jb;
static volatile int g_sig, g_code;
static volatile uintptr_t g_addr;

static void handler(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    g_sig = sig;
    g_code = si->si_code;
    g_addr = (uintptr_t)si->si_addr;
    siglongjmp(jb, 1);
}

typedef void (*thunk_t)(void *);

/* Runs f(arg); returns 1 if it raised a signal (recorded in g_*). */
__attribute__((noinline)) static int provoke(thunk_t f, void *arg)
{
    g_sig = g_code = 0;
    g_addr = 0;
    if (sigsetjmp(jb, 1)) return 1;
    f(arg);
    return 0;
}

static void null_write(void *arg) { (void)arg; *(volatile int *)0 = 42; }
static void jump_to(void *arg) { ((void (*)(void))arg)(); }
static void div_zero(void *arg)
{
    uint32_t lo = 1000, hi = 0, d = (uint32_t)(uintptr_t)arg;
    __asm__ volatile("divl %[d]" : "+a"(lo), "+d"(hi) : [d] "r"(d));
}
static void idiv_overflow(void *arg)
{
    int32_t lo = INT_MIN, hi = -1, d = (int32_t)(intptr_t)arg;
    __asm__ volatile("idivl %[d]" : "+a"(lo), "+d"(hi) : [d] "r"(d));
}
static void do_ud2(void *arg) { (void)arg; __asm__ volatile("ud2"); }
static void do_int3(void *arg) { (void)arg; __asm__ volatile("int3"); }
static void do_cli(void *arg) { (void)arg; __asm__ volatile("cli"); }
static void do_hlt(void *arg) { (void)arg; __asm__ volatile("hlt"); }
static void do_into(void *arg)
{
    (void)arg;
    __asm__ volatile("movl $0x7fffffff, %%eax\n\taddl $1, %%eax\n\t.byte 0xce" ::: "eax", "cc");
}
#if defined(__i386__)
static void do_bound(void *arg)
{
    (void)arg;
    static int32_t bounds[2] = { 0, 10 };
    __asm__ volatile("movl $20, %%eax\n\tboundl %%eax, %[b]" : : [b] "m"(bounds) : "eax");
}
#endif

int main(void)
{
    suite_init();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGFPE, &sa, NULL);
    sigaction(SIGILL, &sa, NULL);
    sigaction(SIGTRAP, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);

    ck_t ck;
    ck_init(&ck);
    void *hole = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(hole, 4096);

    struct { thunk_t f; void *arg; int sig, code; int check_addr; const char *name; } t[] = {
        { null_write, NULL, SIGSEGV, SEGV_MAPERR, 1, "null-write" },
        { jump_to, hole, SIGSEGV, SEGV_MAPERR, 2, "jump-unmapped" },
        { div_zero, (void *)0, SIGFPE, FPE_INTDIV, 0, "div-zero" },
        { idiv_overflow, (void *)-1, SIGFPE, FPE_INTDIV, 0, "idiv-overflow" },
        { do_ud2, NULL, SIGILL, ILL_ILLOPN, 0, "ud2" },
        { do_int3, NULL, SIGTRAP, SI_KERNEL, 0, "int3" },
        { do_cli, NULL, SIGSEGV, SI_KERNEL, 0, "cli" },
        { do_hlt, NULL, SIGSEGV, SI_KERNEL, 0, "hlt" },
#if defined(__i386__)
        { do_into, NULL, SIGSEGV, SI_KERNEL, 0, "into" },
        { do_bound, NULL, SIGSEGV, SI_KERNEL, 0, "bound" },
#else   /* INTO is invalid in 64-bit mode; BOUND's opcode is the EVEX prefix there */
        { do_into, NULL, SIGILL, ILL_ILLOPN, 0, "into" },
#endif
    };
    for (int rep = 0; rep < 10; rep++)
        for (unsigned i = 0; i < sizeof t / sizeof t[0]; i++) {
            volatile double fp = 1.0 / 3.0 + rep;       /* live across the fault */
            uint32_t keep = 0x12345678u ^ (uint32_t)(rep * 31 + (int)i);
            if (!provoke(t[i].f, t[i].arg)) fail("%s-no-signal", t[i].name);
            if (g_sig != t[i].sig || g_code != t[i].code)
                fail("%s-sig%d-code%d", t[i].name, g_sig, g_code);
            if (t[i].check_addr == 1 && g_addr != 0) fail("%s-addr", t[i].name);
            if (t[i].check_addr == 2 && g_addr != (uintptr_t)hole) fail("%s-addr", t[i].name);
            if (keep != (0x12345678u ^ (uint32_t)(rep * 31 + (int)i))) fail("clobbered");
            if (fp != 1.0 / 3.0 + rep) fail("fpu-after-%s", t[i].name);
            ck_u32(&ck, (uint32_t)g_sig);
            ck_u32(&ck, (uint32_t)g_code);
        }
    /* the same operations without faults still work */
    {
        uint32_t lo = 1000, hi = 0, d = 7;
        __asm__ volatile("divl %[d]" : "+a"(lo), "+d"(hi) : [d] "r"(d));
        if (lo != 142 || hi != 6) fail("div-after");
    }
    /* NX: kernel/CPU dependent (needs PAE on a 32-bit kernel) */
    {
        unsigned char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        p[0] = 0xc3;   /* ret: harmless if it does execute */
        int f = provoke(jump_to, p);
        cpu_line("nx_enforced", "%s", f && g_sig == SIGSEGV ? "yes" : f ? "other" : "no");
        munmap(p, 4096);
    }
    result_ck("faults", &ck);
    return 0;
}
