/*
 * Raw system call entry paths for the i386 guest suite.
 *
 *   long raw_int80(const long *args);               int $0x80
 *   long raw_vsyscall(const long *args, void *fn);  call __kernel_vsyscall
 *   long raw_sysenter(const long *args);            sysenter, vDSO frame
 *   long raw_syscall(const long *args);             syscall, vDSO frame
 *
 * args[0] = system call number, args[1..6] = ebx ecx edx esi edi ebp.
 *
 * SYSENTER and SYSCALL do not save a return address the kernel can use:
 * Linux always returns from its fast-syscall path to the landing pad in
 * the vDSO's __kernel_vsyscall (after its "int $0x80"), which executes
 * "pop %ebp; pop %edx; pop %ecx; ret".  So we build exactly the frame
 * __kernel_vsyscall builds: return address, ecx, edx, ebp (= 6th
 * argument, which the kernel fetches from the user stack), and for
 * SYSENTER ebp = esp, for SYSCALL ebp = ecx (ecx is clobbered by the
 * instruction).  Where the instruction is not available (#UD) the
 * process gets SIGILL and the C side recovers with siglongjmp.
 */
        .text

        .macro LOADARGS off
        movl    \off(%esp), %eax
        movl    4(%eax), %ebx
        movl    8(%eax), %ecx
        movl    12(%eax), %edx
        movl    16(%eax), %esi
        movl    20(%eax), %edi
        movl    24(%eax), %ebp
        movl    (%eax), %eax
        .endm

        .macro SAVE
        pushl   %ebp
        pushl   %ebx
        pushl   %esi
        pushl   %edi
        .endm

        .macro RESTORE
        popl    %edi
        popl    %esi
        popl    %ebx
        popl    %ebp
        .endm

        .globl  raw_int80
        .type   raw_int80, @function
raw_int80:
        SAVE
        LOADARGS 20
        int     $0x80
        RESTORE
        ret
        .size   raw_int80, .-raw_int80

        .globl  raw_vsyscall
        .type   raw_vsyscall, @function
raw_vsyscall:
        SAVE
        LOADARGS 20
        call    *24(%esp)
        RESTORE
        ret
        .size   raw_vsyscall, .-raw_vsyscall

        .globl  raw_sysenter
        .type   raw_sysenter, @function
raw_sysenter:
        SAVE
        LOADARGS 20
        call    1f              /* pushes the address of "jmp 2f" */
        jmp     2f
1:      pushl   %ecx
        pushl   %edx
        pushl   %ebp
        movl    %esp, %ebp
        sysenter
        ud2                     /* not reached: the kernel returns via the vDSO */
2:      RESTORE
        ret
        .size   raw_sysenter, .-raw_sysenter

        .globl  raw_syscall
        .type   raw_syscall, @function
raw_syscall:
        SAVE
        LOADARGS 20
        call    1f
        jmp     2f
1:      pushl   %ecx
        pushl   %edx
        pushl   %ebp
        movl    %ecx, %ebp
        syscall
        ud2
2:      RESTORE
        ret
        .size   raw_syscall, .-raw_syscall

        .section .note.GNU-stack,"",@progbits
