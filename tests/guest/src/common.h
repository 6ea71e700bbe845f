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

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <unistd.h>

#if !defined(__i386__)
#error "the guest suite is i386-only: build with gcc -m32"
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

static inline void result_ck(const char *tag, const ck_t *c)
{
    result("%s-%016llx", tag, (unsigned long long)c->h);
}

#endif
