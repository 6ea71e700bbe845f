/*
 * rdtsc: the time stamp counter never goes backwards.
 *
 * Many back-to-back reads, reads around system calls and sched_yield,
 * and RDTSCP where CPUID says it exists.  The process is pinned to the
 * CPU it starts on so that host TSC skew between cores cannot show up.
 * The result line says "monotonic" (the counter must also have advanced
 * overall); rates and deltas only go to info lines.
 */
#define _GNU_SOURCE
#include "common.h"
#include <sched.h>
#include <cpuid.h>
#include <sys/syscall.h>

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static inline uint64_t rdtscp(uint32_t *aux)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtscp" : "=a"(lo), "=d"(hi), "=c"(*aux));
    return ((uint64_t)hi << 32) | lo;
}

int main(void)
{
    suite_init();
    pin_to_current_cpu();
    enum { N = 200000 };
    uint64_t first = rdtsc(), prev = first, maxgap = 0;
    for (int i = 0; i < N; i++) {
        uint64_t t = rdtsc();
        if (t < prev) fail("backwards-at-%d-by-%llu", i, (unsigned long long)(prev - t));
        if (t - prev > maxgap) maxgap = t - prev;
        prev = t;
    }
    uint64_t tight_end = prev;
    for (int i = 0; i < 2000; i++) {
        syscall(SYS_getpid);
        uint64_t t = rdtsc();
        if (t < prev) fail("backwards-after-syscall-%d", i);
        prev = t;
        if ((i & 63) == 0) {
            sched_yield();
            t = rdtsc();
            if (t < prev) fail("backwards-after-yield-%d", i);
            prev = t;
        }
    }
    unsigned a, b, c, d;
    int has_rdtscp = 0;
    if (__get_cpuid(0x80000000, &a, &b, &c, &d) && a >= 0x80000001) {
        __cpuid(0x80000001, a, b, c, d);
        has_rdtscp = (d >> 27) & 1;
    }
    cpu_line("rdtscp", "%s", has_rdtscp ? "yes" : "no");
    if (has_rdtscp) {
        uint32_t aux;
        for (int i = 0; i < 20000; i++) {
            uint64_t t = rdtscp(&aux);
            if (t < prev) fail("rdtscp-backwards-%d", i);
            prev = t;
            t = rdtsc();
            if (t < prev) fail("mixed-backwards-%d", i);
            prev = t;
        }
    }
    if (prev <= first) fail("tsc-did-not-advance");
    info("tight loop: %.1f ticks/read, max gap %llu ticks",
         (double)(tight_end - first) / N, (unsigned long long)maxgap);
    result("monotonic");
    return 0;
}
