/*
 * bench-pagefault: touch 64 MiB of fresh anonymous memory one page at a
 * time (one write fault per page), then read every page back.
 * Result: the number of pages touched and a checksum.
 */
#include "common.h"
#include <time.h>
#include <sys/mman.h>

int main(int argc, char **argv)
{
    suite_init();
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 64;
    size_t sz = mib << 20, pg = (size_t)sysconf(_SC_PAGESIZE), pages = sz / pg;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    unsigned char *p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail("mmap");
    for (size_t i = 0; i < pages; i++) {
        p[i * pg + (i * 64) % pg] = (unsigned char)(i * 7 + 1);
    }
    ck_t ck;
    ck_init(&ck);
    size_t touched = 0;
    for (size_t i = 0; i < pages; i++) {
        unsigned char v = p[i * pg + (i * 64) % pg];
        if (v != (unsigned char)(i * 7 + 1) || p[i * pg + ((i * 64) + 1) % pg] != 0) fail("page-%zu", i);
        ck_bytes(&ck, &v, 1);
        touched++;
    }
    munmap(p, sz);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double el = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    info("%zu pages in %.3fs, %.0f ns/page", touched, el, el * 1e9 / (double)touched);
    result("pages%zu-%016llx", touched, (unsigned long long)ck.h);
    return 0;
}
