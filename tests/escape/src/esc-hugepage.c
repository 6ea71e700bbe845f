/*
 * Large pages (issue 11, item 1). The executor mirrors a guest 2 MiB (PAE) or 4 MiB (PSE) page
 * as 4 KiB pieces; Linux changes such a mapping with one INVLPG for the whole large page, which
 * must drop every piece. Each scenario writes several 4 KiB pieces of a large page natively
 * (pieces 1, 5, 700/1024 of the way and the last: so that the mirror holds them), lets the
 * kernel change the mapping with one system call, and then touches the same pieces natively
 * again; plain Bochs, the oracle, has no mirror, so any piece that outlived its translation
 * shows as a difference.
 *
 * Backings (both exist on both test kernels: the 6.1 i386 kernels have transparent huge pages
 * with PMD-sized pages, 2 MiB on 686-pae and 4 MiB on the non-PAE 686, and hugetlbfs with the
 * same page size):
 *   thp       anonymous memory with madvise(MADV_HUGEPAGE) on an aligned region. The program
 *             (root in the test guest) sets /sys/kernel/mm/transparent_hugepage/enabled and
 *             defrag to madvise (below 512 MiB of RAM the kernel starts with THP off) and
 *             restores them at the end;
 *   hugetlb   mmap(MAP_HUGETLB) from a pool the program sets with /proc/sys/vm/nr_hugepages.
 * Each is checked in /proc/self/smaps (AnonHugePages, resp. Private_Hugetlb, must equal the
 * large page size): the case lines say huge=yes, and when a backing the kernel offers did not
 * give a large page the result line is a FAIL (a run silently backed by 4 KiB pages must not
 * pass). A backing the kernel lacks is reported as such on the `case: available` line.
 *
 * Scenarios, per backing:
 *   munmap      unmap: reads of the pieces must give SIGSEGV (SEGV_MAPERR)
 *   dontneed    MADV_DONTNEED: reads must give zeros
 *   mprotect    mprotect(PROT_READ): writes must give SIGSEGV (SEGV_ACCERR), the data unchanged
 *   split       mprotect(PROT_READ) of the upper half only (THP: the kernel splits the page;
 *               hugetlb refuses an unaligned range): writes below succeed, above fault
 *   remap       unmap, fault in another large buffer (which usually gets the freed frame:
 *               info line), map the address again and write the pieces: the other buffer must
 *               stay intact, and the kernel's view (pread of /proc/self/mem) and a native read
 *               must show the new values
 *   khugepaged  (thp only) two users. A root victim fills a region with 4 KiB pages of
 *               "SECRET" data and marks it MADV_HUGEPAGE, so that khugepaged will collapse it
 *               into a freshly allocated large page. khugepaged is set to sleep S ms between
 *               scans (scan_sleep_millisecs; the write wakes it for one scan at once, and the
 *               parent keeps an eligible region registered so that it then sleeps the timed S
 *               rather than waiting for work), pages_to_scan 4096, alloc_sleep_millisecs 50.
 *               Within those S ms an attacker (fork, setgid/setuid 65534) faults in a large
 *               page of its own, writes every piece of it natively (in batches below the
 *               accelerator's fill limit, each started natively), frees it with
 *               MADV_DONTNEED (the freed frame goes to the head of the per-CPU free list,
 *               where khugepaged's allocation finds it), sets MADV_NOHUGEPAGE, and then for
 *               up to 3 S reads every piece natively between 5 ms sleeps. Only kernel threads
 *               run in that time (the parent, victim and shell are blocked), so no CR3 load
 *               flushes the attacker's mirror: a piece that outlived the INVLPG still reaches
 *               the frame khugepaged copies the secret into. The attacker must see only zeros
 *               (never the secret, never its own old data); the victim's region must have
 *               been collapsed (smaps) and its data intact. The parent reads both frames in
 *               /proc/PID/pagemap for an info line (reused or not: not compared).
 * Every access that matters is started natively (wait_native just before it). Only outcomes
 * that follow from the kernel's semantics are printed; frame numbers and timings are info
 * lines.
 *
 *   esc-hugepage
 */
