/*
 * tls-threads: FS-base thread-local storage with several threads (x86-64 only).
 *
 * Six threads and the main thread each use initialized and zeroed __thread
 * variables (addressed through %fs): addresses must differ between threads,
 * the TCB's self pointer (%fs:0) must equal the FS base that
 * arch_prctl(ARCH_GET_FS) reports, and counters updated in lockstep rounds
 * (barriers, yields) must stay per thread.  Each thread also points FS at a
 * block of its own with arch_prctl(ARCH_SET_FS) (raw system calls: no libc
 * code may run meanwhile), reads it through %fs, and puts its base back; the
 * same with GS (unused by glibc) and, where the CPU and kernel allow it
 * (AT_HWCAP2 FSGSBASE), with WRFSBASE/RDFSBASE, whose availability goes to a
 * "cpu:" line only: the result is the same either way.
 */
#include "common.h"
#include <asm/prctl.h>
#include <pthread.h>
#include <sys/auxv.h>
#include <sys/syscall.h>

#if !defined(__x86_64__)
#error "tls-threads is an x86-64 program"
#endif

#define NTHREADS 6
#define ROUNDS 50

static __thread uint64_t tls_init = 0x1234567890abcdefULL;
static __thread uint32_t tls_counter;
static __thread char tls_name[16] = "main";
static pthread_barrier_t barrier;
static int have_fsgsbase;

static long raw_arch_prctl(long code, unsigned long addr)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"((long)SYS_arch_prctl), "D"(code), "S"(addr)
                     : "rcx", "r11", "memory");
    return r;
}

static uint64_t fs_read(long off)
{
    uint64_t v;
    __asm__ volatile("movq %%fs:(%1), %0" : "=r"(v) : "r"(off));
    return v;
}
static uint64_t gs_read(long off)
{
    uint64_t v;
    __asm__ volatile("movq %%gs:(%1), %0" : "=r"(v) : "r"(off));
    return v;
}

struct res { uint64_t sum, addr; int bad; };

/* Points FS (and GS) at blk, reads 4 words through the segment, restores FS.
 * Returns the sum of what was read, or 0 on a mismatch. */
static uint64_t segment_swap(uint64_t *blk, int use_wrfsbase)
{
    unsigned long old_fs;
    if (raw_arch_prctl(ARCH_GET_FS, (unsigned long)&old_fs) != 0) return 0;
    uint64_t s = 0;
    if (use_wrfsbase) {
        __asm__ volatile("wrfsbase %0" : : "r"(blk) : "memory");
        uint64_t b;
        __asm__ volatile("rdfsbase %0" : "=r"(b));
        if (b != (uint64_t)blk) s = 1ULL << 63;
    } else if (raw_arch_prctl(ARCH_SET_FS, (unsigned long)blk) != 0) {
        return 0;
    }
    for (long i = 0; i < 4; i++) s += fs_read(8 * i) * (uint64_t)(i + 1);
    if (use_wrfsbase) __asm__ volatile("wrfsbase %0" : : "r"(old_fs) : "memory");
    else raw_arch_prctl(ARCH_SET_FS, old_fs);
    if (raw_arch_prctl(ARCH_SET_GS, (unsigned long)(blk + 4)) != 0) return 0;
    for (long i = 0; i < 4; i++) s += gs_read(8 * i) * (uint64_t)(i + 5);
    raw_arch_prctl(ARCH_SET_GS, 0);
    return (s >> 63) ? 0 : s;
}


static void *thread_main(void *arg)
{
    struct res *r = arg;
    long id = (long)r->addr;  /* in: the thread's number */
    snprintf(tls_name, sizeof tls_name, "thread-%ld", id);
    r->addr = (uint64_t)(uintptr_t)&tls_counter;
    if (tls_init != 0x1234567890abcdefULL || tls_counter != 0) r->bad = 1;
    tls_init ^= (uint64_t)id;
    unsigned long fsbase = 0;
    if (raw_arch_prctl(ARCH_GET_FS, (unsigned long)&fsbase) != 0 || fs_read(0) != fsbase) r->bad = 2;
    for (int round = 0; round < ROUNDS; round++) {
        for (long k = 0; k <= id; k++) tls_counter += (uint32_t)(round + 1);
        if (round % 10 == 0) sched_yield();
        pthread_barrier_wait(&barrier);
    }
    uint64_t blk[8];
    for (int i = 0; i < 8; i++) blk[i] = (uint64_t)(id + 1) * 0x0100000001ULL + (uint64_t)i;
    uint64_t s1 = segment_swap(blk, 0);
    uint64_t s2 = have_fsgsbase ? segment_swap(blk, 1) : s1;
    if (!s1 || s1 != s2) r->bad = 3;
    if (fs_read(0) != fsbase) r->bad = 4;
    if (strncmp(tls_name, "thread-", 7) != 0) r->bad = 5;
    r->sum = tls_counter * 1000003ULL + (tls_init ^ 0x1234567890abcdefULL) + s1;
    return NULL;
}

int main(void)
{
    suite_init();
    have_fsgsbase = (getauxval(AT_HWCAP2) & 2) != 0;  /* HWCAP2_FSGSBASE */
    cpu_line("fsgsbase", "%s", have_fsgsbase ? "yes" : "no");
    ck_t ck;
    ck_init(&ck);
    pthread_barrier_init(&barrier, NULL, NTHREADS);
    pthread_t th[NTHREADS];
    struct res res[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        res[i] = (struct res){ 0, (uint64_t)(i + 1), 0 };
        CHECK(pthread_create(&th[i], NULL, thread_main, &res[i]) == 0, "create");
    }
    for (int i = 0; i < NTHREADS; i++) CHECK(pthread_join(th[i], NULL) == 0, "join");
    for (int i = 0; i < NTHREADS; i++) {
        CHECK(res[i].bad == 0, "thread%d-bad%d", i + 1, res[i].bad);
        CHECK(res[i].addr != (uint64_t)(uintptr_t)&tls_counter, "tls-addr-shared-main");
        for (int j = 0; j < i; j++) CHECK(res[i].addr != res[j].addr, "tls-addr-shared");
        ck_u64(&ck, res[i].sum);
    }
    /* the main thread's TLS was never touched by the others */
    CHECK(tls_init == 0x1234567890abcdefULL && tls_counter == 0 && !strcmp(tls_name, "main"), "main-tls");
    uint64_t blk[8] = { 11, 22, 33, 44, 55, 66, 77, 88 };
    uint64_t s = segment_swap(blk, 0);
    CHECK(s != 0, "main-swap");
    ck_u64(&ck, s);
    result_ck("tls-threads", &ck);
    return 0;
}
