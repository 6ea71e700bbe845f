/*
 * avx512-zmm: AVX-512 in zmm16-zmm31, the registers only EVEX reaches (x86-64 only).
 *
 * Detected through CPUID and XCR0 (common.h's detect_vector_isa).  Where the
 * extension is present, one asm loop keeps 16 vector registers live
 * (zmm16-zmm31) and mixes their 64-bit lanes (add, rotate, xor) for 256
 * iterations with a getpid system call every 16 and an int3 (SIGTRAP
 * handler that uses no vector registers of its own) every 64; the state must
 * equal a scalar C reference bit for bit, and the result carries its
 * checksum.  Where it is absent the result says so:
 * "result: avx512-zmm16-31-not-available" (the same natively and in a guest whose CPU
 * model mirrors the host).
 */
#include "common.h"
#include <signal.h>

#if !defined(__x86_64__)
#error "avx512-zmm is an x86-64 program"
#endif

#define NV 16
#define LANES 8
#define ITERS 256

static inline uint64_t rol64(uint64_t v, unsigned r) { return (v << r) | (v >> (64 - r)); }
static volatile int traps;
static void on_trap(int sig) { (void)sig; traps++; }

__attribute__((target("avx512f")))
static void run_asm(uint64_t (*st)[LANES])
{
    __asm__ volatile(
        "vmovdqu64 0(%[p]), %%zmm16\n\t"
        "vmovdqu64 64(%[p]), %%zmm17\n\t"
        "vmovdqu64 128(%[p]), %%zmm18\n\t"
        "vmovdqu64 192(%[p]), %%zmm19\n\t"
        "vmovdqu64 256(%[p]), %%zmm20\n\t"
        "vmovdqu64 320(%[p]), %%zmm21\n\t"
        "vmovdqu64 384(%[p]), %%zmm22\n\t"
        "vmovdqu64 448(%[p]), %%zmm23\n\t"
        "vmovdqu64 512(%[p]), %%zmm24\n\t"
        "vmovdqu64 576(%[p]), %%zmm25\n\t"
        "vmovdqu64 640(%[p]), %%zmm26\n\t"
        "vmovdqu64 704(%[p]), %%zmm27\n\t"
        "vmovdqu64 768(%[p]), %%zmm28\n\t"
        "vmovdqu64 832(%[p]), %%zmm29\n\t"
        "vmovdqu64 896(%[p]), %%zmm30\n\t"
        "vmovdqu64 960(%[p]), %%zmm31\n\t"
        "movl $256, %%edx\n"
        "1:\n\t"
        "vpaddq %%zmm21, %%zmm16, %%zmm16\n\t vprolq $6, %%zmm16, %%zmm16\n\t vpxorq %%zmm17, %%zmm16, %%zmm16\n\t"
        "vpaddq %%zmm22, %%zmm17, %%zmm17\n\t vprolq $13, %%zmm17, %%zmm17\n\t vpxorq %%zmm18, %%zmm17, %%zmm17\n\t"
        "vpaddq %%zmm23, %%zmm18, %%zmm18\n\t vprolq $20, %%zmm18, %%zmm18\n\t vpxorq %%zmm19, %%zmm18, %%zmm18\n\t"
        "vpaddq %%zmm24, %%zmm19, %%zmm19\n\t vprolq $27, %%zmm19, %%zmm19\n\t vpxorq %%zmm20, %%zmm19, %%zmm19\n\t"
        "vpaddq %%zmm25, %%zmm20, %%zmm20\n\t vprolq $34, %%zmm20, %%zmm20\n\t vpxorq %%zmm21, %%zmm20, %%zmm20\n\t"
        "vpaddq %%zmm26, %%zmm21, %%zmm21\n\t vprolq $41, %%zmm21, %%zmm21\n\t vpxorq %%zmm22, %%zmm21, %%zmm21\n\t"
        "vpaddq %%zmm27, %%zmm22, %%zmm22\n\t vprolq $48, %%zmm22, %%zmm22\n\t vpxorq %%zmm23, %%zmm22, %%zmm22\n\t"
        "vpaddq %%zmm28, %%zmm23, %%zmm23\n\t vprolq $55, %%zmm23, %%zmm23\n\t vpxorq %%zmm24, %%zmm23, %%zmm23\n\t"
        "vpaddq %%zmm29, %%zmm24, %%zmm24\n\t vprolq $62, %%zmm24, %%zmm24\n\t vpxorq %%zmm25, %%zmm24, %%zmm24\n\t"
        "vpaddq %%zmm30, %%zmm25, %%zmm25\n\t vprolq $6, %%zmm25, %%zmm25\n\t vpxorq %%zmm26, %%zmm25, %%zmm25\n\t"
        "vpaddq %%zmm31, %%zmm26, %%zmm26\n\t vprolq $13, %%zmm26, %%zmm26\n\t vpxorq %%zmm27, %%zmm26, %%zmm26\n\t"
        "vpaddq %%zmm16, %%zmm27, %%zmm27\n\t vprolq $20, %%zmm27, %%zmm27\n\t vpxorq %%zmm28, %%zmm27, %%zmm27\n\t"
        "vpaddq %%zmm17, %%zmm28, %%zmm28\n\t vprolq $27, %%zmm28, %%zmm28\n\t vpxorq %%zmm29, %%zmm28, %%zmm28\n\t"
        "vpaddq %%zmm18, %%zmm29, %%zmm29\n\t vprolq $34, %%zmm29, %%zmm29\n\t vpxorq %%zmm30, %%zmm29, %%zmm29\n\t"
        "vpaddq %%zmm19, %%zmm30, %%zmm30\n\t vprolq $41, %%zmm30, %%zmm30\n\t vpxorq %%zmm31, %%zmm30, %%zmm30\n\t"
        "vpaddq %%zmm20, %%zmm31, %%zmm31\n\t vprolq $48, %%zmm31, %%zmm31\n\t vpxorq %%zmm16, %%zmm31, %%zmm31\n\t"
        "testl $15, %%edx\n\t jnz 2f\n\t movl $39, %%eax\n\t syscall\n\t"
        "testl $63, %%edx\n\t jnz 2f\n\t int3\n"
        "2:\n\t decl %%edx\n\t jnz 1b\n\t"
        "vmovdqu64 %%zmm16, 0(%[p])\n\t"
        "vmovdqu64 %%zmm17, 64(%[p])\n\t"
        "vmovdqu64 %%zmm18, 128(%[p])\n\t"
        "vmovdqu64 %%zmm19, 192(%[p])\n\t"
        "vmovdqu64 %%zmm20, 256(%[p])\n\t"
        "vmovdqu64 %%zmm21, 320(%[p])\n\t"
        "vmovdqu64 %%zmm22, 384(%[p])\n\t"
        "vmovdqu64 %%zmm23, 448(%[p])\n\t"
        "vmovdqu64 %%zmm24, 512(%[p])\n\t"
        "vmovdqu64 %%zmm25, 576(%[p])\n\t"
        "vmovdqu64 %%zmm26, 640(%[p])\n\t"
        "vmovdqu64 %%zmm27, 704(%[p])\n\t"
        "vmovdqu64 %%zmm28, 768(%[p])\n\t"
        "vmovdqu64 %%zmm29, 832(%[p])\n\t"
        "vmovdqu64 %%zmm30, 896(%[p])\n\t"
        "vmovdqu64 %%zmm31, 960(%[p])\n\t"
        "vzeroupper"
        : : [p] "r"(st)
        : "rax", "rcx", "rdx", "r11", "memory", "cc", "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31");
}

