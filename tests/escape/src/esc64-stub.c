/*
 * Reads, writes and jumps at the stub executor's region S and where the launcher's image,
 * stack and vDSO were, from 64-bit guest code (a SIGSEGV/SIGBUS/SIGILL handler and
 * siglongjmp report each outcome).
 *
 * S (esc64.h): every 4 KiB page of S itself (code page, library pages, stub pages: one case
 * line each) and of the rest of its 2 MiB (one line: how many pages gave each outcome), the
 * page below S, the first page after the 2 MiB and the last page of S's 4 GiB block. The
 * launcher's old addresses are those of a host process without address-space randomisation
 * (the launcher is an ordinary PIE binary; the stub unmaps all of it, and randomised addresses
 * are not predictable anyway, so these are the ones a guest would try): 0x555555554000 (the
 * PIE image's base), 0x7ffff7fc1000 (where the vDSO/vvar and ld.so sit below the stack gap)
 * and 0x7ffffffde000 (the bottom of a 132 KiB [stack] below 0x7ffffffff000). Also a
 * non-canonical address and one in the kernel half.
 *
 * Two passes: first with nothing of the guest's mapped there (the guest kernel maps nothing:
 * plain Bochs gives SIGSEGV everywhere, and so must any run, whatever the host has there);
 * then the guest maps each place itself (MAP_FIXED_NOREPLACE), writes a distinct byte and a
 * small function to every page, reads it back and calls it (the guest's own memory must be
 * what it sees, never the stub's), and unmaps it again. /proc/self/maps of the guest is
 * checked to hold nothing in S before and after.
 *
 * Natively these accesses hit the stub process's address space (S's pages exist there; the
 * launcher's do not). Without protection keys S's pages answer native accesses as the stub
 * maps them: reads succeed, writes in the stub's RW pages too, a jump into its code page runs
 * the stub, which is contained (#GP(0): SIGSEGV/128). tests/escape/run's `stub-pages`
 * expectation allows exactly these outcomes on S's pages, and plain Bochs's everywhere else.
 * A "cpu: s-native-probes=" line says how many of S's probes started natively.
 *
 *   esc64-stub [STUB-BASE]      (hex, default 0x3f0000000000)
 */
#include "esc64.h"

#include <sys/mman.h>
#include <sys/syscall.h>

static unsigned long S = STUB_DEFAULT_BASE;
static sigjmp_buf jb;
static volatile int caught, caught_code;
static volatile unsigned long caught_addr;

static void on_signal(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    caught = sig;
    caught_code = si->si_code;
    caught_addr = (unsigned long)si->si_addr;
    siglongjmp(jb, 1);
}

/* Outcome of one access: "ok" (with the value read or returned), or the signal, si_code and
 * whether si_addr was the address probed. */
static const char *outcome(unsigned long addr, int op, char *buf, size_t n)
{
    caught = 0;
    volatile long v = 0;
    /* The wait comes after sigsetjmp's system call, right before the access: a native stretch
     * is then what the access follows. */
    if (sigsetjmp(jb, 1) == 0) {
        probe_start();
        if (op == 'r')
            v = *(volatile unsigned char *)addr;
        else if (op == 'w')
            *(volatile unsigned char *)addr = 0xc3;
        else
            v = ((long (*)(void))addr)();
    }
    if (!caught) {
        if (op == 'w')
            snprintf(buf, n, "ok");
        else
            snprintf(buf, n, "ok:%#lx", (unsigned long)v);
    } else {
        snprintf(buf, n, "%s/%d/%s", caught == SIGSEGV ? "SIGSEGV" : caught == SIGBUS ? "SIGBUS"
                                   : caught == SIGILL ? "SIGILL" : "SIG?",
                 caught_code, caught_addr == addr ? "at-addr" : caught_addr == 0 ? "addr-0" : "addr-other");
    }
    return buf;
}

static void probe_place(const char *name, unsigned long addr)
{
    char r[64], w[64], x[64];
    outcome(addr, 'r', r, sizeof r);
    outcome(addr, 'w', w, sizeof w);
    outcome(addr, 'x', x, sizeof x);
    report(name, "read=%s write=%s jump=%s", r, w, x);
}

