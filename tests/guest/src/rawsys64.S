/*
 * Raw system call entry paths for the x86-64 guest suite (the 64-bit twin
 * of rawsys.S; tests/guest/Makefile ARCH=amd64 builds syscalls with it).
 *
 *   long raw_syscall64(const long *args);   syscall, the x86-64 ABI
 *   long raw_int80(const long *args);       int $0x80 from 64-bit code: the
 *                                           i386 (compat) ABI and numbers
 *
 * raw_syscall64: args[0] = number, args[1..6] = rdi rsi rdx r10 r8 r9.
 * raw_int80:     args[0] = i386 number, args[1..6] = ebx ecx edx esi edi ebp
 *                (only the low 32 bits reach the kernel).
 */
        .text

        .globl  raw_syscall64
        .type   raw_syscall64, @function
raw_syscall64:
        movq    %rdi, %r11
        movq    (%r11), %rax
        movq    8(%r11), %rdi
        movq    16(%r11), %rsi
        movq    24(%r11), %rdx
        movq    32(%r11), %r10
        movq    40(%r11), %r8
        movq    48(%r11), %r9
        syscall                 /* clobbers rcx and r11 (caller-saved) */
        ret
        .size   raw_syscall64, .-raw_syscall64

        .globl  raw_int80
        .type   raw_int80, @function
raw_int80:
        pushq   %rbx
        pushq   %rbp
        movq    %rdi, %rax
        movq    8(%rax), %rbx
        movq    16(%rax), %rcx
        movq    24(%rax), %rdx
        movq    32(%rax), %rsi
        movq    48(%rax), %rbp
        movq    40(%rax), %rdi
        movq    (%rax), %rax
        int     $0x80
        popq    %rbp
        popq    %rbx
        ret
        .size   raw_int80, .-raw_int80

        .section .note.GNU-stack,"",@progbits
