/*
 * signals: signal delivery and handler contexts.
 *
 *  - SIGSEGV on unmapped pages: the handler mmaps the faulting page and
 *    returns, the access is restarted (SEGV_MAPERR); same with PROT_NONE
 *    pages fixed by mprotect (SEGV_ACCERR);
 *  - SIGALRM (setitimer ITIMER_REAL), SIGVTALRM (ITIMER_VIRTUAL) and
 *    SIGPROF interrupting busy loops; a blocking read() interrupted
 *    (EINTR) without SA_RESTART;
 *  - sigaltstack: handler runs on the alternate stack (SS_ONSTACK), also
 *    for a stack overflow, left with siglongjmp;
 *  - blocked/pending signals, coalescing of standard signals, queued
 *    real-time signals with values in order, nested handlers;
 *  - si_code/si_pid for kill/raise/sigqueue, SIGCHLD information;
 *  - handlers that change the interrupted context (EIP, EAX, EFLAGS)
 *    after ud2 (SIGILL) and int3 (SIGTRAP).
 * Loop counts and timings only go to info lines.
 */
#define _GNU_SOURCE
#include "common.h"
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <time.h>
#include <ucontext.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>

static ck_t ck;

static void set_handler(int sig, void (*fn)(int, siginfo_t *, void *), int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_flags = SA_SIGINFO | flags;
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, NULL)) fail("sigaction-%d", sig);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- SIGSEGV: map the page and resume ---- */
#define NPG 16
static unsigned char *region;
static long pgsz;
static volatile int segv_count, segv_bad, segv_mode;