static void run_ref(uint64_t (*S)[LANES])
{
    for (int it = 0; it < ITERS; it++) {
            for (int l = 0; l < 8; l++) S[0][l] = rol64(S[0][l] + S[5][l], 6) ^ S[1][l];
            for (int l = 0; l < 8; l++) S[1][l] = rol64(S[1][l] + S[6][l], 13) ^ S[2][l];
            for (int l = 0; l < 8; l++) S[2][l] = rol64(S[2][l] + S[7][l], 20) ^ S[3][l];
            for (int l = 0; l < 8; l++) S[3][l] = rol64(S[3][l] + S[8][l], 27) ^ S[4][l];
            for (int l = 0; l < 8; l++) S[4][l] = rol64(S[4][l] + S[9][l], 34) ^ S[5][l];
            for (int l = 0; l < 8; l++) S[5][l] = rol64(S[5][l] + S[10][l], 41) ^ S[6][l];
            for (int l = 0; l < 8; l++) S[6][l] = rol64(S[6][l] + S[11][l], 48) ^ S[7][l];
            for (int l = 0; l < 8; l++) S[7][l] = rol64(S[7][l] + S[12][l], 55) ^ S[8][l];
            for (int l = 0; l < 8; l++) S[8][l] = rol64(S[8][l] + S[13][l], 62) ^ S[9][l];
            for (int l = 0; l < 8; l++) S[9][l] = rol64(S[9][l] + S[14][l], 6) ^ S[10][l];
            for (int l = 0; l < 8; l++) S[10][l] = rol64(S[10][l] + S[15][l], 13) ^ S[11][l];
            for (int l = 0; l < 8; l++) S[11][l] = rol64(S[11][l] + S[0][l], 20) ^ S[12][l];
            for (int l = 0; l < 8; l++) S[12][l] = rol64(S[12][l] + S[1][l], 27) ^ S[13][l];
            for (int l = 0; l < 8; l++) S[13][l] = rol64(S[13][l] + S[2][l], 34) ^ S[14][l];
            for (int l = 0; l < 8; l++) S[14][l] = rol64(S[14][l] + S[3][l], 41) ^ S[15][l];
            for (int l = 0; l < 8; l++) S[15][l] = rol64(S[15][l] + S[4][l], 48) ^ S[0][l];
    }
}

int main(void)
{
    suite_init();
    struct vector_isa v = detect_vector_isa();
    if (!v.avx512) {
        result("avx512-zmm16-31-not-available");
        return 0;
    }
    signal(SIGTRAP, on_trap);
    ck_t ck;
    ck_init(&ck);
    for (int round = 0; round < 6; round++) {
        static uint64_t a[NV][LANES] __attribute__((aligned(64))), b[NV][LANES];
        uint64_t s = 0x243f6a8885a308d3ULL + (uint64_t)round;
        for (int i = 0; i < NV; i++)
            for (int l = 0; l < LANES; l++) {
                s = s * 6364136223846793005ULL + 1442695040888963407ULL;
                a[i][l] = b[i][l] = s ^ (s >> 31);
            }
        traps = 0;
        run_asm(a);
        run_ref(b);
        CHECK(traps == ITERS / 64, "traps-%d", traps);
        for (int i = 0; i < NV; i++)
            CHECK(memcmp(a[i], b[i], sizeof a[i]) == 0, "round%d-reg%d", round, i);
        ck_bytes(&ck, a, sizeof a);
    }
    result_ck("avx512-zmm16-31", &ck);
    return 0;
}