#define _FILE_OFFSET_BITS 64 /* pread of /proc/self/mem at addresses above 2 GiB */
#include "esc.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/mman.h>
#include <time.h>

#ifndef MAP_HUGETLB
#define MAP_HUGETLB 0x40000
#endif
#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14
#define MADV_NOHUGEPAGE 15
#endif

#define PIECE 4096u
#define THP_DIR "/sys/kernel/mm/transparent_hugepage"
#define KHP_DIR THP_DIR "/khugepaged"
#define NR_HUGEPAGES "/proc/sys/vm/nr_hugepages"
#define SCAN_SLEEP_MS 4000u
#define SECRET "SECRET!!"

/* ---- small helpers -------------------------------------------------------------------- */

static int read_text(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = 0;
    return 0;
}

static int write_text(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, text, strlen(text));
    int e = errno;
    close(fd);
    return n == (ssize_t)strlen(text) ? 0 : -e;
}

/* The selected word of a sysfs choice file ("always [madvise] never" -> "madvise"). */
static void selected(const char *text, char *out, size_t size)
{
    const char *a = strchr(text, '['), *b = a ? strchr(a, ']') : NULL;
    if (!a || !b || (size_t)(b - a) > size)
        snprintf(out, size, "%s", text);
    else
        snprintf(out, size, "%.*s", (int)(b - a - 1), a + 1);
}

struct smaps {
    long anon_huge_kb, hugetlb_kb, kernel_page_kb;
    int found;
};

/* The smaps fields of the mapping that contains addr in process pid (0: self). */
static struct smaps smaps_of(pid_t pid, uintptr_t addr)
{
    struct smaps s = {0, 0, 0, 0};
    char path[64], line[256];
    snprintf(path, sizeof path, pid ? "/proc/%d/smaps" : "/proc/self/smaps", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return s;
    int in = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perms[8];
        long kb;
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3) {
            in = addr >= lo && addr < hi;
            s.found |= in;
            continue;
        }
        if (!in)
            continue;
        if (sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
            s.anon_huge_kb += kb;
        else if (sscanf(line, "Private_Hugetlb: %ld kB", &kb) == 1 || sscanf(line, "Shared_Hugetlb: %ld kB", &kb) == 1)
            s.hugetlb_kb += kb;
        else if (sscanf(line, "KernelPageSize: %ld kB", &kb) == 1)
            s.kernel_page_kb = kb;
    }
    fclose(f);
    return s;
}

