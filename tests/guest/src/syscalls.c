/*
 * syscalls: system call entry paths.
 *
 * The same calls are made through "int $0x80", through the vDSO's
 * __kernel_vsyscall (getauxval(AT_SYSINFO)) and through glibc, and must
 * agree: getpid, getppid, write/read on a pipe, a 6-argument mmap2,
 * an unknown number (-ENOSYS), a bad pointer (-EFAULT), uname's sysname,
 * and clock_gettime ordering between the vDSO and the real system call.
 *
 * Raw SYSENTER and SYSCALL instructions are tried too, with the frame
 * __kernel_vsyscall builds.  Whether they work depends on the CPU and
 * kernel (SYSENTER is #UD for 32-bit code on AMD 64-bit hosts, SYSCALL is
 * #UD on Intel CPUs outside 64-bit mode), so their outcome only goes to
 * "cpu:" lines: ok, sigill, or a description of what went wrong.
 *
 * x86-64 build (rawsys64.S): the same checks through the raw SYSCALL
 * instruction and through glibc's syscall() (mmap with a byte offset instead
 * of mmap2); "int $0x80" from 64-bit code (the i386 compat ABI, which a
 * kernel may have turned off) is tried with getpid and goes to a "cpu:" line.
 */
#define _GNU_SOURCE
#include "common.h"
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <time.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>

long raw_int80(const long *args);
static ck_t ck;
#if defined(__x86_64__)
long raw_syscall64(const long *args);
/* the two paths compared, named as in the i386 build: P_INT80 is the raw
 * instruction, P_VSYS the C library */
enum { P_INT80, P_VSYS };
#define SYS_mmap2 SYS_mmap
#define MMAP_OFF(pages) ((pages) * 4096L) /* mmap's offset is in bytes */

static long call6(int path, long nr, long a, long b, long c, long d, long e, long f)
{
    long args[7] = { nr, a, b, c, d, e, f };
    if (path == P_INT80) return raw_syscall64(args);
    long r = syscall(nr, a, b, c, d, e, f);
    return r == -1 ? -errno : r;
}
#else
long raw_vsyscall(const long *args, void *fn);
long raw_sysenter(const long *args);
long raw_syscall(const long *args);

static void *vsys;

enum { P_INT80, P_VSYS, P_SYSENTER, P_SYSCALL };
#define MMAP_OFF(pages) (pages) /* mmap2's offset is in pages */

static long call6(int path, long nr, long a, long b, long c, long d, long e, long f)
{
    long args[7] = { nr, a, b, c, d, e, f };
    switch (path) {
    case P_INT80: return raw_int80(args);
    case P_VSYS: return raw_vsyscall(args, vsys);
    case P_SYSENTER: return raw_sysenter(args);
    default: return raw_syscall(args);
    }
}
#endif
#define CALL(path, nr, ...) call6(path, nr, ##__VA_ARGS__, 0, 0, 0, 0, 0, 0)
#define call6(p, nr, a, b, c, d, e, f, ...) (call6)(p, nr, (long)(a), (long)(b), (long)(c), \
                                                    (long)(d), (long)(e), (long)(f))

/* Runs the common checks through one path.  Returns 0 if all agree with
 * glibc, otherwise a short code of the first mismatch. */
static const char *check_path(int path, uint32_t *sum)
{
    long pid = getpid(), ppid = getppid();
    int fds[2];
    char buf[32];
    const char *bad = NULL;
    if (pipe(fds)) fail("pipe");
    for (int i = 0; i < 50 && !bad; i++) {
        if (CALL(path, SYS_getpid) != pid) bad = "getpid";
        else if (CALL(path, SYS_getppid) != ppid) bad = "getppid";
        else if (CALL(path, SYS_write, fds[1], "hello, world\n", 13) != 13) bad = "write";
        else if (CALL(path, SYS_read, fds[0], buf, sizeof buf) != 13 || memcmp(buf, "hello, world\n", 13))
            bad = "read";
        *sum += (uint32_t)i;
    }
    if (!bad) {
        /* 6 arguments: mmap2(NULL, 8192, RW, PRIVATE|ANON, -1, 0) */
        long m = CALL(path, SYS_mmap2, 0, 8192, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m < 0 && m > -4096) bad = "mmap2";
        else {
            ((volatile char *)m)[8191] = 1;
            if (CALL(path, SYS_munmap, m, 8192) != 0) bad = "munmap";
        }
        /* 6th argument actually used: mmap2 of a pipe fails with ENODEV,
         * of -1 with nonzero page offset on an anonymous map is fine */
        long m2 = CALL(path, SYS_mmap2, 0, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, MMAP_OFF(3));
        if (!bad && (m2 < 0 && m2 > -4096)) bad = "mmap2-off";
        else if (!bad) CALL(path, SYS_munmap, m2, 4096);
    }
    if (!bad && CALL(path, 9999) != -ENOSYS) bad = "enosys";
    if (!bad && CALL(path, SYS_write, fds[1], 1, 10) != -EFAULT) bad = "efault";
    if (!bad) {
        struct utsname u;
        if (CALL(path, SYS_uname, &u) != 0 || strcmp(u.sysname, "Linux") != 0) bad = "uname";
    }
    close(fds[0]);
    close(fds[1]);
    return bad;
}

