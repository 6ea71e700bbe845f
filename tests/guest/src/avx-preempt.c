/*
 * avx-preempt: two processes keep distinct values in the vector registers (ZMM0-7 and k1-k7
 * with AVX-512, else YMM0-7 with AVX2, else XMM0-7) across long stretches of integer work,
 * system calls (sched_yield through int $0x80) and the kernel's preemptions, and check that
 * every register still holds its value afterwards. Under acceleration the registers live
 * natively on the host between exits and in Bochs across the guest kernel's context switches:
 * this checks that the state survives both directions of every hand-over.
 *
 * The result line does not depend on the vector width (a cpu: line says which one ran).
 */
#include "common.h"
#include <sys/wait.h>

#define ROUNDS 24
#define SPIN 400000 /* integer loop iterations between load and check (~1 ms natively) */

static int width; /* 512, 256 or 128 */

/* Pattern byte j of register r in round n of process p. */
static uint8_t pattern(int p, int n, int r, int j)
{
    return (uint8_t)(p * 131 + n * 29 + r * 17 + j * 7 + 1);
}

#if defined(__x86_64__) /* (built with -mno-red-zone: the pushes are safe) */
#define PUSH_BX "push %%rbx\n\t"
#define POP_BX "pop %%rbx\n\t"
#define YIELD "mov $24, %%eax\n\t syscall\n\t" /* sched_yield */
#define YIELD_CLOBBER "r11",
#else
#define PUSH_BX "push %%ebx\n\t"
#define POP_BX "pop %%ebx\n\t"
#define YIELD "mov $158, %%eax\n\t int $0x80\n\t" /* sched_yield */
#define YIELD_CLOBBER
#endif

/* Loads the registers from in[], spins with a yield in the middle (no vector instruction
 * touches them in between), stores them to out[]. One asm statement, so the compiler cannot
 * use the registers in between. */
__attribute__((target("avx512f,avx512bw")))
static void round512(const uint8_t in[8][64], const uint64_t kin[8], uint8_t out[8][64], uint64_t kout[8])
{
    __asm__ volatile(
        "vmovdqu64 0(%0), %%zmm0\n\t vmovdqu64 64(%0), %%zmm1\n\t"
        "vmovdqu64 128(%0), %%zmm2\n\t vmovdqu64 192(%0), %%zmm3\n\t"
        "vmovdqu64 256(%0), %%zmm4\n\t vmovdqu64 320(%0), %%zmm5\n\t"
        "vmovdqu64 384(%0), %%zmm6\n\t vmovdqu64 448(%0), %%zmm7\n\t"
        "kmovq 8(%1), %%k1\n\t kmovq 16(%1), %%k2\n\t kmovq 24(%1), %%k3\n\t"
        "kmovq 32(%1), %%k4\n\t kmovq 40(%1), %%k5\n\t kmovq 48(%1), %%k6\n\t kmovq 56(%1), %%k7\n\t"
        PUSH_BX "mov %4, %%ecx\n"
        "1:\n\t imul $1103515245, %%ecx, %%ebx\n\t dec %%ecx\n\t jnz 1b\n\t"
        YIELD
        "mov %4, %%ecx\n"
        "2:\n\t imul $1103515245, %%ecx, %%ebx\n\t dec %%ecx\n\t jnz 2b\n\t" POP_BX
        "vmovdqu64 %%zmm0, 0(%2)\n\t vmovdqu64 %%zmm1, 64(%2)\n\t"
        "vmovdqu64 %%zmm2, 128(%2)\n\t vmovdqu64 %%zmm3, 192(%2)\n\t"
        "vmovdqu64 %%zmm4, 256(%2)\n\t vmovdqu64 %%zmm5, 320(%2)\n\t"
        "vmovdqu64 %%zmm6, 384(%2)\n\t vmovdqu64 %%zmm7, 448(%2)\n\t"
        "kmovq %%k1, 8(%3)\n\t kmovq %%k2, 16(%3)\n\t kmovq %%k3, 24(%3)\n\t"
        "kmovq %%k4, 32(%3)\n\t kmovq %%k5, 40(%3)\n\t kmovq %%k6, 48(%3)\n\t kmovq %%k7, 56(%3)\n\t"
        "vzeroupper"
        :: "r"(in), "r"(kin), "r"(out), "r"(kout), "i"(SPIN)
        : "eax", "ecx", YIELD_CLOBBER "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
          "k1", "k2", "k3", "k4", "k5", "k6", "k7");
}

