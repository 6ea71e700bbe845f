/*
 * avx2-ymm: AVX2 in ymm0-ymm15 (ymm8-15 exist only in 64-bit mode; x86-64 only).
 *
 * Detected through CPUID and XCR0 (common.h's detect_vector_isa).  Where the
 * extension is present, one asm loop keeps 15 vector registers live
 * (ymm0-ymm14, ymm15 as scratch) and mixes their 64-bit lanes (add, rotate, xor) for 256
 * iterations with a getpid system call every 16 and an int3 (SIGTRAP
 * handler that uses no vector registers of its own) every 64; the state must
 * equal a scalar C reference bit for bit, and the result carries its
 * checksum.  Where it is absent the result says so:
 * "result: avx2-ymm0-15-not-available" (the same natively and in a guest whose CPU
 * model mirrors the host).
 */
#include "common.h"
#include <signal.h>

#if !defined(__x86_64__)
#error "avx2-ymm is an x86-64 program"
#endif

#define NV 15
#define LANES 4
#define ITERS 256

static inline uint64_t rol64(uint64_t v, unsigned r) { return (v << r) | (v >> (64 - r)); }
static volatile int traps;
static void on_trap(int sig) { (void)sig; traps++; }

__attribute__((target("avx2")))
static void run_asm(uint64_t (*st)[LANES])
{
    __asm__ volatile(
        "vmovdqu 0(%[p]), %%ymm0\n\t"
        "vmovdqu 32(%[p]), %%ymm1\n\t"
        "vmovdqu 64(%[p]), %%ymm2\n\t"
        "vmovdqu 96(%[p]), %%ymm3\n\t"
        "vmovdqu 128(%[p]), %%ymm4\n\t"
        "vmovdqu 160(%[p]), %%ymm5\n\t"
        "vmovdqu 192(%[p]), %%ymm6\n\t"
        "vmovdqu 224(%[p]), %%ymm7\n\t"
        "vmovdqu 256(%[p]), %%ymm8\n\t"
        "vmovdqu 288(%[p]), %%ymm9\n\t"
        "vmovdqu 320(%[p]), %%ymm10\n\t"
        "vmovdqu 352(%[p]), %%ymm11\n\t"
        "vmovdqu 384(%[p]), %%ymm12\n\t"
        "vmovdqu 416(%[p]), %%ymm13\n\t"
        "vmovdqu 448(%[p]), %%ymm14\n\t"
        "movl $256, %%edx\n"
        "1:\n\t"
        "vpaddq %%ymm5, %%ymm0, %%ymm0\n\t vpsllq $6, %%ymm0, %%ymm15\n\t vpsrlq $58, %%ymm0, %%ymm0\n\t vpor %%ymm15, %%ymm0, %%ymm0\n\t vpxor %%ymm1, %%ymm0, %%ymm0\n\t"
        "vpaddq %%ymm6, %%ymm1, %%ymm1\n\t vpsllq $13, %%ymm1, %%ymm15\n\t vpsrlq $51, %%ymm1, %%ymm1\n\t vpor %%ymm15, %%ymm1, %%ymm1\n\t vpxor %%ymm2, %%ymm1, %%ymm1\n\t"
        "vpaddq %%ymm7, %%ymm2, %%ymm2\n\t vpsllq $20, %%ymm2, %%ymm15\n\t vpsrlq $44, %%ymm2, %%ymm2\n\t vpor %%ymm15, %%ymm2, %%ymm2\n\t vpxor %%ymm3, %%ymm2, %%ymm2\n\t"
        "vpaddq %%ymm8, %%ymm3, %%ymm3\n\t vpsllq $27, %%ymm3, %%ymm15\n\t vpsrlq $37, %%ymm3, %%ymm3\n\t vpor %%ymm15, %%ymm3, %%ymm3\n\t vpxor %%ymm4, %%ymm3, %%ymm3\n\t"
        "vpaddq %%ymm9, %%ymm4, %%ymm4\n\t vpsllq $34, %%ymm4, %%ymm15\n\t vpsrlq $30, %%ymm4, %%ymm4\n\t vpor %%ymm15, %%ymm4, %%ymm4\n\t vpxor %%ymm5, %%ymm4, %%ymm4\n\t"
        "vpaddq %%ymm10, %%ymm5, %%ymm5\n\t vpsllq $41, %%ymm5, %%ymm15\n\t vpsrlq $23, %%ymm5, %%ymm5\n\t vpor %%ymm15, %%ymm5, %%ymm5\n\t vpxor %%ymm6, %%ymm5, %%ymm5\n\t"
        "vpaddq %%ymm11, %%ymm6, %%ymm6\n\t vpsllq $48, %%ymm6, %%ymm15\n\t vpsrlq $16, %%ymm6, %%ymm6\n\t vpor %%ymm15, %%ymm6, %%ymm6\n\t vpxor %%ymm7, %%ymm6, %%ymm6\n\t"
        "vpaddq %%ymm12, %%ymm7, %%ymm7\n\t vpsllq $55, %%ymm7, %%ymm15\n\t vpsrlq $9, %%ymm7, %%ymm7\n\t vpor %%ymm15, %%ymm7, %%ymm7\n\t vpxor %%ymm8, %%ymm7, %%ymm7\n\t"
        "vpaddq %%ymm13, %%ymm8, %%ymm8\n\t vpsllq $62, %%ymm8, %%ymm15\n\t vpsrlq $2, %%ymm8, %%ymm8\n\t vpor %%ymm15, %%ymm8, %%ymm8\n\t vpxor %%ymm9, %%ymm8, %%ymm8\n\t"
        "vpaddq %%ymm14, %%ymm9, %%ymm9\n\t vpsllq $6, %%ymm9, %%ymm15\n\t vpsrlq $58, %%ymm9, %%ymm9\n\t vpor %%ymm15, %%ymm9, %%ymm9\n\t vpxor %%ymm10, %%ymm9, %%ymm9\n\t"
        "vpaddq %%ymm0, %%ymm10, %%ymm10\n\t vpsllq $13, %%ymm10, %%ymm15\n\t vpsrlq $51, %%ymm10, %%ymm10\n\t vpor %%ymm15, %%ymm10, %%ymm10\n\t vpxor %%ymm11, %%ymm10, %%ymm10\n\t"
        "vpaddq %%ymm1, %%ymm11, %%ymm11\n\t vpsllq $20, %%ymm11, %%ymm15\n\t vpsrlq $44, %%ymm11, %%ymm11\n\t vpor %%ymm15, %%ymm11, %%ymm11\n\t vpxor %%ymm12, %%ymm11, %%ymm11\n\t"
        "vpaddq %%ymm2, %%ymm12, %%ymm12\n\t vpsllq $27, %%ymm12, %%ymm15\n\t vpsrlq $37, %%ymm12, %%ymm12\n\t vpor %%ymm15, %%ymm12, %%ymm12\n\t vpxor %%ymm13, %%ymm12, %%ymm12\n\t"
        "vpaddq %%ymm3, %%ymm13, %%ymm13\n\t vpsllq $34, %%ymm13, %%ymm15\n\t vpsrlq $30, %%ymm13, %%ymm13\n\t vpor %%ymm15, %%ymm13, %%ymm13\n\t vpxor %%ymm14, %%ymm13, %%ymm13\n\t"
        "vpaddq %%ymm4, %%ymm14, %%ymm14\n\t vpsllq $41, %%ymm14, %%ymm15\n\t vpsrlq $23, %%ymm14, %%ymm14\n\t vpor %%ymm15, %%ymm14, %%ymm14\n\t vpxor %%ymm0, %%ymm14, %%ymm14\n\t"
        "testl $15, %%edx\n\t jnz 2f\n\t movl $39, %%eax\n\t syscall\n\t"
        "testl $63, %%edx\n\t jnz 2f\n\t int3\n"
        "2:\n\t decl %%edx\n\t jnz 1b\n\t"
        "vmovdqu %%ymm0, 0(%[p])\n\t"
        "vmovdqu %%ymm1, 32(%[p])\n\t"
        "vmovdqu %%ymm2, 64(%[p])\n\t"
        "vmovdqu %%ymm3, 96(%[p])\n\t"
        "vmovdqu %%ymm4, 128(%[p])\n\t"
        "vmovdqu %%ymm5, 160(%[p])\n\t"
        "vmovdqu %%ymm6, 192(%[p])\n\t"
        "vmovdqu %%ymm7, 224(%[p])\n\t"
        "vmovdqu %%ymm8, 256(%[p])\n\t"
        "vmovdqu %%ymm9, 288(%[p])\n\t"
        "vmovdqu %%ymm10, 320(%[p])\n\t"
        "vmovdqu %%ymm11, 352(%[p])\n\t"
        "vmovdqu %%ymm12, 384(%[p])\n\t"
        "vmovdqu %%ymm13, 416(%[p])\n\t"
        "vmovdqu %%ymm14, 448(%[p])\n\t"
        "vzeroupper"
        : : [p] "r"(st)
        : "rax", "rcx", "rdx", "r11", "memory", "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
}

static void run_ref(uint64_t (*S)[LANES])
{
    for (int it = 0; it < ITERS; it++) {
            for (int l = 0; l < 4; l++) S[0][l] = rol64(S[0][l] + S[5][l], 6) ^ S[1][l];
            for (int l = 0; l < 4; l++) S[1][l] = rol64(S[1][l] + S[6][l], 13) ^ S[2][l];
            for (int l = 0; l < 4; l++) S[2][l] = rol64(S[2][l] + S[7][l], 20) ^ S[3][l];
            for (int l = 0; l < 4; l++) S[3][l] = rol64(S[3][l] + S[8][l], 27) ^ S[4][l];
            for (int l = 0; l < 4; l++) S[4][l] = rol64(S[4][l] + S[9][l], 34) ^ S[5][l];
            for (int l = 0; l < 4; l++) S[5][l] = rol64(S[5][l] + S[10][l], 41) ^ S[6][l];
            for (int l = 0; l < 4; l++) S[6][l] = rol64(S[6][l] + S[11][l], 48) ^ S[7][l];
            for (int l = 0; l < 4; l++) S[7][l] = rol64(S[7][l] + S[12][l], 55) ^ S[8][l];
            for (int l = 0; l < 4; l++) S[8][l] = rol64(S[8][l] + S[13][l], 62) ^ S[9][l];
            for (int l = 0; l < 4; l++) S[9][l] = rol64(S[9][l] + S[14][l], 6) ^ S[10][l];
            for (int l = 0; l < 4; l++) S[10][l] = rol64(S[10][l] + S[0][l], 13) ^ S[11][l];
            for (int l = 0; l < 4; l++) S[11][l] = rol64(S[11][l] + S[1][l], 20) ^ S[12][l];
            for (int l = 0; l < 4; l++) S[12][l] = rol64(S[12][l] + S[2][l], 27) ^ S[13][l];
            for (int l = 0; l < 4; l++) S[13][l] = rol64(S[13][l] + S[3][l], 34) ^ S[14][l];
            for (int l = 0; l < 4; l++) S[14][l] = rol64(S[14][l] + S[4][l], 41) ^ S[0][l];
    }
}

int main(void)
{
    suite_init();
    struct vector_isa v = detect_vector_isa();
    if (!v.avx2) {
        result("avx2-ymm0-15-not-available");
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
    result_ck("avx2-ymm0-15", &ck);
    return 0;
}
