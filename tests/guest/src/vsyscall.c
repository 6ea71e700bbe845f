/*
 * vsyscall: the legacy vsyscall page at 0xffffffffff600000 (x86-64 only).
 *
 * The kernel's mode shows in /proc/self/maps: no [vsyscall] line (none),
 * "--xp" (xonly: calls are emulated, reads fault) or "r-xp" (emulate).
 * Where the page exists, time() is called directly at 0xffffffffff600400
 * (its result must equal time(NULL) within a second, and the value it
 * stores through its argument must equal what it returns) and
 * gettimeofday() at 0xffffffffff600000 (within a second of
 * clock_gettime(CLOCK_REALTIME)); then a byte of the page is read: SIGSEGV
 * in xonly mode.  The result names the mode and these outcomes, nothing
 * that depends on the time.  The guest boots with vsyscall=xonly, the
 * x86-64 kernels' usual default (Debian bookworm's is none).
 */
#include "common.h"
#include <setjmp.h>
#include <signal.h>
#include <sys/time.h>
#include <time.h>

#if !defined(__x86_64__)
#error "vsyscall is an x86-64 program"
#endif

#define VSYS_GTOD 0xffffffffff600000UL
#define VSYS_TIME 0xffffffffff600400UL

static const char *vsyscall_mode(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) fail("maps");
    char line[512];
    const char *mode = "none";
    while (fgets(line, sizeof line, f)) {
        if (!strstr(line, "[vsyscall]")) continue;
        char perms[8] = "";
        if (sscanf(line, "%*x-%*x %7s", perms) != 1) fail("maps-line");
        mode = !strcmp(perms, "--xp") ? "xonly" : !strcmp(perms, "r-xp") ? "emulate" : "other";
        if (strncmp(line, "ffffffffff600000-ffffffffff601000 ", 34)) fail("vsyscall-range");
    }
    fclose(f);
    return mode;
}

static sigjmp_buf jb;
static volatile void *fault_addr;
static void on_segv(int sig, siginfo_t *si, void *uc)
{
    (void)sig; (void)uc;
    fault_addr = si->si_addr;
    siglongjmp(jb, 1);
}

int main(void)
{
    suite_init();
    const char *volatile mode = vsyscall_mode();
    if (!strcmp(mode, "none")) {
        result("vsyscall-none");
        return 0;
    }
    /* time() through the vsyscall page */
    const char *volatile call = "call-ok";
    for (int i = 0; i < 20; i++) {
        time_t (*vtime)(time_t *) = (time_t (*)(time_t *))VSYS_TIME;
        time_t stored = 0;
        time_t a = time(NULL);
        time_t v = vtime(&stored);
        time_t b = time(NULL);
        if (v < a - 1 || v > b + 1) call = "call-time-differs";
        else if (stored != v) call = "call-store-differs";
        int (*vgtod)(struct timeval *, void *) = (int (*)(struct timeval *, void *))VSYS_GTOD;
        struct timeval tv;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        if (vgtod(&tv, NULL) != 0) call = "gtod-failed";
        else if (tv.tv_sec < ts.tv_sec - 1 || tv.tv_sec > ts.tv_sec + 1) call = "gtod-differs";
    }
    /* a read of the page */
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, &old);
    const char *volatile rd;
    if (sigsetjmp(jb, 1) == 0) {
        volatile unsigned char c = *(volatile unsigned char *)VSYS_GTOD;
        (void)c;
        rd = "read-ok";
    } else {
        rd = fault_addr == (void *)VSYS_GTOD ? "read-segv" : "read-segv-elsewhere";
    }
    sigaction(SIGSEGV, &old, NULL);
    result("vsyscall-%s-%s-%s", mode, call, rd);
    return 0;
}