__attribute__((target("avx2")))
static void round256(const uint8_t in[8][64], uint8_t out[8][64])
{
    __asm__ volatile(
        "vmovdqu 0(%0), %%ymm0\n\t vmovdqu 64(%0), %%ymm1\n\t vmovdqu 128(%0), %%ymm2\n\t"
        "vmovdqu 192(%0), %%ymm3\n\t vmovdqu 256(%0), %%ymm4\n\t vmovdqu 320(%0), %%ymm5\n\t"
        "vmovdqu 384(%0), %%ymm6\n\t vmovdqu 448(%0), %%ymm7\n\t"
        PUSH_BX "mov %2, %%ecx\n"
        "1:\n\t imul $1103515245, %%ecx, %%ebx\n\t dec %%ecx\n\t jnz 1b\n\t"
        YIELD
        "mov %2, %%ecx\n"
        "2:\n\t imul $1103515245, %%ecx, %%ebx\n\t dec %%ecx\n\t jnz 2b\n\t" POP_BX
        "vmovdqu %%ymm0, 0(%1)\n\t vmovdqu %%ymm1, 64(%1)\n\t vmovdqu %%ymm2, 128(%1)\n\t"
        "vmovdqu %%ymm3, 192(%1)\n\t vmovdqu %%ymm4, 256(%1)\n\t vmovdqu %%ymm5, 320(%1)\n\t"
        "vmovdqu %%ymm6, 384(%1)\n\t vmovdqu %%ymm7, 448(%1)\n\t vzeroupper"
        :: "r"(in), "r"(out), "i"(SPIN)
        : "eax", "ecx", YIELD_CLOBBER "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7");
}

__attribute__((target("sse2")))
static void round128(const uint8_t in[8][64], uint8_t out[8][64])
{
    __asm__ volatile(
        "movdqu 0(%0), %%xmm0\n\t movdqu 64(%0), %%xmm1\n\t movdqu 128(%0), %%xmm2\n\t"
        "movdqu 192(%0), %%xmm3\n\t movdqu 256(%0), %%xmm4\n\t movdqu 320(%0), %%xmm5\n\t"
        "movdqu 384(%0), %%xmm6\n\t movdqu 448(%0), %%xmm7\n\t"
        PUSH_BX "mov %2, %%ecx\n"
        "1:\n\t imul $1103515245, %%ecx, %%ebx\n\t dec %%ecx\n\t jnz 1b\n\t"
        YIELD
        "mov %2, %%ecx\n"
        "2:\n\t imul $1103515245, %%ecx, %%ebx\n\t dec %%ecx\n\t jnz 2b\n\t" POP_BX
        "movdqu %%xmm0, 0(%1)\n\t movdqu %%xmm1, 64(%1)\n\t movdqu %%xmm2, 128(%1)\n\t"
        "movdqu %%xmm3, 192(%1)\n\t movdqu %%xmm4, 256(%1)\n\t movdqu %%xmm5, 320(%1)\n\t"
        "movdqu %%xmm6, 384(%1)\n\t movdqu %%xmm7, 448(%1)"
        :: "r"(in), "r"(out), "i"(SPIN)
        : "eax", "ecx", YIELD_CLOBBER "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7");
}

/* One process's work: returns the number of corrupted bytes over all rounds. */
static unsigned run_process(int p)
{
    static uint8_t in[8][64], out[8][64];
    static uint64_t kin[8], kout[8];
    unsigned bad = 0, bytes = (unsigned)width / 8;
    for (int n = 0; n < ROUNDS; n++) {
        for (int r = 0; r < 8; r++)
            for (int j = 0; j < 64; j++) in[r][j] = pattern(p, n, r, j), out[r][j] = 0;
        for (int r = 0; r < 8; r++) kin[r] = 0x0101010101010101ULL * pattern(p, n, r, 99), kout[r] = 0;
        if (width == 512) round512(in, kin, out, kout);
        else if (width == 256) round256(in, out);
        else round128(in, out);
        for (int r = 0; r < 8; r++)
            for (unsigned j = 0; j < bytes; j++) bad += in[r][j] != out[r][j];
        if (width == 512)
            for (int r = 1; r < 8; r++) bad += kin[r] != kout[r];
    }
    return bad;
}

int main(void)
{
    suite_init();
    struct vector_isa v = detect_vector_isa();
    width = v.avx512 ? 512 : v.avx2 ? 256 : 128;
    cpu_line("width", "%d", width);
    pid_t kids[2];
    for (int p = 0; p < 2; p++) {
        kids[p] = fork();
        CHECK(kids[p] >= 0, "fork");
        if (kids[p] == 0) _exit(run_process(p + 1) ? 1 : 0);
    }
    int ok = 1;
    for (int p = 0; p < 2; p++) {
        int st;
        CHECK(waitpid(kids[p], &st, 0) == kids[p], "waitpid");
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            info("process %d: status 0x%x (registers corrupted or crashed)", p + 1, st);
            ok = 0;
        }
    }
    CHECK(ok, "registers-corrupted");
    result("avx-preempt-ok-%dx%d", 2, ROUNDS);
    return 0;
}
