/*
 * smc: self-modifying and freshly generated code.
 *
 *  - code generated into an RWX mmap, executed, overwritten in place,
 *    executed again (same offset many times, and sliding offsets);
 *  - code written onto the stack (the page is made executable with
 *    mprotect) and executed;
 *  - new code written at a nearby offset of a page that already ran code;
 *  - code that patches the immediate of an instruction a few bytes ahead
 *    of itself, with and without an intervening jump;
 *  - code modified through a second (RW) mapping of the same memfd page
 *    while executing through an RX mapping;
 *  - W^X flips with mprotect, a page unmapped and remapped at the same
 *    address with different code, and code written by the kernel (read()
 *    from a pipe into the code page).
 */
#define _GNU_SOURCE
#include "common.h"
#include <sys/mman.h>
#include <sys/syscall.h>

typedef uint32_t (*fn_t)(void);

static ck_t ck;

static unsigned char *emit_ret_imm(unsigned char *p, uint32_t imm)
{
    *p++ = 0xb8;                 /* mov eax, imm32 */
    memcpy(p, &imm, 4); p += 4;
    *p++ = 0xc3;                 /* ret */
    return p;
}

/* eax = sum_{k=1..n} k + bias, via a loop */
static unsigned char *emit_loop(unsigned char *p, uint32_t n, uint32_t bias)
{
    *p++ = 0xb8; memcpy(p, &bias, 4); p += 4;   /* mov eax, bias */
    *p++ = 0xb9; memcpy(p, &n, 4); p += 4;      /* mov ecx, n */
    *p++ = 0x01; *p++ = 0xc8;                   /* 1: add eax, ecx */
    *p++ = 0xe2; *p++ = 0xfc;                   /* loop 1b */
    *p++ = 0xc3;                                /* ret */
    return p;
}

static uint32_t call(void *code) { return ((fn_t)code)(); }

static void t_rwx(void)
{
    unsigned char *buf = mmap(NULL, 8192, PROT_READ | PROT_WRITE | PROT_EXEC,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) fail("mmap-rwx");
    /* same location rewritten over and over */
    uint32_t sum = 0;
    for (uint32_t i = 0; i < 2000; i++) {
        emit_ret_imm(buf, i * 2654435761u);
        uint32_t r = call(buf);
        if (r != i * 2654435761u) fail("rewrite-%u", i);
        sum += r;
    }
    ck_u32(&ck, sum);
    /* sliding offsets, including code straddling the page boundary */
    for (uint32_t i = 0; i < 600; i++) {
        unsigned off = (i * 37) % (8192 - 16);
        emit_loop(buf + off, i % 50 + 1, i);
        uint32_t r = call(buf + off);
        uint32_t n = i % 50 + 1;
        if (r != i + n * (n + 1) / 2) fail("slide-%u", i);
        ck_u32(&ck, r);
    }
    /* new code at a nearby offset in a page that has just executed code,
     * then the old code patched in place */
    emit_ret_imm(buf, 0x1111);
    if (call(buf) != 0x1111) fail("near-a");
    emit_ret_imm(buf + 8, 0x2222);
    if (call(buf + 8) != 0x2222) fail("near-b");
    buf[1] = 0x33;                               /* patch imm low byte of the first */
    if (call(buf) != 0x1133) fail("near-c");
    if (call(buf + 8) != 0x2222) fail("near-d");
    ck_u32(&ck, 0x1133);

    /* patch a few bytes ahead of the executing instruction */
    for (int variant = 0; variant < 2; variant++)
        for (uint32_t i = 0; i < 200; i++) {
            unsigned char *p = buf + 4096 + 64 * variant;
            unsigned char *q = p;
            uint32_t newv = 0xabc00000u + i, oldv = 0xdead0000u + i;
            *q++ = 0xc7; *q++ = 0x05;                 /* mov dword [abs32 | rip+disp32], imm32 */
            unsigned char *immaddr_field = q; q += 4;
            memcpy(q, &newv, 4); q += 4;
            if (variant) { *q++ = 0xeb; *q++ = 0x00; } /* jmp next */
            *q++ = 0xb8;                              /* mov eax, imm32 */
#if defined(__x86_64__)   /* in 64-bit mode the disp32 is relative to the next instruction */
            uint32_t target = (uint32_t)((uintptr_t)q - (uintptr_t)(p + 10));
#else
            uint32_t target = (uint32_t)(uintptr_t)q;
#endif
            memcpy(immaddr_field, &target, 4);
            memcpy(q, &oldv, 4); q += 4;
            *q++ = 0xc3;
            uint32_t r = call(p);
            if (r != newv) fail("ahead-%d-%u-%08x", variant, i, r);
            ck_u32(&ck, r);
        }
    munmap(buf, 8192);
}