/* Every page of [start, end): one line with each distinct outcome and its page count. */
static void probe_range_summary(const char *name, unsigned long start, unsigned long end)
{
    char seen[8][224];
    unsigned counts[8] = {0}, kinds = 0;
    for (unsigned long a = start; a < end; a += 4096) {
        char r[64], w[64], x[64], line[224];
        outcome(a, 'r', r, sizeof r);
        outcome(a, 'w', w, sizeof w);
        outcome(a, 'x', x, sizeof x);
        snprintf(line, sizeof line, "read=%s write=%s jump=%s", r, w, x);
        unsigned k = 0;
        while (k < kinds && strcmp(seen[k], line) != 0)
            k++;
        if (k == kinds) {
            if (kinds == 8)
                fail("too-many-outcomes-%s", name);
            snprintf(seen[kinds++], sizeof seen[0], "%s", line);
        }
        counts[k]++;
    }
    char out[1024] = "";
    size_t len = 0;
    for (unsigned k = 0; k < kinds && len < sizeof out; k++)
        len += (size_t)snprintf(out + len, sizeof out - len, "%s%u-pages:%s", k ? " | " : "", counts[k], seen[k]);
    report(name, "%s", out);
}

/* The guest's own /proc/self/maps lines that meet [start, end). */
static unsigned maps_lines_in(unsigned long start, unsigned long end)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        fail("maps");
    char line[512];
    unsigned n = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx", &a, &b) == 2 && a < end && b > start)
            n++;
    }
    fclose(f);
    return n;
}

struct place {
    const char *name;
    unsigned long addr;
};

/* The first of the guest's own /proc/self/maps lines that meets a probed place (S's 2 MiB,
 * one page at each of `places`), copied to `line`; 0 if none does. */
static int own_mapping_at_places(const struct place *places, unsigned n, char *line, size_t len)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        fail("maps");
    int hit = 0;
    while (!hit && fgets(line, (int)len, f)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx", &a, &b) != 2)
            continue;
        hit = a < S + STUB_ALIGN && b > S;
        for (unsigned i = 0; i < n && !hit; i++)
            hit = a < places[i].addr + 4096 && b > places[i].addr;
    }
    fclose(f);
    line[strcspn(line, "\n")] = 0;
    return hit;
}

/* The guest kernel randomises this process's layout (its RNG takes RDRAND, so plain Bochs
 * too differs from boot to boot), and once in a while a mapping of its own (stack, vDSO, an
 * mmap) lands on a place probed as empty: the probe would then read the guest's own memory,
 * in one run and not the other. Such a layout is discarded by executing the program again,
 * with a fresh one, before anything is compared; the info: line (not compared) says why. */
static void avoid_own_mappings(const struct place *places, unsigned n, char **argv)
{
    char line[512];
    if (!own_mapping_at_places(places, n, line, sizeof line))
        return;
    const char *env = getenv("ESC64_STUB_REEXEC");
    int tries = env ? atoi(env) : 0;
    info("the guest's own mapping \"%s\" meets a probed place: running again (%d)", line, tries + 1);
    if (tries >= 16)
        fail("own-mappings-at-places");
    char next[16];
    snprintf(next, sizeof next, "%d", tries + 1);
    setenv("ESC64_STUB_REEXEC", next, 1);
    fflush(stdout);
    execv("/proc/self/exe", argv);
    fail("reexec");
}

/* Probes of S's own pages, and how many of them started natively. */
static unsigned s_probes, s_native;

static void unmapped_pass(const struct place *places, unsigned n)
{
    char name[64];
    for (unsigned long off = 0; off < STUB_S_LEN; off += 4096) {
        const char *part = off < STUB_CODE_LEN ? "code" : off < STUB_STUB ? "lib" : "stub";
        snprintf(name, sizeof name, "S+%#07lx-%s", off, part);
        unsigned native_before = probes_native;
        probe_place(name, S + off);
        s_probes += 3;
        s_native += probes_native - native_before;
    }
    /* The rest faults on the host as in the guest (nothing of the stub's is there): a few
     * tries each are enough, and keep the boot short. */
    probe_tries = 3;
    probe_range_summary("S-rest-of-2MiB", S + STUB_S_LEN, S + STUB_ALIGN);
    for (unsigned i = 0; i < n; i++)
        probe_place(places[i].name, places[i].addr);
}

