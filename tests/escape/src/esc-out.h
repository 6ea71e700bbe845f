/*
 * The escape suite's output protocol (tests/escape), shared by the i386 programs (esc.h) and
 * the x86-64 ones (esc64.h); portable C, no assembly.
 *
 *   case: <name> <outcome>   one per probe; compared
 *   result: <token>          exactly once; compared
 *   cpu: <key>=<value>       values that are documented leaks under acceleration; not compared
 *   info: <text>             never compared
 */
#ifndef ESC_OUT_H
#define ESC_OUT_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

__attribute__((format(printf, 1, 2))) static inline void info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("info: ", stdout);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
}

__attribute__((noreturn, format(printf, 1, 2))) static inline void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("result: FAIL-", stdout);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    exit(1);
}

/* FNV-1a over the case lines, for the result token. */
static uint64_t esc_hash = 0xcbf29ce484222325ULL;
static unsigned esc_cases;

__attribute__((format(printf, 2, 3))) static inline void report(const char *name, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    printf("case: %s %s\n", name, buf);
    for (const char *p = name; *p; p++)
        esc_hash = (esc_hash ^ (unsigned char)*p) * 0x100000001b3ULL;
    for (const char *p = buf; *p; p++)
        esc_hash = (esc_hash ^ (unsigned char)*p) * 0x100000001b3ULL;
    esc_cases++;
}

static inline void finish(void)
{
    printf("result: cases=%u-%016llx\n", esc_cases, (unsigned long long)esc_hash);
}

#endif