static void on_segv_map(int sig, siginfo_t *si, void *uc)
{
    (void)sig; (void)uc;
    uintptr_t a = (uintptr_t)si->si_addr;
    uintptr_t base = (uintptr_t)region;
    if (a < base || a >= base + NPG * (uintptr_t)pgsz) { segv_bad++; _exit(3); }
    void *pg = (void *)(a & ~(uintptr_t)(pgsz - 1));
    int idx = (int)(((uintptr_t)pg - base) / (uintptr_t)pgsz);
    if (segv_mode == 0) {
        if (si->si_code != SEGV_MAPERR) segv_bad++;
        void *m = mmap(pg, (size_t)pgsz, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (m != pg) _exit(4);
    } else {
        if (si->si_code != SEGV_ACCERR) segv_bad++;
        if (mprotect(pg, (size_t)pgsz, PROT_READ | PROT_WRITE)) _exit(5);
    }
    ((volatile unsigned char *)pg)[1] = (unsigned char)(0x40 + idx);
    segv_count++;
}

static void t_segv_map(void)
{
    pgsz = sysconf(_SC_PAGESIZE);
    set_handler(SIGSEGV, on_segv_map, 0);
    for (segv_mode = 0; segv_mode < 2; segv_mode++) {
        region = mmap(NULL, NPG * (size_t)pgsz, segv_mode ? PROT_NONE : PROT_READ,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (region == MAP_FAILED) fail("mmap");
        if (segv_mode == 0) munmap(region, NPG * (size_t)pgsz);  /* now a hole */
        segv_count = 0;
        uint32_t sum = 0;
        for (int i = 0; i < NPG; i++) {
            volatile unsigned char *p = region + (size_t)i * (size_t)pgsz;
            if (i & 1) p[100] = (unsigned char)i;          /* write fault */
            sum += p[1] * 7 + p[100];                      /* read fault or hit */
        }
        if (segv_count != NPG || segv_bad) fail("segv-map-%d-%d", segv_mode, segv_count);
        ck_u32(&ck, sum);
        munmap(region, NPG * (size_t)pgsz);
    }
    signal(SIGSEGV, SIG_DFL);
}

/* ---- timers ---- */
static volatile sig_atomic_t tick;
static void on_timer(int sig, siginfo_t *si, void *uc) { (void)si; (void)uc; tick = sig; }

static void busy_until_signal(int which, int sig, const char *name)
{
    struct itimerval it = { { 0, 0 }, { 0, 20000 } };   /* 20 ms, one shot */
    set_handler(sig, on_timer, 0);
    tick = 0;
    double t0 = now();
    if (setitimer(which, &it, NULL)) fail("setitimer-%s", name);
    volatile uint32_t x = 1;
    unsigned long loops = 0;
    while (!tick) {
        for (int k = 0; k < 1000; k++) x = x * 1664525u + 1013904223u;
        loops++;
        if ((loops & 1023) == 0 && now() - t0 > 120) fail("timer-%s-never-fired", name);
    }
    if (tick != sig) fail("timer-%s-signal", name);
    info("%s fired after %lu loops, %.3f s", name, loops, now() - t0);
    signal(sig, SIG_DFL);
    ck_u32(&ck, (uint32_t)sig);
}

static void t_eintr(void)
{
    int fds[2];
    if (pipe(fds)) fail("pipe");
    set_handler(SIGALRM, on_timer, 0);   /* no SA_RESTART */
    struct itimerval it = { { 0, 0 }, { 0, 10000 } };
    tick = 0;
    setitimer(ITIMER_REAL, &it, NULL);
    char c;
    ssize_t r = read(fds[0], &c, 1);
    if (r != -1 || errno != EINTR || tick != SIGALRM) fail("eintr");
    close(fds[0]); close(fds[1]);
    signal(SIGALRM, SIG_DFL);
    ck_u32(&ck, EINTR);
}

/* ---- sigaltstack ---- */
static unsigned char *alt;
static size_t altsz;
static volatile int on_alt, alt_flags_ok;
static sigjmp_buf ovf_jb;
static volatile unsigned long depth;

static int addr_on_alt(const void *p)
{
    return (const unsigned char *)p >= alt && (const unsigned char *)p < alt + altsz;
}

static void on_usr1_alt(int sig, siginfo_t *si, void *uc)
{
    (void)sig; (void)si; (void)uc;
    int local;
    stack_t cur;
    on_alt = addr_on_alt(&local);
    alt_flags_ok = sigaltstack(NULL, &cur) == 0 && (cur.ss_flags & SS_ONSTACK);
}

static void on_overflow(int sig, siginfo_t *si, void *uc)
{
    (void)sig; (void)si; (void)uc;
    int local;
    on_alt = addr_on_alt(&local);
    siglongjmp(ovf_jb, 1);
}

__attribute__((noinline)) static unsigned long recurse(unsigned long n)
{
    volatile unsigned char frame[4000];
    frame[0] = (unsigned char)n;
    frame[3999] = (unsigned char)(n >> 8);
    depth = n;
    if (n > 100000000) return 0;
    return recurse(n + 1) + frame[0] + frame[3999];
}

static void t_altstack(void)
{
    altsz = 64 * 1024;
    alt = mmap(NULL, altsz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    stack_t ss = { .ss_sp = alt, .ss_size = altsz, .ss_flags = 0 };
    if (sigaltstack(&ss, NULL)) fail("sigaltstack");
    set_handler(SIGUSR1, on_usr1_alt, SA_ONSTACK);
    on_alt = 0;
    raise(SIGUSR1);
    if (!on_alt || !alt_flags_ok) fail("altstack-usr1");
    /* a handler installed without SA_ONSTACK stays on the normal stack */
    set_handler(SIGUSR1, on_usr1_alt, 0);
    on_alt = 1;
    raise(SIGUSR1);
    if (on_alt) fail("altstack-not-requested");
    /* stack overflow: limit the stack to 2 MiB and recurse */
    struct rlimit rl;
    getrlimit(RLIMIT_STACK, &rl);
    struct rlimit nrl = rl;
    if (nrl.rlim_cur == RLIM_INFINITY || nrl.rlim_cur > 2u << 20) nrl.rlim_cur = 2u << 20;
    setrlimit(RLIMIT_STACK, &nrl);
    set_handler(SIGSEGV, on_overflow, SA_ONSTACK);
    on_alt = 0;
    if (sigsetjmp(ovf_jb, 1) == 0) {
        recurse(0);
        fail("no-overflow");
    }
    if (!on_alt) fail("overflow-not-on-altstack");
    info("stack overflow caught at depth %lu (~%lu KiB)", depth, depth * 4000 / 1024);
    signal(SIGSEGV, SIG_DFL);
    setrlimit(RLIMIT_STACK, &rl);
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, NULL);
    ck_u32(&ck, 0xa175);
}

/* ---- masks, pending, queueing, nesting, si_code ---- */
static volatile int usr2_count, rt_count, rt_vals[8], nest_log[8], nest_n;
static volatile int last_code, last_pid, rt_code;

static void on_usr2(int sig, siginfo_t *si, void *uc)
{
    (void)sig; (void)uc;
    usr2_count++;
    last_code = si->si_code;
    last_pid = si->si_pid;
}

static void on_rt(int sig, siginfo_t *si, void *uc)
{
    (void)sig; (void)uc;
    if (rt_count < 8) rt_vals[rt_count] = si->si_value.sival_int;
    rt_count++;
    rt_code = si->si_code;
}

static void on_nest_inner(int sig, siginfo_t *si, void *uc)
{
    (void)si; (void)uc;
    nest_log[nest_n++] = sig * 10 + 2;
}

static void on_nest_outer(int sig, siginfo_t *si, void *uc)
{
    (void)si; (void)uc;
    nest_log[nest_n++] = sig * 10 + 1;
    raise(SIGUSR2);                       /* not blocked: runs nested */
    nest_log[nest_n++] = sig * 10 + 3;
}

static void t_masks(void)
{
    sigset_t set, old, pend;
    set_handler(SIGUSR2, on_usr2, 0);
    /* kill(): SI_USER with our pid; raise(): SI_TKILL */
    usr2_count = 0;
    kill(getpid(), SIGUSR2);
    if (usr2_count != 1 || last_code != SI_USER || last_pid != getpid()) fail("si-user");
    raise(SIGUSR2);
    if (usr2_count != 2 || last_code != SI_TKILL) fail("si-tkill");
    /* blocked standard signals coalesce */
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGRTMIN);
    sigprocmask(SIG_BLOCK, &set, &old);
    usr2_count = 0;
    kill(getpid(), SIGUSR2);
    kill(getpid(), SIGUSR2);
    kill(getpid(), SIGUSR2);
    sigpending(&pend);
    if (!sigismember(&pend, SIGUSR2) || usr2_count != 0) fail("pending");
    /* real-time signals queue, with values, in order */
    set_handler(SIGRTMIN, on_rt, 0);
    rt_count = 0;
    for (int i = 0; i < 5; i++) {
        union sigval v = { .sival_int = 100 + i * i };
        if (sigqueue(getpid(), SIGRTMIN, v)) fail("sigqueue");
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (usr2_count != 1) fail("coalesce-%d", usr2_count);
    if (rt_count != 5 || rt_code != SI_QUEUE) fail("rt-queue-%d", rt_count);
    for (int i = 0; i < 5; i++) {
        if (rt_vals[i] != 100 + i * i) fail("rt-order");
        ck_u32(&ck, (uint32_t)rt_vals[i]);
    }
    /* nested delivery */
    set_handler(SIGUSR1, on_nest_outer, 0);
    set_handler(SIGUSR2, on_nest_inner, 0);
    nest_n = 0;
    raise(SIGUSR1);
    if (nest_n != 3 || nest_log[0] != SIGUSR1 * 10 + 1 || nest_log[1] != SIGUSR2 * 10 + 2 ||
        nest_log[2] != SIGUSR1 * 10 + 3)
        fail("nesting");
    for (int i = 0; i < 3; i++) ck_u32(&ck, (uint32_t)nest_log[i]);
    /* sa_mask blocks the inner signal until the outer handler returns */
    {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_nest_outer;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        sigaddset(&sa.sa_mask, SIGUSR2);
        sigaction(SIGUSR1, &sa, NULL);
        nest_n = 0;
        raise(SIGUSR1);
        if (nest_n != 3 || nest_log[1] != SIGUSR1 * 10 + 3 || nest_log[2] != SIGUSR2 * 10 + 2)
            fail("samask");
    }
    signal(SIGUSR1, SIG_DFL);
    signal(SIGUSR2, SIG_DFL);
    signal(SIGRTMIN, SIG_DFL);
}

static volatile int chld_code, chld_status, chld_pid;
static void on_chld(int sig, siginfo_t *si, void *uc)
{
    (void)sig; (void)uc;
    chld_code = si->si_code;
    chld_status = si->si_status;
    chld_pid = si->si_pid;
}

static void t_sigchld(void)
{
    sigset_t set, old;
    set_handler(SIGCHLD, on_chld, 0);
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, &old);
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) _exit(33);
    int st;
    if (waitpid(p, &st, 0) != p) fail("waitpid");
    sigprocmask(SIG_SETMASK, &old, NULL);   /* pending SIGCHLD delivered here */
    if (chld_code != CLD_EXITED || chld_status != 33 || chld_pid != p) fail("sigchld");
    signal(SIGCHLD, SIG_DFL);
    ck_u32(&ck, 33);
}

