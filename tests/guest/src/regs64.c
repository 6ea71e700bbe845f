/*
 * regs64: pressure on all sixteen 64-bit general registers (x86-64 only).
 *
 * One asm loop keeps 15 values live in rax..rbp and r8-r15 (the 16th, rsp,
 * holds the loop counter and the state pointer on the stack) and mixes them
 * (add, rotate, xor) for many iterations; every 64th iteration executes int3,
 * whose SIGTRAP handler returns without touching anything, so each register
 * must survive a signal frame (and preemption meanwhile).  The state must
 * equal a C reference bit for bit.  Then a SIGTRAP handler edits r8-r15 in
 * the interrupted context (uc_mcontext) and the edited values must arrive.
 * A fork() child repeats the loop and reports its state through a pipe.
 */
#include "common.h"
#include <signal.h>
#include <sys/wait.h>
#include <ucontext.h>

#if !defined(__x86_64__)
#error "regs64 is an x86-64 program"
#endif

#define NREG 15
#define ITERS 4096

static inline uint64_t rol64(uint64_t v, unsigned r) { return (v << r) | (v >> (64 - r)); }

static volatile int traps, edit_mode;
static void on_trap(int sig, siginfo_t *si, void *ucv)
{
    (void)sig; (void)si;
    ucontext_t *uc = ucv;
    traps++;
    if (edit_mode) {
        static const int rr[8] = { REG_R8, REG_R9, REG_R10, REG_R11, REG_R12, REG_R13, REG_R14, REG_R15 };
        for (int i = 0; i < 8; i++)
            uc->uc_mcontext.gregs[rr[i]] ^= (greg_t)(0x0101010101010101ULL * (uint64_t)(i + 1));
    }
}

static void run_asm(uint64_t *st)
{
    __asm__ volatile(
        "pushq %%rbp\n\t pushq %%rbx\n\t pushq %%rdi\n\t pushq $" "4096" "\n\t"
        "movq 0(%%rdi), %%rax\n\t"
        "movq 8(%%rdi), %%rbx\n\t"
        "movq 16(%%rdi), %%rcx\n\t"
        "movq 24(%%rdi), %%rdx\n\t"
        "movq 32(%%rdi), %%rsi\n\t"
        "movq 48(%%rdi), %%rbp\n\t"
        "movq 56(%%rdi), %%r8\n\t"
        "movq 64(%%rdi), %%r9\n\t"
        "movq 72(%%rdi), %%r10\n\t"
        "movq 80(%%rdi), %%r11\n\t"
        "movq 88(%%rdi), %%r12\n\t"
        "movq 96(%%rdi), %%r13\n\t"
        "movq 104(%%rdi), %%r14\n\t"
        "movq 112(%%rdi), %%r15\n\t"
        "movq 40(%%rdi), %%rdi\n\t"
        "1:\n\t"
        "addq %%r8, %%rax\n\t rolq $3, %%rax\n\t xorq %%rbx, %%rax\n\t"
        "addq %%r9, %%rbx\n\t rolq $8, %%rbx\n\t xorq %%rcx, %%rbx\n\t"
        "addq %%r10, %%rcx\n\t rolq $13, %%rcx\n\t xorq %%rdx, %%rcx\n\t"
        "addq %%r11, %%rdx\n\t rolq $18, %%rdx\n\t xorq %%rsi, %%rdx\n\t"
        "addq %%r12, %%rsi\n\t rolq $23, %%rsi\n\t xorq %%rdi, %%rsi\n\t"
        "addq %%r13, %%rdi\n\t rolq $28, %%rdi\n\t xorq %%rbp, %%rdi\n\t"
        "addq %%r14, %%rbp\n\t rolq $33, %%rbp\n\t xorq %%r8, %%rbp\n\t"
        "addq %%r15, %%r8\n\t rolq $38, %%r8\n\t xorq %%r9, %%r8\n\t"
        "addq %%rax, %%r9\n\t rolq $43, %%r9\n\t xorq %%r10, %%r9\n\t"
        "addq %%rbx, %%r10\n\t rolq $48, %%r10\n\t xorq %%r11, %%r10\n\t"
        "addq %%rcx, %%r11\n\t rolq $53, %%r11\n\t xorq %%r12, %%r11\n\t"
        "addq %%rdx, %%r12\n\t rolq $58, %%r12\n\t xorq %%r13, %%r12\n\t"
        "addq %%rsi, %%r13\n\t rolq $63, %%r13\n\t xorq %%r14, %%r13\n\t"
        "addq %%rdi, %%r14\n\t rolq $4, %%r14\n\t xorq %%r15, %%r14\n\t"
        "addq %%rbp, %%r15\n\t rolq $9, %%r15\n\t xorq %%rax, %%r15\n\t"
        "testq $63, (%%rsp)\n\t jnz 2f\n\t int3\n"
        "2:\n\t decq (%%rsp)\n\t jnz 1b\n\t"
        "xchgq %%rax, 8(%%rsp)\n\t"
        "movq %%rbx, 8(%%rax)\n\t"
        "movq %%rcx, 16(%%rax)\n\t"
        "movq %%rdx, 24(%%rax)\n\t"
        "movq %%rsi, 32(%%rax)\n\t"
        "movq %%rdi, 40(%%rax)\n\t"
        "movq %%rbp, 48(%%rax)\n\t"
        "movq %%r8, 56(%%rax)\n\t"
        "movq %%r9, 64(%%rax)\n\t"
        "movq %%r10, 72(%%rax)\n\t"
        "movq %%r11, 80(%%rax)\n\t"
        "movq %%r12, 88(%%rax)\n\t"
        "movq %%r13, 96(%%rax)\n\t"
        "movq %%r14, 104(%%rax)\n\t"
        "movq %%r15, 112(%%rax)\n\t"
        "movq 8(%%rsp), %%rbx\n\t movq %%rbx, 0(%%rax)\n\t"
        "addq $16, %%rsp\n\t popq %%rbx\n\t popq %%rbp"
        : "+D"(st)
        :
        : "rax", "rcx", "rdx", "rsi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
          "memory", "cc");
}

