/*
 * Shared helpers for the guest workload suite.
 *
 * Output protocol of every program (see tests/guest/README.md):
 *   result: <token>        exactly once, path/CPU independent
 *   cpu: <key>=<value>     CPU-dependent facts (never compared)
 *   info: <text>           free-form, never compared
 * A program that finds an internal inconsistency prints
 * "result: FAIL-<what>" and exits 1.
 */
#ifndef SUITE_COMMON_H
#define SUITE_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sched_getcpu, CPU_SET */
#endif
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <unistd.h>

#if !defined(__i386__) && !defined(__x86_64__)
#error "the guest suite is x86 code: build with gcc -m32 or -m64"
#endif

#if defined(__x86_64__)
/* The suite's inline assembly was written for i386.  In x86-64 builds
 * (tests/guest/Makefile ARCH=amd64, which also passes -mno-red-zone so that
 * inline pushes are safe) these assembler macros give its 32-bit stack
 * idioms their meaning there: "pushl X" (a 32-bit register or an immediate)
 * pushes X zero-extended to 64 bits, "popl R" pops the low 32 bits into R,
 * and neither touches the flags (they carry EFLAGS images). */
__asm__(".macro pushl a\n\tlea -8(%rsp), %rsp\n\tmovl \\a, (%rsp)\n\tmovl $0, 4(%rsp)\n\t.endm\n"
        ".macro popl a\n\tmovl (%rsp), \\a\n\tlea 8(%rsp), %rsp\n\t.endm\n"
        ".macro pushfl\n\tpushfq\n\t.endm\n"
        ".macro popfl\n\tpopfq\n\t.endm\n");
#endif

/* FNV-1a 64-bit checksum. */
typedef struct { uint64_t h; } ck_t;

static inline void ck_init(ck_t *c) { c->h = 0xcbf29ce484222325ULL; }

static inline void ck_bytes(ck_t *c, const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    uint64_t h = c->h;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    c->h = h;
}

static inline void ck_u32(ck_t *c, uint32_t v) { ck_bytes(c, &v, sizeof v); }
static inline void ck_u64(ck_t *c, uint64_t v) { ck_bytes(c, &v, sizeof v); }

static inline void suite_init(void)
{
    /* Line buffered so that nothing is duplicated across fork() and the
     * order of lines is kept even when a program dies. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    setvbuf(stderr, NULL, _IONBF, 0);
}

__attribute__((format(printf, 1, 2)))
static inline void info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("info: ", stdout);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    fflush(stdout);
}

__attribute__((format(printf, 2, 3)))
static inline void cpu_line(const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("cpu: %s=", key);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    fflush(stdout);
}

__attribute__((noreturn, format(printf, 1, 2)))
static inline void fail(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    va_start(ap, fmt);
    fputs("result: FAIL-", stdout);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    fflush(stdout);
    exit(1);
}

/* CHECK(cond, fmt, ...): fail("fmt") unless cond holds. */
#define CHECK(cond, ...) do { if (!(cond)) fail(__VA_ARGS__); } while (0)

__attribute__((format(printf, 1, 2)))
static inline void result(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("result: ", stdout);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    fflush(stdout);
}

/* Pins the process to the CPU it runs on, so repeated CPUID/RDTSC reads come from one CPU. */
static inline void pin_to_current_cpu(void)
{
    int cpu = sched_getcpu();
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        sched_setaffinity(0, sizeof set, &set);
    }
}

/* Which vector ISAs user code may use: CPUID says so and the kernel enabled their state in XCR0.
 * SUITE_NO_AVX512 / SUITE_NO_AVX2 force the narrower paths (test hooks). Prints cpu: lines. */
struct vector_isa { uint64_t xcr0; int avx2, avx512; };

static inline struct vector_isa detect_vector_isa(void)
{
    struct vector_isa v = { 0, 0, 0 };
    unsigned a, b, c, d, max, b7 = 0;
    __asm__ volatile("cpuid" : "=a"(max), "=b"(b), "=c"(c), "=d"(d) : "a"(0), "c"(0));
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (osxsave) {
        uint32_t lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        v.xcr0 = ((uint64_t)hi << 32) | lo;
    }
    if (max >= 7) __asm__ volatile("cpuid" : "=a"(a), "=b"(b7), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    v.avx2 = avx && osxsave && (v.xcr0 & 6) == 6 && ((b7 >> 5) & 1);
    v.avx512 = v.avx2 && (v.xcr0 & 0xe6) == 0xe6 &&
               ((b7 >> 16) & 1) && ((b7 >> 17) & 1) && ((b7 >> 28) & 1) &&
               ((b7 >> 30) & 1) && ((b7 >> 31) & 1);  /* F DQ CD BW VL */
    if (getenv("SUITE_NO_AVX512")) v.avx512 = 0;
    if (getenv("SUITE_NO_AVX2")) v.avx2 = v.avx512 = 0;
    cpu_line("xcr0", "0x%llx", (unsigned long long)v.xcr0);
    cpu_line("avx2", "%s", v.avx2 ? "yes" : "no");
    cpu_line("avx512", "%s", v.avx512 ? "yes" : "no");
    return v;
}

static inline void result_ck(const char *tag, const ck_t *c)
{
    result("%s-%016llx", tag, (unsigned long long)c->h);
}

#endif