/* Physical frame of addr in process pid (0: self) from pagemap (root only), 0 if unknown. */
static uint64_t pfn_of(pid_t pid, uintptr_t addr)
{
    char path[64];
    snprintf(path, sizeof path, pid ? "/proc/%d/pagemap" : "/proc/self/pagemap", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    uint64_t e = 0;
    ssize_t n = pread(fd, &e, sizeof e, (off_t)(addr / PIECE) * 8);
    close(fd);
    if (n != sizeof e || !(e >> 63))
        return 0;
    return e & ((1ULL << 55) - 1);
}

/* The kernel's view of a word: pread of /proc/self/mem (the kernel walks the page tables). */
static const char *kernel_word(uintptr_t addr, char *buf, size_t size)
{
    int fd = open("/proc/self/mem", O_RDONLY);
    uint32_t v;
    ssize_t n = fd < 0 ? -1 : pread(fd, &v, sizeof v, (off_t)addr);
    int e = errno;
    if (fd >= 0)
        close(fd);
    if (n == sizeof v)
        snprintf(buf, size, "%#x", v);
    else
        snprintf(buf, size, "err%d", n < 0 ? e : 0);
    return buf;
}

/* ---- native accesses that may fault --------------------------------------------------- */

static sigjmp_buf jb;
static volatile int fault_code;

static void on_fault(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    fault_code = (sig == SIGBUS ? 100 : 0) + si->si_code;
    siglongjmp(jb, 1);
}

static void start_native(void)
{
    if (accel_seen) {
        probes_run++;
        probes_native += wait_native(20000000);
    }
}

/* Reads (write=0) or writes the word at p, natively; the outcome as text: the value read,
 * "ok" for a write, or "SEGV/<si_code>" ("BUS/<si_code>"). No system call between the wait
 * and the access: sigsetjmp does not save the mask (the handler is SA_NODEFER). */
static const char *access_word(volatile uint32_t *p, int write, uint32_t value, char *buf, size_t size)
{
    if (sigsetjmp(jb, 0) == 0) {
        start_native();
        if (write) {
            *p = value;
            snprintf(buf, size, "ok");
        } else {
            uint32_t v = *p;
            snprintf(buf, size, "%#x", v);
        }
    } else {
        int c = fault_code;
        snprintf(buf, size, "%s/%d", c >= 100 ? "BUS" : "SEGV", c >= 100 ? c - 100 : c);
    }
    return buf;
}

/* ---- backings ------------------------------------------------------------------------- */

struct backing {
    const char *name;
    int thp;
    size_t size;    /* the large page size, 0 if unavailable */
    unsigned bad;   /* regions that did not get a large page */
};

static unsigned pieces[4];

static void set_pieces(size_t size)
{
    unsigned n = (unsigned)(size / PIECE);
    pieces[0] = 1;
    pieces[1] = 5;
    pieces[2] = n * 700 / 1024;
    pieces[3] = n - 1;
}

static volatile uint32_t *word_at(uint8_t *base, unsigned piece)
{
    return (volatile uint32_t *)(base + (size_t)piece * PIECE + 8);
}

/* Maps one large page's worth of memory, at fixed (aligned) when not NULL; returns NULL on
 * failure. thp: an aligned anonymous region with MADV_HUGEPAGE, exactly one large page long. */
static uint8_t *map_large(struct backing *b, uint8_t *fixed)
{
    if (!b->thp) {
        void *p = mmap(fixed, b->size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | (fixed ? MAP_FIXED : 0), -1, 0);
        return p == MAP_FAILED ? NULL : p;
    }
    uint8_t *r;
    if (fixed) {
        r = mmap(fixed, b->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (r == MAP_FAILED)
            return NULL;
    } else {
        uint8_t *raw = mmap(NULL, 2 * b->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (raw == MAP_FAILED)
            return NULL;
        r = (uint8_t *)(((uintptr_t)raw + b->size - 1) & ~(uintptr_t)(b->size - 1));
        if (r > raw)
            munmap(raw, (size_t)(r - raw));
        if (r + b->size < raw + 2 * b->size)
            munmap(r + b->size, (size_t)(raw + 2 * b->size - (r + b->size)));
    }
    if (madvise(r, b->size, MADV_HUGEPAGE) != 0) {
        munmap(r, b->size);
        return NULL;
    }
    return r;
}

/* Whether the mapping at r is backed by one large page (after its first fault). */
static int is_large(struct backing *b, uint8_t *r)
{
    struct smaps s = smaps_of(0, (uintptr_t)r);
    long want = (long)(b->size / 1024);
    int ok = b->thp ? s.anon_huge_kb == want : s.hugetlb_kb == want && s.kernel_page_kb == want;
    if (!ok) {
        b->bad++;
        info("%s: region not backed by a large page: AnonHugePages %ld kB, hugetlb %ld kB, "
             "KernelPageSize %ld kB", b->name, s.anon_huge_kb, s.hugetlb_kb, s.kernel_page_kb);
    }
    return ok;
}

/* A mapped, faulted-in large page whose pieces were written natively with tag + piece. */
static uint8_t *prepared(struct backing *b, const char *scenario, int *large)
{
    uint8_t *r = map_large(b, NULL);
    if (!r)
        fail("%s-%s-map-errno%d", b->name, scenario, errno);
    r[0] = 1; /* the first fault: the large page */
    *large = is_large(b, r);
    start_native();
    for (unsigned i = 0; i < 4; i++)
        *word_at(r, pieces[i]) = 0xa0 + pieces[i];
    return r;
}

/* "p1=<outcome> p5=<outcome> ..." of an access to every piece. */
static void access_pieces(uint8_t *r, int write, uint32_t tag, char *out, size_t size)
{
    size_t len = 0;
    char one[32];
    out[0] = 0;
    for (unsigned i = 0; i < 4 && len < size; i++)
        len += (size_t)snprintf(out + len, size - len, "%sp%u=%s", i ? " " : "", pieces[i],
                                access_word(word_at(r, pieces[i]), write, tag + pieces[i], one, sizeof one));
}

static const char *ret_text(int r, char *buf, size_t size)
{
    snprintf(buf, size, r == 0 ? "0" : "-%d", errno);
    return buf;
}

static void scenario_munmap(struct backing *b)
{
    int large;
    char out[256];
    uint8_t *r = prepared(b, "munmap", &large);
    char rb[16], name[32];
    ret_text(munmap(r, b->size), rb, sizeof rb);
    access_pieces(r, 0, 0, out, sizeof out);
    snprintf(name, sizeof name, "%s-munmap", b->name);
    report(name, "huge=%s ret=%s read: %s", large ? "yes" : "no", rb, out);
}

static void scenario_dontneed(struct backing *b)
{
    int large;
    char out[256], rb[16], name[32];
    uint8_t *r = prepared(b, "dontneed", &large);
    int ret = madvise(r, b->size, MADV_DONTNEED);
    ret_text(ret, rb, sizeof rb);
    access_pieces(r, 0, 0, out, sizeof out);
    snprintf(name, sizeof name, "%s-dontneed", b->name);
    report(name, "huge=%s ret=%s read: %s", large ? "yes" : "no", rb, out);
    munmap(r, b->size);
}

static void scenario_mprotect(struct backing *b, int half)
{
    int large;
    char w[256], rd[256], rb[16], name[32];
    uint8_t *r = prepared(b, half ? "split" : "mprotect", &large);
    int ret = half ? mprotect(r + b->size / 2, b->size / 2, PROT_READ) : mprotect(r, b->size, PROT_READ);
    ret_text(ret, rb, sizeof rb);
    access_pieces(r, 1, 0xc0, w, sizeof w);
    access_pieces(r, 0, 0, rd, sizeof rd);
    snprintf(name, sizeof name, "%s-%s", b->name, half ? "split" : "mprotect");
    report(name, "huge=%s ret=%s write: %s; read: %s", large ? "yes" : "no", rb, w, rd);
    munmap(r, b->size);
}

static void scenario_remap(struct backing *b)
{
    int large;
    char w[256], native[256], kernel[256], rb[16], name[32], one[32];
    uint8_t *x = prepared(b, "remap", &large);
    uint64_t pfn_x = pfn_of(0, (uintptr_t)x);
    uint8_t *other = map_large(b, NULL); /* reserved now, faulted in after the unmap */
    if (!other)
        fail("%s-remap-other-errno%d", b->name, errno);
    if (munmap(x, b->size) != 0)
        fail("%s-remap-munmap", b->name);
    memset(other, 0x5b, b->size);
    int other_large = is_large(b, other);
    uint64_t pfn_other = pfn_of(0, (uintptr_t)other);
    info("%s-remap: the other buffer %s the unmapped frame", b->name,
         pfn_x && pfn_x == pfn_other ? "reuses" : "does not reuse");
    uint8_t *again = map_large(b, x);
    int ret = again == x ? 0 : -1;
    ret_text(ret, rb, sizeof rb);
    if (again != x)
        fail("%s-remap-map-again-errno%d", b->name, errno);
    access_pieces(x, 1, 0xc0, w, sizeof w);
    size_t len = 0;
    for (unsigned i = 0; i < 4; i++)
        len += (size_t)snprintf(kernel + len, sizeof kernel - len, "%sp%u=%s", i ? " " : "", pieces[i],
                                kernel_word((uintptr_t)word_at(x, pieces[i]), one, sizeof one));
    access_pieces(x, 0, 0, native, sizeof native);
    size_t changed = 0;
    for (size_t i = 0; i < b->size; i++)
        changed += other[i] != 0x5b;
    snprintf(name, sizeof name, "%s-remap", b->name);
    report(name, "huge=%s other-huge=%s ret=%s other-bytes-changed=%zu write: %s; kernel: %s; native: %s",
           large ? "yes" : "no", other_large ? "yes" : "no", rb, changed, w, kernel, native);
    munmap(x, b->size);
    munmap(other, b->size);
}

/* ---- two users and khugepaged --------------------------------------------------------- */

static void put(int fd, const void *p, size_t n)
{
    if (write(fd, p, n) != (ssize_t)n)
        _exit(90);
}

static void get(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)p + got, n - got);
        if (r <= 0)
            _exit(91);
        got += (size_t)r;
    }
}