static void run_ref(uint64_t *R)
{
    for (int it = 0; it < ITERS; it++) {
        R[0] = rol64(R[0] + R[7], 3) ^ R[1];
        R[1] = rol64(R[1] + R[8], 8) ^ R[2];
        R[2] = rol64(R[2] + R[9], 13) ^ R[3];
        R[3] = rol64(R[3] + R[10], 18) ^ R[4];
        R[4] = rol64(R[4] + R[11], 23) ^ R[5];
        R[5] = rol64(R[5] + R[12], 28) ^ R[6];
        R[6] = rol64(R[6] + R[13], 33) ^ R[7];
        R[7] = rol64(R[7] + R[14], 38) ^ R[8];
        R[8] = rol64(R[8] + R[0], 43) ^ R[9];
        R[9] = rol64(R[9] + R[1], 48) ^ R[10];
        R[10] = rol64(R[10] + R[2], 53) ^ R[11];
        R[11] = rol64(R[11] + R[3], 58) ^ R[12];
        R[12] = rol64(R[12] + R[4], 63) ^ R[13];
        R[13] = rol64(R[13] + R[5], 4) ^ R[14];
        R[14] = rol64(R[14] + R[6], 9) ^ R[0];
    }
}

static void seed(uint64_t *st, uint64_t s)
{
    for (int i = 0; i < NREG; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        st[i] = s ^ (s >> 29);
    }
}

int main(void)
{
    suite_init();
    ck_t ck;
    ck_init(&ck);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_trap;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGTRAP, &sa, NULL);

    for (int round = 0; round < 8; round++) {
        uint64_t a[NREG], b[NREG];
        seed(a, (uint64_t)round * 0x9e3779b97f4a7c15ULL + 1);
        memcpy(b, a, sizeof a);
        traps = 0;
        run_asm(a);
        run_ref(b);
        CHECK(traps == ITERS / 64, "traps-%d", traps);
        for (int i = 0; i < NREG; i++)
            CHECK(a[i] == b[i], "round%d-reg%d", round, i);
        ck_bytes(&ck, a, sizeof a);
    }

    /* the handler edits r8-r15 of the interrupted context */
    edit_mode = 1;
    for (int round = 0; round < 4; round++) {
        uint64_t in[8], out[8];
        for (int i = 0; i < 8; i++) in[i] = 0x1000000000000001ULL * (uint64_t)(round * 8 + i + 1);
        __asm__ volatile(
            "movq 0(%[p]), %%r8\n\t movq 8(%[p]), %%r9\n\t movq 16(%[p]), %%r10\n\t"
            "movq 24(%[p]), %%r11\n\t movq 32(%[p]), %%r12\n\t movq 40(%[p]), %%r13\n\t"
            "movq 48(%[p]), %%r14\n\t movq 56(%[p]), %%r15\n\t int3\n\t"
            "movq %%r8, 0(%[q])\n\t movq %%r9, 8(%[q])\n\t movq %%r10, 16(%[q])\n\t"
            "movq %%r11, 24(%[q])\n\t movq %%r12, 32(%[q])\n\t movq %%r13, 40(%[q])\n\t"
            "movq %%r14, 48(%[q])\n\t movq %%r15, 56(%[q])"
            : : [p] "r"(in), [q] "r"(out)
            : "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "memory");
        for (int i = 0; i < 8; i++)
            CHECK(out[i] == (in[i] ^ (0x0101010101010101ULL * (uint64_t)(i + 1))), "edit-r%d", 8 + i);
        ck_bytes(&ck, out, sizeof out);
    }
    edit_mode = 0;

    /* a forked child runs the loop too and sends its state back */
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe");
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        uint64_t a[NREG];
        seed(a, 77);
        run_asm(a);
        _exit(write(fds[1], a, sizeof a) == (ssize_t)sizeof a ? 0 : 1);
    }
    uint64_t a[NREG], b[NREG];
    CHECK(read(fds[0], a, sizeof a) == (ssize_t)sizeof a, "child-read");
    int st;
    CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "child-status");
    seed(b, 77);
    run_ref(b);
    CHECK(memcmp(a, b, sizeof a) == 0, "child-state");
    ck_bytes(&ck, a, sizeof a);
    result_ck("regs64", &ck);
    return 0;
}
