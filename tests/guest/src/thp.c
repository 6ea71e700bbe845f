/*
 * thp: memory that transparent huge pages may back (x86-64 only).
 *
 * Maps 16 MiB, takes the 2 MiB-aligned 8 MiB inside, asks for huge pages
 * with madvise(MADV_HUGEPAGE) and touches it (one write per 4 KiB page,
 * then a pattern through all of it); checksums it; then works on it the
 * ways that split or collapse huge pages: mprotect of one 4 KiB page in the
 * middle of a 2 MiB region (and back), munmap of a 4 KiB page, MADV_DONTNEED
 * of 64 KiB (must read back zero), fork with copy-on-write writes in the
 * child and the parent, mremap of a 2 MiB piece to another 2 MiB-aligned
 * address.  Whether the kernel granted huge pages is never printed: the
 * result is the same with and without them (AnonHugePages of smaps goes
 * nowhere).
 */
#include "common.h"
#include <sys/mman.h>
#include <sys/wait.h>

#if !defined(__x86_64__)
#error "thp is an x86-64 program"
#endif

#define MB (1024UL * 1024)
#define HUGE (2 * MB)
#define LEN (8 * MB)

static void pattern(unsigned char *p, size_t len, uint64_t seed)
{
    for (size_t k = 0; k + 8 <= len; k += 8) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        memcpy(p + k, &seed, 8);
    }
}

int main(void)
{
    suite_init();
    ck_t ck;
    ck_init(&ck);
    unsigned char *raw = mmap(NULL, LEN + 2 * HUGE, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(raw != MAP_FAILED, "mmap");
    unsigned char *p = (unsigned char *)(((uintptr_t)raw + HUGE - 1) & ~(HUGE - 1));
    CHECK(madvise(p, LEN, MADV_HUGEPAGE) == 0, "madvise-hugepage");
    for (size_t off = 0; off < LEN; off += 4096) p[off] = (unsigned char)(off >> 12);
    for (size_t off = 0; off < LEN; off += 4096)
        CHECK(p[off] == (unsigned char)(off >> 12), "touch-%zu", off);
    pattern(p, LEN, 1);
    ck_bytes(&ck, p, LEN);

    /* mprotect one 4 KiB page inside the second 2 MiB region, write around it, and back */
    unsigned char *mid = p + HUGE + 17 * 4096;
    CHECK(mprotect(mid, 4096, PROT_READ) == 0, "mprotect-ro");
    mid[-1] ^= 0xff;
    mid[4096] ^= 0xff;
    CHECK(mprotect(mid, 4096, PROT_READ | PROT_WRITE) == 0, "mprotect-rw");
    mid[0] ^= 0xff;
    ck_bytes(&ck, p + HUGE, HUGE);

    /* munmap a 4 KiB page of the third region; MADV_DONTNEED 64 KiB of the fourth */
    unsigned char *hole = p + 2 * HUGE + 100 * 4096;
    CHECK(munmap(hole, 4096) == 0, "munmap-4k");
    ck_bytes(&ck, p + 2 * HUGE, 100 * 4096);
    ck_bytes(&ck, hole + 4096, HUGE - 101 * 4096);
    unsigned char *dn = p + 3 * HUGE + 256 * 1024;
    CHECK(madvise(dn, 64 * 1024, MADV_DONTNEED) == 0, "dontneed");
    for (size_t k = 0; k < 64 * 1024; k++) CHECK(dn[k] == 0, "dontneed-zero");
    ck_bytes(&ck, p + 3 * HUGE, HUGE);

    /* fork: the child writes to its copy and reports a checksum; the parent's stays */
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe");
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        pattern(p, HUGE, 99);
        ck_t c;
        ck_init(&c);
        ck_bytes(&c, p, HUGE);
        _exit(write(fds[1], &c.h, 8) == 8 ? 0 : 1);
    }
    uint64_t child_h;
    CHECK(read(fds[0], &child_h, 8) == 8, "child-read");
    int st;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "child");
    ck_u64(&ck, child_h);
    ck_bytes(&ck, p, HUGE);  /* unchanged by the child */
    pattern(p + 64, 4096, 7);  /* parent's own copy-on-write */
    ck_bytes(&ck, p, 8192);

    /* move the first 2 MiB region to a 2 MiB-aligned free place */
    unsigned char *tmp = mmap(NULL, 2 * HUGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(tmp != MAP_FAILED, "mmap-dst");
    unsigned char *dst = (unsigned char *)(((uintptr_t)tmp + HUGE - 1) & ~(HUGE - 1));
    ck_t before;
    ck_init(&before);
    ck_bytes(&before, p, HUGE);
    CHECK(mremap(p, HUGE, HUGE, MREMAP_MAYMOVE | MREMAP_FIXED, dst) == dst, "mremap");
    ck_t after;
    ck_init(&after);
    ck_bytes(&after, dst, HUGE);
    CHECK(before.h == after.h, "mremap-data");
    ck_u64(&ck, after.h);
    result_ck("thp", &ck);
    return 0;
}
