/*
 * Far jumps and far calls to each selector of the host's GDT (x86-64 Linux: 0x08 kernel CS32,
 * 0x10 kernel CS, 0x18 kernel DS, 0x23 user CS32, 0x2b user DS, 0x33 user CS (64-bit), 0x40
 * TSS, 0x50 LDT, 0x63/0x6b/0x73 TLS, 0x7b CPU number), with RPL 0 and 3, and to the
 * executor's LDT mirror selectors (0x37, 0x77, 0x7f). Each probe runs in a child; the
 * outcome is the signal the guest gets, or "ok:0xa1" when the transfer reached its target.
 *
 *   esc-far all              every selector the host cannot load as CS at CPL 3 (not
 *                            host_loadable(): 0x20/0x23 are its 32-bit user CS, 0x33 its
 *                            64-bit one)
 *   esc-far jmp32            ljmp to 0x23: natively it lands in the host's flat 32-bit code
 *                            segment; the accelerated run must stop as a guest escape
 *   esc-far jmp64 CANARY     ljmp to 0x33 where the target is 64-bit code making the host's
 *   esc-far call64 CANARY    x86-64 open/creat/mkdir/openat system call on a canary path
 *   esc-far ret64 CANARY     (lcall, lret and iret variants). Under plain Bochs 0x33 is the
 *   esc-far iret64 CANARY    guest's TLS data segment: SIGSEGV. Natively it is 64-bit mode:
 *                            the run must stop with a "guest escape" error.
 */
#include "esc.h"

#include <fcntl.h>
#include <termios.h>

struct farptr {
    uint32_t offset;
    uint16_t selector;
} __attribute__((packed));

/* Target of successful transfers: reached with whatever CS the transfer loaded (flat base
 * in every case that succeeds), it reports and ends the child. */
static void __attribute__((used, noreturn)) arrived(void)
{
    probe_done(0xa1);
}

/* The far pointer of the next probe, set by the parent before the fork. */
static struct farptr fp;

static void far_jmp(uint32_t unused)
{
    (void)unused;
    __asm__ volatile("ljmp *%0" : : "m"(fp) : "memory");
}

static void far_call(uint32_t unused)
{
    (void)unused;
    __asm__ volatile("lcall *%0" : : "m"(fp) : "memory");
}

/* 64-bit code. Every instruction used here encodes the same in 32-bit and 64-bit mode (mov
 * r32, imm32 zero-extends into the 64-bit register), so it is assembled as 32-bit code. */
#define STUB64(name, nr, a0, a1, a2)                                                   \
    __asm__(".text\n.globl " #name "\n" #name ":\n"                                     \
            "mov $" #nr ", %eax\n"                                                      \
            "mov $" a0 ", %edi\n"                                                       \
            "mov $" a1 ", %esi\n"                                                       \
            "mov $" a2 ", %edx\n"                                                       \
            "syscall\n"                                                                 \
            "1: jmp 1b\n");

static char canary[600];
#define O_CW_STR "0x41" /* O_CREAT | O_WRONLY */
STUB64(stub64_open, 2, "canary", O_CW_STR, "0644")
STUB64(stub64_creat, 85, "canary", "0644", "0")
STUB64(stub64_mkdir, 83, "canary", "0755", "0")
STUB64(stub64_openat, 257, "0xffffff9c", "canary", O_CW_STR) /* AT_FDCWD; mode in r10 unset */
void stub64_open(void), stub64_creat(void), stub64_mkdir(void), stub64_openat(void);

static void jmp64(uint32_t unused)
{
    (void)unused;
    __asm__ volatile("ljmp *%0" : : "m"(fp) : "memory");
}

static void call64(uint32_t unused)
{
    (void)unused;
    __asm__ volatile("lcall *%0" : : "m"(fp) : "memory");
}

static void ret64(uint32_t unused)
{
    (void)unused;
    __asm__ volatile("pushl $0x33\n\tpushl %0\n\tlret" : : "r"(stub64_mkdir) : "memory");
}

static void iret64(uint32_t unused)
{
    (void)unused;
    /* iret pops EIP, CS, EFLAGS */
    __asm__ volatile("pushfl\n\tpushl $0x33\n\tpushl %0\n\tiret" : : "r"(stub64_openat) : "memory");
}

static const uint16_t selectors[] = {
    0x08, 0x0b, 0x10, 0x13, 0x18, 0x1b, 0x20, 0x23, 0x28, 0x2b, 0x38, 0x3b,
    0x40, 0x43, 0x48, 0x4b, 0x50, 0x53, 0x58, 0x5b, 0x60, 0x63, 0x68, 0x6b,
    0x70, 0x73, 0x78, 0x7b, 0x37, 0x77, 0x7f,
};

int main(int argc, char **argv)
{
    esc_init();
    if (argc == 2 && strcmp(argv[1], "all") == 0) {
        for (unsigned i = 0; i < sizeof selectors / sizeof selectors[0]; i++) {
            char name[32];
            fp.offset = (uint32_t)(uintptr_t)arrived;
            fp.selector = selectors[i];
            for (int call = 0; call < 2; call++) {
                snprintf(name, sizeof name, "%s-%#04x", call ? "lcall" : "ljmp", selectors[i]);
                if (host_loadable(selectors[i]))
                    continue; /* 0x20/0x23: the host's 32-bit user CS ("jmp32") */
                report(name, "%s", probe(call ? far_call : far_jmp, selectors[i]));
            }
        }
        native_evidence();
        finish();
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "jmp32") == 0) {
        fp.offset = (uint32_t)(uintptr_t)arrived;
        fp.selector = 0x23;
        native_evidence();
        tcdrain(1); /* the console has everything before an accelerated run stops */
        report("ljmp-0x23", "%s", probe_natively(far_jmp, 0));
        finish();
        return 0;
    }
    if (argc != 3 || argv[2][0] != '/')
        fail("usage: esc-far all | esc-far jmp64|call64|ret64|iret64 /ABSOLUTE/CANARY-DIR");
    void (*fn)(uint32_t) = strcmp(argv[1], "jmp64") == 0    ? jmp64
                           : strcmp(argv[1], "call64") == 0 ? call64
                           : strcmp(argv[1], "ret64") == 0  ? ret64
                           : strcmp(argv[1], "iret64") == 0 ? iret64
                                                            : NULL;
    if (!fn)
        fail("unknown-mode-%s", argv[1]);
    snprintf(canary, sizeof canary, "%s/canary-%s", argv[2], argv[1]);
    fp.selector = 0x33;
    fp.offset = (uint32_t)(uintptr_t)(fn == jmp64 ? stub64_open : stub64_creat);
    native_evidence();
    tcdrain(1); /* the console has everything before an accelerated run stops */
    report(argv[1], "%s", probe_natively(fn, 0));
    finish();
    return 0;
}
