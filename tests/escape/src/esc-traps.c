/*
 * Debug traps and software interrupts whose return address the accelerator must get exactly
 * right (issue 11, items 2-4). Each case is a short asm sequence started natively (wait_native
 * just before the call); one SA_SIGINFO handler records every signal it gets as
 * SIG/si_code@+offset, the offset of the interrupted EIP from the case's first label (never an
 * absolute address), and decides how the sequence goes on:
 *
 *   tf-popf        TF set by POPF: the single-step trap must come after exactly the one
 *                  instruction that follows the POPF, then after every further instruction
 *   tf-sigreturn   a UD2 whose SIGILL handler sets TF in the ucontext and steps over the UD2:
 *                  TF comes back through sigreturn (the kernel's IRET)
 *   tf-iret-cs     IRET at CPL 3 to the same code segment, TF in the popped flags; the pushed
 *                  CS is what `mov %cs` reads (natively that is the executor's mirror
 *                  selector, emulated the guest's 0x73: either must work as the CS it is)
 *   tf-iret-73     the same with the guest's USER_CS 0x73 pushed as a constant
 *   int4           CD 04: Linux delivers SIGSEGV (vector 4 is a DPL 3 gate), EIP after the
 *                  two bytes (not rewound as if it were the one-byte INTO)
 *   into, int3, int-3   INTO with OF set (CE), INT3 (CC), CD 03: controls
 *   icebp          a lone ICEBP (F1) after a NOP: control
 *   icebp-after-f1 `mov $0xf1,%al; icebp` (B0 F1 F1): the byte before the ICEBP is 0xF1
 *   icebp-pair     F1 F1: two traps, one after each byte
 *
 * A single-step trap at the case's end label clears TF and the sequence returns; any other
 * signal but SIGTRAP (and the 16th event, so that nothing loops) jumps to the end label with
 * TF clear. Each case runs 4 rounds; the case line gives the first round's events and whether
 * the other rounds saw the same. The output depends only on the instructions and the guest
 * kernel, so plain Bochs (the oracle) and the accelerated run must print the same.
 *
 *   esc-traps
 */
#include "esc.h"

#include <ucontext.h>

#define TF 0x100u
#define MAX_EVENTS 16
#define ROUNDS 4

/* The sequences: each NAME is called at NAME_entry (which saves the stack pointer) and has
 * labels NAME (its start: offsets are from here) and NAME_end (where TF is cleared, the stack
 * pointer restored and the code returns); they clobber only eax, ecx, edx. */