static void t_stack(void)
{
    unsigned char code[256] __attribute__((aligned(64)));
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)code & ~(uintptr_t)(pg - 1);
    uintptr_t end = ((uintptr_t)code + sizeof code + pg - 1) & ~(uintptr_t)(pg - 1);
    if (mprotect((void *)start, end - start, PROT_READ | PROT_WRITE | PROT_EXEC))
        fail("mprotect-stack");
    for (uint32_t i = 0; i < 300; i++) {
        unsigned off = (i * 13) % 200;
        emit_loop(code + off, i % 20 + 1, i * 3);
        uint32_t n = i % 20 + 1;
        uint32_t r = call(code + off);
        if (r != i * 3 + n * (n + 1) / 2) fail("stack-%u", i);
        ck_u32(&ck, r);
    }
    /* leave the stack non-executable again */
    mprotect((void *)start, end - start, PROT_READ | PROT_WRITE);
}

static void t_alias(void)
{
    int fd = (int)syscall(SYS_memfd_create, "smc", 0);
    if (fd < 0) fail("memfd");
    if (ftruncate(fd, 4096)) fail("ftruncate");
    unsigned char *w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    unsigned char *x = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
    if (w == MAP_FAILED || x == MAP_FAILED) fail("mmap-alias");
    for (uint32_t i = 0; i < 500; i++) {
        unsigned off = (i % 3) * 32;
        emit_loop(w + off, i % 30 + 1, i ^ 0x5a5a);
        uint32_t n = i % 30 + 1;
        uint32_t r = call(x + off);
        if (r != (i ^ 0x5a5a) + n * (n + 1) / 2) fail("alias-%u", i);
        ck_u32(&ck, r);
    }
    munmap(w, 4096);
    munmap(x, 4096);
    close(fd);
}

static void t_wx_flip(void)
{
    unsigned char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail("mmap-wx");
    for (uint32_t i = 0; i < 100; i++) {
        if (mprotect(p, 4096, PROT_READ | PROT_WRITE)) fail("mprotect-rw");
        emit_ret_imm(p + (i & 1) * 16, 0x77000000u + i);
        if (mprotect(p, 4096, PROT_READ | PROT_EXEC)) fail("mprotect-rx");
        uint32_t r = call(p + (i & 1) * 16);
        if (r != 0x77000000u + i) fail("wx-%u", i);
        ck_u32(&ck, r);
    }
    /* remap a fresh page at the same address with different code */
    for (uint32_t i = 0; i < 50; i++) {
        munmap(p, 4096);
        unsigned char *q = mmap(p, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (q != p) fail("remap");
        emit_ret_imm(p, 0x66000000u + i);
        uint32_t r = call(p);
        if (r != 0x66000000u + i) fail("remap-%u", i);
        ck_u32(&ck, r);
    }
    /* code written by the kernel: read() from a pipe into the code page */
    {
        int fds[2];
        if (pipe(fds)) fail("pipe");
        for (uint32_t i = 0; i < 50; i++) {
            unsigned char tmp[16];
            emit_loop(tmp, i + 1, 1000 * i);
            if (write(fds[1], tmp, 16) != 16) fail("pipe-write");
            if (read(fds[0], p + 128, 16) != 16) fail("pipe-read");
            uint32_t r = call(p + 128);
            if (r != 1000 * i + (i + 1) * (i + 2) / 2) fail("kernel-written-%u", i);
            ck_u32(&ck, r);
        }
        close(fds[0]);
        close(fds[1]);
    }
    munmap(p, 4096);
}

int main(void)
{
    suite_init();
    ck_init(&ck);
    t_rwx();
    t_stack();
    t_alias();
    t_wx_flip();
    result_ck("smc", &ck);
    return 0;
}
