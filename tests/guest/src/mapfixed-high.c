/*
 * mapfixed-high: fixed mappings at unusual high user addresses (x86-64 only).
 *
 * Maps 2 MiB + 12 KiB with MAP_FIXED_NOREPLACE at 0x3f0000000000 (bit 45
 * region, far above where mmap places anything), just below
 * 0x7fff00000000 (near the top of the 47-bit user half, under the stack's
 * usual place) and at 0x100000000 (just above 4 GiB); writes a pattern
 * through every page, reads it back and checksums it, mprotects a page
 * read-only and checks a write there faults at the right address, remaps one
 * mapping to another high address with mremap(MREMAP_FIXED) and checks the
 * data moved.  An address already taken (the stack can be randomized close
 * to 0x7fff00000000) is skipped for the next lower 64 GiB slot; the
 * addresses themselves are never part of the result.  Addresses above the
 * 47-bit user half are refused without 5-level paging: that outcome is a
 * "cpu:" line.
 */
#include "common.h"
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>

#if !defined(__x86_64__)
#error "mapfixed-high is an x86-64 program"
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define LEN (2UL * 1024 * 1024 + 3 * 4096)
#define SLOT (64UL << 30)

static sigjmp_buf jb;
static volatile uintptr_t fault_addr;
static void on_segv(int sig, siginfo_t *si, void *uc)
{
    (void)sig; (void)uc;
    fault_addr = (uintptr_t)si->si_addr;
    siglongjmp(jb, 1);
}

static unsigned char *map_at(uintptr_t want, int tries)
{
    for (int i = 0; i < tries; i++, want -= SLOT) {
        void *p = mmap((void *)want, LEN, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (p == (void *)want) return p;
        if (p != MAP_FAILED) munmap(p, LEN);  /* an old kernel took it as a hint */
        else if (errno != EEXIST) fail("mmap-%lx-errno%d", (unsigned long)want, errno);
    }
    fail("no-free-slot-%lx", (unsigned long)want);
}

static void fill(unsigned char *p, uint64_t seed)
{
    for (size_t off = 0; off < LEN; off += 4096)
        for (size_t k = 0; k < 4096; k += 8) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            memcpy(p + off + k, &seed, 8);
        }
}

int main(void)
{
    suite_init();
    ck_t ck;
    ck_init(&ck);
    static const uintptr_t where[] = { 0x3f0000000000UL, 0x7fff00000000UL - LEN - 4096, 0x100000000UL };
    unsigned char *m[3];
    for (int i = 0; i < 3; i++) {
        m[i] = map_at(where[i], 8);
        info("mapping %d at %p", i, (void *)m[i]);
        fill(m[i], 1000 + (uint64_t)i);
    }
    for (int i = 0; i < 3; i++) ck_bytes(&ck, m[i], LEN);

    /* a read-only page faults at the written address */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
    for (int i = 0; i < 3; i++) {
        unsigned char *pg = m[i] + 4096 * 5;
        if (mprotect(pg, 4096, PROT_READ)) fail("mprotect");
        fault_addr = 0;
        if (sigsetjmp(jb, 1) == 0) {
            ((volatile unsigned char *)pg)[123] = 1;
            fail("ro-write-%d-no-fault", i);
        }
        CHECK(fault_addr == (uintptr_t)(pg + 123), "ro-fault-addr-%d", i);
        ck_u32(&ck, pg[123]);
        if (mprotect(pg, 4096, PROT_READ | PROT_WRITE)) fail("mprotect-back");
        pg[123] ^= 0x5a;
    }
    /* move the first mapping 1 GiB up, with its contents */
    uint64_t before = 0;
    for (size_t off = 0; off < LEN; off += 4096) before += m[0][off] + m[0][off + 4095];
    unsigned char *dst = (unsigned char *)(where[0] + (1UL << 30));
    void *r = mremap(m[0], LEN, LEN, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
    CHECK(r == dst, "mremap");
    uint64_t after = 0;
    for (size_t off = 0; off < LEN; off += 4096) after += dst[off] + dst[off + 4095];
    CHECK(before == after, "mremap-data");
    ck_u64(&ck, after);
    m[0] = dst;
    for (int i = 0; i < 3; i++) {
        ck_bytes(&ck, m[i], LEN);
        CHECK(munmap(m[i], LEN) == 0, "munmap");
    }
    /* beyond the 47-bit half */
    void *hi = mmap((void *)0x800000000000UL, 4096, PROT_READ,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    cpu_line("above_47_bits", "%s", hi == MAP_FAILED ? "refused" : "mapped");
    if (hi != MAP_FAILED) munmap(hi, 4096);
    result_ck("mapfixed-high", &ck);
    return 0;
}