__asm__(".text\n"
        /* TF by POPF */
        ".globl tf_popf_entry, tf_popf, tf_popf_end\n"
        "tf_popf_entry:\n"
        "  movl %esp, seq_esp\n"
        "tf_popf:\n"
        "  pushfl\n"
        "  orl $0x100, (%esp)\n"
        "  popfl\n"
        "  nop\n"
        "  movl $1, %eax\n"
        "  addl $2, %eax\n"
        "  leal 4(%eax), %edx\n"
        "  xchgl %eax, %edx\n"
        "tf_popf_end:\n"
        "  movl seq_esp, %esp\n"
        "  ret\n"
        /* TF by sigreturn: the SIGILL handler of the UD2 sets it */
        ".globl tf_sig_entry, tf_sig, tf_sig_end\n"
        "tf_sig_entry:\n"
        "  movl %esp, seq_esp\n"
        "tf_sig:\n"
        "  ud2\n"
        "  nop\n"
        "  movl $1, %eax\n"
        "  addl $2, %eax\n"
        "tf_sig_end:\n"
        "  movl seq_esp, %esp\n"
        "  ret\n"
        /* TF by IRET, CS as mov %cs reads it */
        ".globl tf_iret_cs_entry, tf_iret_cs, tf_iret_cs_end\n"
        "tf_iret_cs_entry:\n"
        "  movl %esp, seq_esp\n"
        "tf_iret_cs:\n"
        "  pushfl\n"
        "  orl $0x100, (%esp)\n"
        "  movl %cs, %ecx\n"
        "  pushl %ecx\n"
        "  pushl $1f\n"
        "  iret\n"
        "1:nop\n"
        "  movl $1, %eax\n"
        "  addl $2, %eax\n"
        "tf_iret_cs_end:\n"
        "  movl seq_esp, %esp\n"
        "  ret\n"
        /* TF by IRET, CS 0x73 */
        ".globl tf_iret_73_entry, tf_iret_73, tf_iret_73_end\n"
        "tf_iret_73_entry:\n"
        "  movl %esp, seq_esp\n"
        "tf_iret_73:\n"
        "  pushfl\n"
        "  orl $0x100, (%esp)\n"
        "  pushl $0x73\n"
        "  pushl $1f\n"
        "  iret\n"
        "1:nop\n"
        "  movl $1, %eax\n"
        "  addl $2, %eax\n"
        "tf_iret_73_end:\n"
        "  movl seq_esp, %esp\n"
        "  ret\n"
        /* CD 04; the NOPs give a one-byte rewind (04 90 = add $0x90, %al) a harmless path */
        ".globl t_int4_entry, t_int4, t_int4_end\n"
        "t_int4_entry:\n"
        "  movl %esp, seq_esp\n"
        "t_int4:\n"
        "  int $4\n"
        "  nop\n"
        "  nop\n"
        "t_int4_end:\n"
        "  movl seq_esp, %esp\n"
        "  ret\n"
        /* INTO with OF set */
        ".globl t_into_entry, t_into, t_into_end\n"
        "t_into_entry:\n"
        "  movl %esp, seq_esp\n"
        "t_into:\n"
        "  movb $0x7f, %al\n"
        "  addb $1, %al\n"
        "  into\n"
        "  nop\n"
        "t_into_end:\n"
        "  movl seq_esp, %esp\n"
        "  ret\n"
        /* INT3 */
        ".globl t_int3_entry, t_int3, t_int3_end\n"
        "t_int3_entry:\n"
        "  movl %esp, seq_esp\n"
        "t_int3:\n"
        "  int3\n"
        "  nop\n"
        "t_int3_end:\n"
        "  movl seq_esp, %esp\n"
        "  ret\n"
        /* CD 03 */
        ".globl t_intn3_entry, t_intn3, t_intn3_end\n"
        "t_intn3_entry:\n"
        "  movl %esp, seq_esp\n"
        "t_intn3:\n"
        "  .byte 0xcd, 0x03\n"
        "  nop\n"
        "t_intn3_end:\n"
        "  movl seq_esp, %esp\n"
        "  ret\n"
        /* lone ICEBP */
        ".globl t_icebp_entry, t_icebp, t_icebp_end\n"
        "t_icebp_entry:\n"
        "  movl %esp, seq_esp\n"
        "t_icebp:\n"
        "  nop\n"
        "  .byte 0xf1\n"
        "  nop\n"
        "t_icebp_end:\n"
        "  movl seq_esp, %esp\n"
        "  ret\n"
        /* ICEBP after an 0xF1 byte */
        ".globl t_icebp_f1_entry, t_icebp_f1, t_icebp_f1_end\n"
        "t_icebp_f1_entry:\n"
        "  movl %esp, seq_esp\n"
        "t_icebp_f1:\n"
        "  movb $0xf1, %al\n"
        "  .byte 0xf1\n"
        "  nop\n"
        "t_icebp_f1_end:\n"
        "  movl seq_esp, %esp\n"
        "  ret\n"
        /* ICEBP pair */
        ".globl t_icebp_pair_entry, t_icebp_pair, t_icebp_pair_end\n"
        "t_icebp_pair_entry:\n"
        "  movl %esp, seq_esp\n"
        "t_icebp_pair:\n"
        "  .byte 0xf1, 0xf1\n"
        "  nop\n"
        "t_icebp_pair_end:\n"
        "  movl seq_esp, %esp\n"
        "  ret\n");

#define SEQ(n) extern char n##_entry[], n[], n##_end[]
SEQ(tf_popf);
SEQ(tf_sig);
SEQ(tf_iret_cs);
SEQ(tf_iret_73);
SEQ(t_int4);
SEQ(t_into);
SEQ(t_int3);
SEQ(t_intn3);
SEQ(t_icebp);
SEQ(t_icebp_f1);
SEQ(t_icebp_pair);

