/*
 * memory: address-space operations.
 *
 *  mmap/munmap (incl. punching a hole into a mapping), mprotect (a write
 *  to a read-only page and a read of a PROT_NONE page are caught as
 *  SIGSEGV with the right si_code/si_addr, then allowed), mremap growing
 *  in place, growing with a forced move, MREMAP_FIXED, shrinking; brk;
 *  MADV_DONTNEED; shared vs private file mappings (memfd); and 96 MiB
 *  allocated and touched word by word with a checksum.
 */
#define _GNU_SOURCE
#include "common.h"
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>

static ck_t ck;
static long pg;
static sigjmp_buf jb;
static volatile int fault_code;
static volatile uintptr_t fault_addr;

static void on_segv(int sig, siginfo_t *si, void *uc)
{
    (void)sig; (void)uc;
    fault_code = si->si_code;
    fault_addr = (uintptr_t)si->si_addr;
    siglongjmp(jb, 1);
}

/* 1 if the access faulted (code/address recorded), 0 if it went through */
__attribute__((noinline)) static int try_write(volatile unsigned char *p, unsigned char v)
{
    fault_code = 0;
    if (sigsetjmp(jb, 1)) return 1;
    *p = v;
    return 0;
}

__attribute__((noinline)) static int try_read(volatile unsigned char *p, unsigned char *out)
{
    fault_code = 0;
    if (sigsetjmp(jb, 1)) return 1;
    *out = *p;
    return 0;
}

static void expect_fault(int faulted, volatile unsigned char *p, int code, const char *what)
{
    if (!faulted) fail("%s-no-fault", what);
    if (fault_code != code || fault_addr != (uintptr_t)p) fail("%s-siginfo-%d", what, fault_code);
}

static void t_protect(void)
{
    unsigned char v;
    unsigned char *m = mmap(NULL, 8 * (size_t)pg, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) fail("mmap");
    for (int i = 0; i < 8 * pg; i++) m[i] = (unsigned char)(i * 7);
    /* read-only page: reads work, writes fault with SEGV_ACCERR */
    if (mprotect(m + pg, (size_t)pg, PROT_READ)) fail("mprotect-ro");
    if (try_read(m + pg + 5, &v) || v != (unsigned char)((pg + 5) * 7)) fail("ro-read");
    expect_fault(try_write(m + pg + 17, 1), m + pg + 17, SEGV_ACCERR, "ro-write");
    if (m[pg + 17] != (unsigned char)((pg + 17) * 7)) fail("ro-write-changed");
    /* PROT_NONE: even reads fault */
    if (mprotect(m + 2 * pg, (size_t)pg, PROT_NONE)) fail("mprotect-none");
    expect_fault(try_read(m + 2 * pg + 3, &v), m + 2 * pg + 3, SEGV_ACCERR, "none-read");
    /* and back to read-write, contents intact */
    if (mprotect(m + pg, 2 * (size_t)pg, PROT_READ | PROT_WRITE)) fail("mprotect-rw");
    if (try_write(m + pg + 17, 0xee)) fail("rw-write");
    if (m[2 * pg + 3] != (unsigned char)((2 * pg + 3) * 7)) fail("none-contents");
    /* punch a hole: the middle page is gone, neighbours stay */
    if (munmap(m + 4 * pg, (size_t)pg)) fail("munmap-hole");
    expect_fault(try_read(m + 4 * pg + 9, &v), m + 4 * pg + 9, SEGV_MAPERR, "hole-read");
    if (m[3 * pg] != (unsigned char)(3 * pg * 7) || m[5 * pg] != (unsigned char)(5 * pg * 7))
        fail("hole-neighbours");
    ck_bytes(&ck, m, 4 * (size_t)pg);
    munmap(m, 8 * (size_t)pg);
    /* whole mapping gone */
    expect_fault(try_write(m + 7, 1), m + 7, SEGV_MAPERR, "unmapped-write");
}

static void fill(uint32_t *p, size_t words, uint32_t seed)
{
    for (size_t i = 0; i < words; i++) p[i] = (uint32_t)i * 2654435761u ^ seed;
}

static int check(const uint32_t *p, size_t words, uint32_t seed)
{
    for (size_t i = 0; i < words; i++)
        if (p[i] != ((uint32_t)i * 2654435761u ^ seed)) return 0;
    return 1;
}

