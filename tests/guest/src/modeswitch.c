/*
 * modeswitch: a 64-bit process that switches to compatibility mode and back by itself
 * (x86-64 only).  Linux gives 64-bit processes two user code selectors, 0x33 (64-bit) and
 * 0x23 (32-bit), in the host's GDT and in a Debian amd64 guest's alike; programs such as
 * Wine and CRIU far-transfer between them.
 *
 * Each round: 64-bit code loads DS/ES with 0x2b, moves to a stack below 4 GiB and far-returns
 * (lretq) to 32-bit code at 0x23.  That code runs a checksum loop writing a buffer page it
 * has not touched before (a page fault taken in compatibility mode), in some rounds makes
 * int $0x80 getpid (i386 number 20), and far-returns (lret) to 64-bit code at 0x33, which
 * records R8..R15 and XMM8..XMM15: 32-bit code cannot reach them, so they keep the values
 * 64-bit code set (but R8..R15 after int $0x80, whose kernel entry clears them: those rounds
 * leave them out).  The result is the checksums, R8..R15 and whether int $0x80 returned the
 * process's pid.
 */
#include "common.h"
#include <sys/mman.h>

#if !defined(__x86_64__)
#error "modeswitch is an x86-64 program"
#endif

#define ROUNDS 96
#define PAGE 4096

/* out[0..7] R8..R15 after the round trip, out[8] the checksum (EAX), out[9] EDX (getpid's
 * result when asked for, else 0), out[10..17] XMM8..XMM15's low halves. */
uint64_t roundtrip(uint32_t seed, uint32_t iters, uint32_t buf, uint32_t stack_top,
                   uint64_t *out, uint32_t getpid32);

/* 64-bit entry (System V: edi seed, esi iters, edx buf, ecx stack top, r8 out, r9d getpid).
 * The 32-bit code and the 64-bit landing lie in this static (non-PIE) binary's text, below
 * 4 GiB, where a 32-bit far pointer reaches them. */
__asm__(
    ".text\n"
    ".globl roundtrip\n"
    "roundtrip:\n"
    "  push %rbx\n push %rbp\n push %r12\n push %r13\n push %r14\n push %r15\n"
    "  mov %rsp, saved_rsp(%rip)\n"
    "  mov %r8, saved_out(%rip)\n"
    "  mov %r9d, %ebp\n"            /* getpid flag, zero-extended */
    "  mov %edi, %eax\n"            /* seed */
    "  mov %ecx, %ecx\n"            /* stack top, zero-extended */
    "  mov %rcx, %r11\n"
    "  mov %esi, %ecx\n"            /* iterations */
    "  mov %edx, %esi\n"            /* buffer */
    "  xor %ebx, %ebx\n xor %edx, %edx\n xor %edi, %edi\n"
    "  mov $0x2b, %r8d\n mov %r8d, %ds\n mov %r8d, %es\n"
    "  lea -24(%r11), %rsp\n"
    "  movq $compat_code, 0(%rsp)\n"
    "  movq $0x23, 8(%rsp)\n"
    "  movl $back64, 16(%rsp)\n"    /* the 32-bit lret's frame: EIP, CS */
    "  movl $0x33, 20(%rsp)\n"
    "  movabs $0x0102030405060708, %r8\n"
    "  movabs $0x1112131415161718, %r9\n"
    "  movabs $0x2122232425262728, %r10\n"
    "  movabs $0x3132333435363738, %r11\n"
    "  movabs $0x4142434445464748, %r12\n"
    "  movabs $0x5152535455565758, %r13\n"
    "  movabs $0x6162636465666768, %r14\n"
    "  movabs $0x7172737475767778, %r15\n"
    "  movq %r8, %xmm8\n movq %r9, %xmm9\n movq %r10, %xmm10\n movq %r11, %xmm11\n"
    "  movq %r12, %xmm12\n movq %r13, %xmm13\n movq %r14, %xmm14\n movq %r15, %xmm15\n"
    "  lretq\n"
    ".code32\n"
    "compat_code:\n"
    "1: imul $0x9e3779b1, %eax, %eax\n"
    "  add %ecx, %eax\n"
    "  mov %ecx, %edx\n"
    "  and $0x3fc, %edx\n"
    "  xor %eax, (%esi,%edx)\n"
    "  rol $5, %eax\n"
    "  add (%esi,%edx), %eax\n"
    "  dec %ecx\n"
    "  jnz 1b\n"
    "  xor %edx, %edx\n"
    "  test %ebp, %ebp\n"
    "  jz 2f\n"
    "  mov %eax, %ebx\n"
    "  mov $20, %eax\n"             /* i386 getpid */
    "  int $0x80\n"
    "  mov %eax, %edx\n"
    "  mov %ebx, %eax\n"
    "2: lret\n"
    ".code64\n"
    "back64:\n"
    "  mov saved_rsp(%rip), %rsp\n"
    "  mov saved_out(%rip), %rbx\n"
    "  mov %r8, 0(%rbx)\n mov %r9, 8(%rbx)\n mov %r10, 16(%rbx)\n mov %r11, 24(%rbx)\n"
    "  mov %r12, 32(%rbx)\n mov %r13, 40(%rbx)\n mov %r14, 48(%rbx)\n mov %r15, 56(%rbx)\n"
    "  mov %rax, 64(%rbx)\n mov %rdx, 72(%rbx)\n"
    "  movq %xmm8, 80(%rbx)\n movq %xmm9, 88(%rbx)\n movq %xmm10, 96(%rbx)\n"
    "  movq %xmm11, 104(%rbx)\n movq %xmm12, 112(%rbx)\n movq %xmm13, 120(%rbx)\n"
    "  movq %xmm14, 128(%rbx)\n movq %xmm15, 136(%rbx)\n"
    "  xor %ecx, %ecx\n mov %ecx, %ds\n mov %ecx, %es\n"
    "  pop %r15\n pop %r14\n pop %r13\n pop %r12\n pop %rbp\n pop %rbx\n"
    "  ret\n"
    ".data\n"
    "saved_rsp: .quad 0\n"
    "saved_out: .quad 0\n"
    ".text\n");