struct attack_report {
    uintptr_t region;
    int setuid_ok, large, madv_ret;
    unsigned secret_pieces, stale_pieces, rounds;
};

static void victim(struct backing *b, int to_parent, int from_parent)
{
    uint8_t *raw = mmap(NULL, 2 * b->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        _exit(92);
    uint8_t *r = (uint8_t *)(((uintptr_t)raw + b->size - 1) & ~(uintptr_t)(b->size - 1));
    unsigned n = (unsigned)(b->size / PIECE);
    /* 4 KiB pages (enabled=madvise and no advice yet), every one with the secret */
    for (unsigned i = 0; i < n; i++) {
        memset(r + (size_t)i * PIECE, 0x5e, PIECE);
        memcpy(r + (size_t)i * PIECE, SECRET, 8);
        memcpy(r + (size_t)i * PIECE + 8, &i, sizeof i);
    }
    int ret = madvise(r, b->size, MADV_HUGEPAGE); /* now khugepaged may collapse it */
    uintptr_t msg[2] = {(uintptr_t)r, (uintptr_t)ret};
    put(to_parent, msg, sizeof msg);
    char go;
    get(from_parent, &go, 1);
    unsigned bad = 0;
    for (unsigned i = 0; i < n; i++) {
        uint32_t idx;
        memcpy(&idx, r + (size_t)i * PIECE + 8, sizeof idx);
        bad += memcmp(r + (size_t)i * PIECE, SECRET, 8) != 0 || idx != i || r[(size_t)i * PIECE + 100] != 0x5e;
    }
    put(to_parent, &bad, sizeof bad);
    _exit(0);
}

static void attacker(struct backing *b, int to_parent, int from_parent)
{
    struct attack_report rep;
    memset(&rep, 0, sizeof rep);
    rep.setuid_ok = setgroups(0, NULL) == 0 && setgid(65534) == 0 && setuid(65534) == 0 && getuid() == 65534;
    uint8_t *r = map_large(b, NULL);
    if (!r)
        _exit(93);
    rep.region = (uintptr_t)r;
    r[0] = 1;
    struct smaps s = smaps_of(0, (uintptr_t)r);
    rep.large = s.anon_huge_kb == (long)(b->size / 1024);
    put(to_parent, &rep.region, sizeof rep.region); /* the parent reads the frame */
    char go;
    get(from_parent, &go, 1);
    touch_code_pages();
    unsigned n = (unsigned)(b->size / PIECE);
    /* every piece written natively, in batches below the accelerator's fill limit (64) */
    for (unsigned i = 0; i < n; i++) {
        if (i % 32 == 0)
            start_native();
        *word_at(r, i) = 0x11110000u + i;
    }
    start_native();
    for (unsigned i = 0; i < n; i++)
        (void)*word_at(r, i);
    rep.madv_ret = madvise(r, b->size, MADV_DONTNEED) == 0 ? 0 : -errno;
    if (madvise(r, b->size, MADV_NOHUGEPAGE) != 0)
        rep.madv_ret = -1000;
    struct timespec ts = {0, 5 * 1000 * 1000};
    unsigned rounds = 3 * SCAN_SLEEP_MS / 5;
    for (unsigned k = 0; k < rounds && !rep.secret_pieces; k++) {
        nanosleep(&ts, NULL);
        start_native();
        for (unsigned i = 0; i < n; i++) {
            const volatile uint8_t *p = r + (size_t)i * PIECE;
            if (p[0] == 'S' && p[1] == 'E' && p[2] == 'C' && p[3] == 'R')
                rep.secret_pieces++;
            else if (*word_at(r, i) != 0 || p[0] != 0)
                rep.stale_pieces++;
        }
        rep.rounds = k + 1;
    }
    put(to_parent, &rep, sizeof rep);
    _exit(0);
}

static void scenario_khugepaged(struct backing *b)
{
    char saved[4][64];
    static const char *const knobs[4] = {KHP_DIR "/scan_sleep_millisecs", KHP_DIR "/pages_to_scan",
                                          KHP_DIR "/alloc_sleep_millisecs", KHP_DIR "/defrag"};
    for (unsigned i = 0; i < 4; i++)
        if (read_text(knobs[i], saved[i], sizeof saved[i]) != 0)
            fail("khugepaged-knob-%u", i);
    /* an eligible region of our own keeps khugepaged's list non-empty, so that it sleeps the
     * timed scan_sleep_millisecs instead of waiting for the victim's registration */
    struct backing keep = *b;
    uint8_t *keeper = map_large(&keep, NULL);
    if (!keeper)
        fail("khugepaged-keeper");
    int kret = 0;
    char num[32];
    kret |= write_text(knobs[1], "4096");
    kret |= write_text(knobs[2], "50");
    kret |= write_text(knobs[3], "1");
    snprintf(num, sizeof num, "%u", SCAN_SLEEP_MS);
    kret |= write_text(knobs[0], num); /* one scan now, the next in SCAN_SLEEP_MS */

    int v2p[2], p2v[2], a2p[2], p2a[2];
    if (pipe(v2p) || pipe(p2v) || pipe(a2p) || pipe(p2a))
        fail("khugepaged-pipe");
    fflush(stdout);
    pid_t vpid = fork();
    if (vpid == 0)
        victim(b, v2p[1], p2v[0]);
    uintptr_t vmsg[2];
    get(v2p[0], vmsg, sizeof vmsg);
    pid_t apid = fork();
    if (apid == 0)
        attacker(b, a2p[1], p2a[0]);
    uintptr_t aregion;
    get(a2p[0], &aregion, sizeof aregion);
    uint64_t apfn = pfn_of(apid, aregion);
    put(p2a[1], "g", 1);
    struct attack_report rep;
    get(a2p[0], &rep, sizeof rep);
    int st;
    waitpid(apid, &st, 0);
    struct smaps vs = smaps_of(vpid, vmsg[0]);
    uint64_t vpfn = pfn_of(vpid, vmsg[0]);
    put(p2v[1], "g", 1);
    unsigned vbad = 0;
    get(v2p[0], &vbad, sizeof vbad);
    waitpid(vpid, &st, 0);
    for (int i = 3; i >= 0; i--)
        write_text(knobs[i], saved[i]);
    munmap(keeper, b->size);
    int collapsed = vs.anon_huge_kb == (long)(b->size / 1024);
    info("khugepaged: attacker's freed frame %s the victim's collapsed page; attacker rounds %u",
         apfn && apfn == vpfn ? "became" : "did not become", rep.rounds);
    if (!rep.large)
        b->bad++;
    if (!collapsed)
        info("khugepaged: the victim's region was not collapsed (AnonHugePages %ld kB)", vs.anon_huge_kb);
    report("thp-khugepaged", "knobs=%s attacker-uid-65534=%s attacker-huge=%s madvise=%d victim-madvise=%d "
           "collapsed=%s attacker-saw-secret=%u attacker-saw-stale=%u victim-intact=%s",
           kret ? "err" : "ok", rep.setuid_ok ? "yes" : "no", rep.large ? "yes" : "no", rep.madv_ret,
           (int)vmsg[1], collapsed ? "yes" : "no", rep.secret_pieces, rep.stale_pieces, vbad ? "no" : "yes");
    if (!collapsed)
        b->bad++;
}

/* ---- main ----------------------------------------------------------------------------- */

int main(void)
{
    esc_init();
    touch_code_pages();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGBUS, &sa, NULL);

    char buf[128], was_enabled[32] = "", was_defrag[32] = "", was_nr[32] = "";
    struct backing thp = {"thp", 1, 0, 0}, htlb = {"hugetlb", 0, 0, 0};

    /* transparent huge pages: on, in madvise mode (only the regions below get them) */
    int thp_sysfs = read_text(THP_DIR "/hpage_pmd_size", buf, sizeof buf) == 0;
    if (thp_sysfs) {
        thp.size = strtoul(buf, NULL, 10);
        read_text(THP_DIR "/enabled", buf, sizeof buf);
        selected(buf, was_enabled, sizeof was_enabled);
        read_text(THP_DIR "/defrag", buf, sizeof buf);
        selected(buf, was_defrag, sizeof was_defrag);
        if (write_text(THP_DIR "/enabled", "madvise") != 0 || write_text(THP_DIR "/defrag", "madvise") != 0)
            fail("thp-enable");
        info("thp: enabled was %s, defrag was %s", was_enabled, was_defrag);
    }
    /* hugetlbfs: a pool of 8 pages */
    long hp_kb = 0;
    FILE *mi = fopen("/proc/meminfo", "r");
    while (mi && fgets(buf, sizeof buf, mi))
        sscanf(buf, "Hugepagesize: %ld kB", &hp_kb);
    if (mi)
        fclose(mi);
    long pool = 0;
    if (hp_kb > 0 && read_text(NR_HUGEPAGES, was_nr, sizeof was_nr) == 0) {
        if (write_text(NR_HUGEPAGES, "8") != 0)
            fail("hugetlb-pool");
        read_text(NR_HUGEPAGES, buf, sizeof buf);
        pool = strtol(buf, NULL, 10);
        htlb.size = (size_t)hp_kb * 1024;
    }
    report("available", "thp=%s thp-page-kb=%lu hugetlb=%s hugetlb-page-kb=%ld hugetlb-pool-ge-4=%s",
           thp.size ? "yes" : "no", (unsigned long)(thp.size / 1024), htlb.size ? "yes" : "no", hp_kb,
           pool >= 4 ? "yes" : "no");
    if (htlb.size && pool < 4)
        htlb.bad++;

    struct backing *backings[2] = {&thp, &htlb};
    for (unsigned i = 0; i < 2; i++) {
        struct backing *b = backings[i];
        if (!b->size || (i == 1 && pool < 4))
            continue;
        set_pieces(b->size);
        scenario_munmap(b);
        scenario_dontneed(b);
        scenario_mprotect(b, 0);
        scenario_mprotect(b, 1);
        scenario_remap(b);
        if (b->thp)
            scenario_khugepaged(b);
    }

    if (was_nr[0])
        write_text(NR_HUGEPAGES, was_nr);
    if (was_enabled[0]) {
        write_text(THP_DIR "/enabled", was_enabled);
        write_text(THP_DIR "/defrag", was_defrag);
    }
    native_evidence();
    if (thp.bad || htlb.bad)
        fail("not-large-page-backed-thp%u-hugetlb%u", thp.bad, htlb.bad);
    finish();
    return 0;
}