static void t_mremap(void)
{
    size_t small = 4 * (size_t)pg, big = 64 * (size_t)pg;
    /* reserve a window so that the test controls what lies around */
    unsigned char *win = mmap(NULL, 256 * (size_t)pg, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (win == MAP_FAILED) fail("mmap-window");
    munmap(win, 256 * (size_t)pg);

    /* grow in place: nothing behind it */
    uint32_t *a = mmap(win, small, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if ((void *)a != win) fail("mmap-a");
    fill(a, small / 4, 1);
    uint32_t *a2 = mremap(a, small, big, 0);
    if (a2 != a) fail("mremap-inplace");
    if (!check(a2, small / 4, 1)) fail("mremap-inplace-data");
    fill(a2 + small / 4, (big - small) / 4, 2);

    /* blocked behind: must move (MAYMOVE), data preserved, old range gone */
    uint32_t *blocker = mmap((unsigned char *)a2 + big, (size_t)pg, PROT_READ,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if ((unsigned char *)blocker != (unsigned char *)a2 + big) fail("mmap-blocker");
    if (mremap(a2, big, 2 * big, 0) != MAP_FAILED) fail("mremap-should-fail");
    uint32_t *a3 = mremap(a2, big, 2 * big, MREMAP_MAYMOVE);
    if (a3 == MAP_FAILED || a3 == a2) fail("mremap-move");
    if (!check(a3, small / 4, 1) || !check(a3 + small / 4, (big - small) / 4, 2))
        fail("mremap-move-data");
    unsigned char v;
    expect_fault(try_read((unsigned char *)a2 + 100, &v), (unsigned char *)a2 + 100,
                 SEGV_MAPERR, "mremap-old-range");
    fill(a3 + big / 4, big / 4, 3);

    /* MREMAP_FIXED over a reserved (PROT_NONE) range, then shrink */
    unsigned char *dst = mmap(NULL, 2 * big, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (dst == MAP_FAILED) fail("mmap-dst");
    uint32_t *a4 = mremap(a3, 2 * big, 2 * big, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
    if ((unsigned char *)a4 != dst) fail("mremap-fixed");
    if (!check(a4 + big / 4, big / 4, 3)) fail("mremap-fixed-data");
    uint32_t *a5 = mremap(a4, 2 * big, small, 0);
    if (a5 != a4 || !check(a5, small / 4, 1)) fail("mremap-shrink");
    expect_fault(try_read((unsigned char *)a5 + small + 8, &v), (unsigned char *)a5 + small + 8,
                 SEGV_MAPERR, "mremap-shrunk");
    ck_bytes(&ck, a5, small);
    munmap(a5, small);
    munmap(blocker, (size_t)pg);
}

static void t_brk_madvise(void)
{
    unsigned char *b0 = sbrk(0);
    if (sbrk(1 << 20) != b0) fail("sbrk");
    for (int i = 0; i < 1 << 20; i += 512) b0[i] = (unsigned char)(i >> 9);
    uint32_t s = 0;
    for (int i = 0; i < 1 << 20; i += 512) s += b0[i];
    if (sbrk(-(1 << 20)) == (void *)-1 || sbrk(0) != b0) fail("sbrk-shrink");
    ck_u32(&ck, s);

    unsigned char *m = mmap(NULL, 16 * (size_t)pg, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(m, 0xab, 16 * (size_t)pg);
    if (madvise(m + 4 * pg, 4 * (size_t)pg, MADV_DONTNEED)) fail("madvise");
    for (long i = 0; i < 16 * pg; i++) {
        unsigned char want = (i >= 4 * pg && i < 8 * pg) ? 0 : 0xab;
        if (m[i] != want) fail("dontneed-%ld", i);
    }
    munmap(m, 16 * (size_t)pg);
}

static void t_filemap(void)
{
    int fd = (int)syscall(SYS_memfd_create, "mem", 0);
    if (fd < 0) fail("memfd");
    if (ftruncate(fd, 4 * pg)) fail("ftruncate");
    unsigned char *sh = mmap(NULL, 4 * (size_t)pg, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    unsigned char *pv = mmap(NULL, 4 * (size_t)pg, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (sh == MAP_FAILED || pv == MAP_FAILED) fail("mmap-file");
    memset(sh, 0x11, 4 * (size_t)pg);
    if (pv[10] != 0x11) fail("private-sees-file");
    pv[10] = 0x22;                                     /* COW of page 0 only */
    if (sh[10] != 0x11) fail("private-leaked");
    unsigned char x = 0x33;
    if (pwrite(fd, &x, 1, 10) != 1 || pwrite(fd, &x, 1, pg + 10) != 1) fail("pwrite");
    if (sh[10] != 0x33 || sh[pg + 10] != 0x33) fail("shared-not-updated");
    if (pv[10] != 0x22) fail("private-cow-lost");
    if (pv[pg + 10] != 0x33) fail("private-untouched-page");
    ck_u32(&ck, (uint32_t)(sh[10] | pv[10] << 8 | pv[pg + 10] << 16));
    munmap(sh, 4 * (size_t)pg);
    munmap(pv, 4 * (size_t)pg);
    close(fd);
}

static void t_big(void)
{
    const size_t sz = 96u << 20;
    uint32_t *p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail("mmap-96m");
    size_t words = sz / 4;
    /* one word per 64-byte line: every page and every line is touched */
    for (size_t i = 0; i < words; i += 16) p[i] = (uint32_t)i * 0x9e3779b1u + (uint32_t)(i >> 20);
    uint64_t s = 0;
    for (size_t i = 0; i < words; i += 16) {
        if (p[i] != (uint32_t)i * 0x9e3779b1u + (uint32_t)(i >> 20) || p[i + 1] != 0)
            fail("big-data-%zu", i);
        s += p[i] ^ (uint32_t)(i & 0xffff);
    }
    ck_u64(&ck, s);
    info("touched %zu MiB (%zu pages)", sz >> 20, sz / (size_t)pg);
    munmap(p, sz);
}

int main(void)
{
    suite_init();
    ck_init(&ck);
    pg = sysconf(_SC_PAGESIZE);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    t_protect();
    t_mremap();
    t_brk_madvise();
    t_filemap();
    t_big();
    result_ck("memory", &ck);
    return 0;
}