static const uint64_t R8_15[8] = {
    0x0102030405060708, 0x1112131415161718, 0x2122232425262728, 0x3132333435363738,
    0x4142434445464748, 0x5152535455565758, 0x6162636465666768, 0x7172737475767778,
};

int main(void)
{
    uint8_t *stack = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
    uint8_t *buf = mmap(NULL, ROUNDS * PAGE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
    if (stack == MAP_FAILED || buf == MAP_FAILED) {
        printf("result: FAIL-mmap\n");
        return 1;
    }
    uint32_t pid = (uint32_t)getpid();
    uint64_t sum = 0;
    int regs_kept = 0, xmm_kept = 0, pid_ok = 0, calls = 0;
    for (uint32_t r = 0; r < ROUNDS; r++) {
        uint64_t out[18];
        uint32_t with_call = r % 3 == 0;
        /* short rounds switch back within one native run, long ones outlast a budget */
        uint32_t iters = (r % 8 == 7) ? 400000 : 200 + r * 37;
        roundtrip(0x1234567u + r, iters, (uint32_t)(uintptr_t)(buf + r * PAGE),
                  (uint32_t)(uintptr_t)(stack + 4 * PAGE), out, with_call);
        sum = sum * 1000003 + (uint32_t)out[8];
        if (with_call) {
            calls++;
            pid_ok += (uint32_t)out[9] == pid;
        } else {
            regs_kept += memcmp(out, R8_15, sizeof(R8_15)) == 0;
        }
        xmm_kept += memcmp(out + 10, R8_15, sizeof(R8_15)) == 0;
        for (int i = 0; i < 8 && !with_call; i++)
            sum = sum * 31 + out[i];
    }
    uint64_t touched = 0;
    for (uint32_t r = 0; r < ROUNDS; r++)
        for (uint32_t o = 0; o < 1024; o += 4)
            touched = touched * 33 + *(uint32_t *)(buf + r * PAGE + o);
    printf("info: %d rounds, %d with int $0x80 (pid right in %d), R8..R15 kept in %d, "
           "XMM8..XMM15 in %d\n", ROUNDS, calls, pid_ok, regs_kept, xmm_kept);
    if (pid_ok != calls || regs_kept != ROUNDS - calls || xmm_kept != ROUNDS) {
        printf("result: FAIL-pid%d-regs%d-xmm%d\n", pid_ok, regs_kept, xmm_kept);
        return 1;
    }
    printf("result: %016llx-%016llx\n", (unsigned long long)sum, (unsigned long long)touched);
    return 0;
}