static sigjmp_buf jb;
static volatile int caught;
static void on_sig(int sig, siginfo_t *si, void *uc)
{
    (void)si; (void)uc;
    caught = sig;
    siglongjmp(jb, 1);
}

__attribute__((unused)) /* i386 only */
static void try_fast_path(int path, const char *name)
{
    struct sigaction sa, o1, o2, o3;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sig;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGILL, &sa, &o1);
    sigaction(SIGSEGV, &sa, &o2);
    sigaction(SIGBUS, &sa, &o3);
    caught = 0;
    uint32_t dummy = 0;
    const char *volatile bad = NULL;
    if (sigsetjmp(jb, 1) == 0)
        bad = check_path(path, &dummy);
    sigaction(SIGILL, &o1, NULL);
    sigaction(SIGSEGV, &o2, NULL);
    sigaction(SIGBUS, &o3, NULL);
    if (caught == SIGILL) cpu_line(name, "sigill");
    else if (caught) cpu_line(name, "signal-%d", caught);
    else if (bad) cpu_line(name, "mismatch-%s", bad);
    else cpu_line(name, "ok");
}

#if defined(__x86_64__)
static void try_int80(void)
{
    struct sigaction sa, o1;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sig;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, &o1);
    caught = 0;
    volatile long r = 0;
    if (sigsetjmp(jb, 1) == 0) {
        long args[7] = { 20 /* i386 getpid */, 0, 0, 0, 0, 0, 0 };
        r = raw_int80(args);
    }
    sigaction(SIGSEGV, &o1, NULL);
    if (caught) cpu_line("int80", "signal-%d", caught);
    else if (r == getpid()) cpu_line("int80", "ok");
    else cpu_line("int80", "returned-%ld", (long)r);
}
#endif

static void t_time(void)
{
    /* vDSO (through glibc) and the real system call read the same clock */
    for (int i = 0; i < 200; i++) {
        struct timespec a, b, c;
        clock_gettime(CLOCK_MONOTONIC, &a);
        if (CALL(P_INT80, SYS_clock_gettime, CLOCK_MONOTONIC, &b) != 0) fail("clock_gettime");
        clock_gettime(CLOCK_MONOTONIC, &c);
        long long ta = a.tv_sec * 1000000000LL + a.tv_nsec;
        long long tb = b.tv_sec * 1000000000LL + b.tv_nsec;
        long long tc = c.tv_sec * 1000000000LL + c.tv_nsec;
        if (ta > tb || tb > tc) fail("vdso-time-order");
    }
    ck_u32(&ck, 0x71);
}

int main(void)
{
    suite_init();
    ck_init(&ck);
#if defined(__i386__)
    vsys = (void *)getauxval(AT_SYSINFO);
    if (!vsys) fail("no-AT_SYSINFO");
#endif
    uint32_t s1 = 0, s2 = 0;
    const char *bad = check_path(P_INT80, &s1);
    if (bad) fail("int80-%s", bad);
    bad = check_path(P_VSYS, &s2);
    if (bad) fail("vsyscall-%s", bad);
    if (s1 != s2) fail("sum");
    ck_u32(&ck, s1);
    /* results of both paths agree on these values directly */
    if (CALL(P_INT80, SYS_getpid) != CALL(P_VSYS, SYS_getpid)) fail("getpid-agree");
    if (CALL(P_INT80, SYS_getppid) != CALL(P_VSYS, SYS_getppid)) fail("getppid-agree");
    ck_u32(&ck, (uint32_t)CALL(P_VSYS, SYS_write, -1, "x", 1));   /* -EBADF */
    ck_u32(&ck, (uint32_t)CALL(P_INT80, 9999));                    /* -ENOSYS */
    /* a write to our own stdout goes through all the way */
#if defined(__x86_64__)
    static const char line[] = "info: written through syscall\n";
#else
    static const char line[] = "info: written through int $0x80\n";
#endif
    long w = CALL(P_INT80, SYS_write, 1, line, sizeof line - 1);
    if (w != (long)sizeof line - 1) fail("write-stdout");
    ck_u32(&ck, (uint32_t)w);
    t_time();
#if defined(__x86_64__)
    try_int80();
#else
    try_fast_path(P_SYSENTER, "sysenter");
    try_fast_path(P_SYSCALL, "syscall");
#endif
    result_ck("syscalls", &ck);
    return 0;
}