/* ---- handlers editing the interrupted context ---- */
static volatile int ctx_code;
#if defined(__x86_64__)
#define REG_EIP REG_RIP
#define REG_EAX REG_RAX
#define REG_ECX REG_RCX
#endif
static void on_ill(int sig, siginfo_t *si, void *ucv)
{
    (void)sig;
    ucontext_t *uc = ucv;
    ctx_code = si->si_code;
    uc->uc_mcontext.gregs[REG_EIP] += 2;               /* skip ud2 */
    uc->uc_mcontext.gregs[REG_EAX] = 0x5ca1ab1e;
    uc->uc_mcontext.gregs[REG_EFL] |= 1;               /* set CF */
}

static void on_trap(int sig, siginfo_t *si, void *ucv)
{
    (void)sig; (void)si;
    ucontext_t *uc = ucv;
    uc->uc_mcontext.gregs[REG_EAX] += 0x1000;          /* EIP is already past int3 */
    uc->uc_mcontext.gregs[REG_ECX] ^= 0xff;
}

static void t_context(void)
{
    set_handler(SIGILL, on_ill, 0);
    set_handler(SIGTRAP, on_trap, 0);
    for (int i = 0; i < 20; i++) {
        uint32_t eax, cf;
        __asm__ volatile("movl $0, %%eax\n\tclc\n\tud2\n\tsetc %%cl\n\tmovzbl %%cl, %[cf]"
                         : "=&a"(eax), [cf] "=r"(cf) : : "ecx", "cc");
        if (eax != 0x5ca1ab1e || cf != 1 || ctx_code != ILL_ILLOPN) fail("sigill-ctx");
        uint32_t a = (uint32_t)i, c = 0x0f;
        __asm__ volatile("int3" : "+a"(a), "+c"(c));
        if (a != (uint32_t)i + 0x1000 || c != 0xf0) fail("sigtrap-ctx");
        ck_u32(&ck, eax ^ a ^ c);
    }
    signal(SIGILL, SIG_DFL);
    signal(SIGTRAP, SIG_DFL);
}

int main(void)
{
    suite_init();
    ck_init(&ck);
    t_segv_map();
    busy_until_signal(ITIMER_REAL, SIGALRM, "ITIMER_REAL");
    busy_until_signal(ITIMER_VIRTUAL, SIGVTALRM, "ITIMER_VIRTUAL");
    busy_until_signal(ITIMER_PROF, SIGPROF, "ITIMER_PROF");
    t_eintr();
    t_altstack();
    t_masks();
    t_sigchld();
    t_context();
    result_ck("signals", &ck);
    return 0;
}