struct event {
    int sig, code;
    int32_t off;
};

static volatile uint32_t cur_base, cur_end;
uint32_t seq_esp; /* the stack pointer at a sequence's entry, restored at its end label */
static volatile int set_tf_on_ud2;
static struct event events[MAX_EVENTS];
static volatile unsigned n_events;

static void on_signal(int sig, siginfo_t *si, void *ucv)
{
    ucontext_t *uc = ucv;
    greg_t *g = uc->uc_mcontext.gregs;
    uint32_t eip = (uint32_t)g[REG_EIP];
    unsigned n = n_events;
    if (n < MAX_EVENTS) {
        events[n].sig = sig;
        events[n].code = si->si_code;
        events[n].off = (int32_t)(eip - cur_base);
        n_events = n + 1;
    }
    if (sig == SIGILL && set_tf_on_ud2 && eip == cur_base) {
        g[REG_EIP] = (greg_t)(eip + 2); /* over the UD2, and single-step from there */
        g[REG_EFL] |= TF;
        set_tf_on_ud2 = 0;
        return;
    }
    if (sig != SIGTRAP || eip == cur_end || n + 1 >= MAX_EVENTS) {
        g[REG_EIP] = (greg_t)cur_end;
        g[REG_EFL] &= ~(greg_t)TF;
    }
}

static const char *sig_name(int sig)
{
    return sig == SIGSEGV ? "SIGSEGV" : sig == SIGTRAP ? "SIGTRAP" : sig == SIGILL ? "SIGILL"
           : sig == SIGBUS ? "SIGBUS" : sig == SIGFPE ? "SIGFPE" : "SIG?";
}

/* The events of one round as text, e.g. "SIGTRAP/2@+5,SIGTRAP/2@+10". */
static void format_events(char *buf, size_t size)
{
    size_t len = 0;
    buf[0] = 0;
    if (n_events == 0)
        snprintf(buf, size, "none");
    for (unsigned i = 0; i < n_events && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s%s/%d@%+d", i ? "," : "",
                                sig_name(events[i].sig), events[i].code, events[i].off);
}

static void run_case(const char *name, void (*fn)(void), char *base, char *end, int ud2_tf)
{
    char first[512], again[512];
    unsigned differing = 0;
    for (unsigned round = 0; round < ROUNDS; round++) {
        n_events = 0;
        cur_base = (uint32_t)base;
        cur_end = (uint32_t)end;
        set_tf_on_ud2 = ud2_tf;
        if (accel_seen) {
            probes_run++;
            probes_native += wait_native(20000000);
        }
        fn();
        format_events(round ? again : first, sizeof first);
        if (round)
            differing += strcmp(first, again) != 0;
    }
    report(name, "%s rounds-differing=%u", first, differing);
}

int main(void)
{
    esc_init();
    touch_code_pages();
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    int sigs[] = {SIGSEGV, SIGTRAP, SIGILL, SIGBUS, SIGFPE};
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        if (sigaction(sigs[i], &sa, NULL) != 0)
            fail("sigaction");
    /* the handler's data, faulted in before the probes */
    memset(events, 0, sizeof events);

    typedef void (*seq_fn)(void);
#define CASE(name, sym, ud2) run_case(name, (seq_fn)(void *)sym##_entry, sym, sym##_end, ud2)
    CASE("tf-popf", tf_popf, 0);
    CASE("tf-sigreturn", tf_sig, 1);
    CASE("tf-iret-cs", tf_iret_cs, 0);
    CASE("tf-iret-73", tf_iret_73, 0);
    CASE("int4", t_int4, 0);
    CASE("into", t_into, 0);
    CASE("int3", t_int3, 0);
    CASE("int-3", t_intn3, 0);
    CASE("icebp", t_icebp, 0);
    CASE("icebp-after-f1", t_icebp_f1, 0);
    CASE("icebp-pair", t_icebp_pair, 0);
    native_evidence();
    finish();
    return 0;
}