/* The guest maps len bytes at addr, puts `mov $tag, %eax; ret` (tag: page number and a salt)
 * on every page, then reads, writes and calls each: returns how many pages did all three
 * right, or a negative errno of the mmap. */
static long mapped_pass_one(unsigned long addr, unsigned long len, unsigned salt)
{
    long r = sys6(SYS_mmap, addr, len, PROT_READ | PROT_WRITE | PROT_EXEC,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (r < 0 && r > -4096)
        return r;
    if ((unsigned long)r != addr) {
        sys6(SYS_munmap, r, len, 0, 0, 0, 0);
        return -EEXIST;
    }
    for (unsigned long off = 0; off < len; off += 4096) {
        unsigned char *p = (unsigned char *)(addr + off);
        uint32_t tag = (uint32_t)(off >> 12) * 0x10000u + salt;
        p[0] = 0xb8;
        memcpy(p + 1, &tag, 4);
        p[5] = 0xc3;
        p[4095] = (unsigned char)(off >> 12);
    }
    long good = 0;
    for (unsigned long off = 0; off < len; off += 4096) {
        char b[64];
        uint32_t tag = (uint32_t)(off >> 12) * 0x10000u + salt;
        char want_r[32], want_x[32];
        snprintf(want_r, sizeof want_r, "ok:%#x", 0xb8);
        snprintf(want_x, sizeof want_x, "ok:%#x", tag);
        int ok = strcmp(outcome(addr + off, 'r', b, sizeof b), want_r) == 0;
        ok &= *(volatile unsigned char *)(addr + off + 4095) == (unsigned char)(off >> 12);
        ok &= strcmp(outcome(addr + off, 'x', b, sizeof b), want_x) == 0;
        ok &= strcmp(outcome(addr + off + 4095, 'w', b, sizeof b), "ok") == 0;
        good += ok;
    }
    sys6(SYS_munmap, addr, len, 0, 0, 0, 0);
    return good;
}

static void mapped_pass(const struct place *places, unsigned n)
{
    long g = mapped_pass_one(S, STUB_ALIGN, 0x5a);
    if (g < 0)
        report("guest-mapped-S-2MiB", "mmap=%s", strerror((int)-g));
    else
        report("guest-mapped-S-2MiB", "pages-right=%ld/%lu", g, STUB_ALIGN / 4096);
    for (unsigned i = 0; i < n; i++) {
        char name[80];
        snprintf(name, sizeof name, "guest-mapped-%s", places[i].name);
        g = mapped_pass_one(places[i].addr, 4096, 0xa5 + i);
        if (g < 0)
            report(name, "mmap=%s", strerror((int)-g));
        else
            report(name, "pages-right=%ld/1", g);
    }
}

int main(int argc, char **argv)
{
    esc_init();
    if (argc > 2)
        fail("usage: esc64-stub [STUB-BASE]");
    if (argc == 2)
        S = strtoul(argv[1], NULL, 16);
    if (S % STUB_ALIGN || S < (1UL << 32))
        fail("bad-stub-base");
    info("stub base %#lx", S);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGILL, &sa, NULL);

    const unsigned long block = S & ~0xffffffffUL;
    const struct place places[] = {
        {"below-S", S - 4096},
        {"after-S-2MiB", S + STUB_ALIGN},
        {"S-block-last-page", block + (1UL << 32) - 4096},
        {"launcher-image-0x555555554000", 0x555555554000UL},
        {"launcher-vdso-0x7ffff7fc1000", 0x7ffff7fc1000UL},
        {"launcher-stack-0x7ffffffde000", 0x7ffffffde000UL},
    };
    const unsigned n = sizeof places / sizeof places[0];
    avoid_own_mappings(places, n, argv);

    report("guest-maps-in-S-block-before", "%u", maps_lines_in(block, block + (1UL << 32)));
    unmapped_pass(places, n);
    probe_place("noncanonical-0x800000000000", 0x800000000000UL);
    probe_place("kernel-half-0xffff888000000000", 0xffff888000000000UL);
    mapped_pass(places, n);
    /* and nothing is left behind */
    probe_place("S-code-again", S);
    probe_place("S-stub-again", S + STUB_STUB);
    report("guest-maps-in-S-block-after", "%u", maps_lines_in(block, block + (1UL << 32)));

    native_evidence();
    printf("cpu: s-native-probes=%u/%u\n", s_native, s_probes);
    finish();
    return 0;
}
