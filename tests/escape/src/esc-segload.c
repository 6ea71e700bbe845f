/*
 * Loads of each host GDT selector (RPL 0 and 3) and of the executor's LDT mirror selectors
 * into DS, ES, FS, GS and SS, each followed by a read through the register. Each probe runs
 * in a child: the outcome is the signal the guest gets (load or read), or "ok:<value read>".
 * Under plain Bochs the guest's own GDT decides (Linux i386: 0x33 TLS, 0x73 user CS, 0x7b
 * user DS, kernel segments DPL 0, the rest empty).
 *
 *   esc-segload                 every selector the host cannot load at CPL 3 (compared with
 *                               plain Bochs; the LDT ones fault natively, as in the guest)
 *   esc-segload host SREG SEL   one host GDT selector that CPL 3 can load (host_loadable():
 *                               0x20-0x33) into SREG (ds, es, fs, gs, ss): natively the load
 *                               succeeds, and the accelerated run must stop as a guest escape
 */
#include "esc.h"

#include <termios.h>

static volatile uint32_t probe_word = 0x5eed1234;

#define LOAD_AND_READ(sreg)                                                            \
    static void load_##sreg(uint32_t sel)                                              \
    {                                                                                  \
        uint32_t v;                                                                    \
        __asm__ volatile("mov %w1, %%" #sreg "\n\t"                                    \
                         "mov %%" #sreg ":(%2), %0\n\t"                                \
                         : "=&r"(v)                                                    \
                         : "r"(sel), "r"(&probe_word)                                  \
                         : "memory");                                                  \
        restore();                                                                     \
        probe_done(v);                                                                 \
    }

/* DS, ES, SS back to the user data segment (FS and GS are not used after a probe). */
static inline void restore(void)
{
    __asm__ volatile("mov %w0, %%ss\n\tmov %w0, %%ds\n\tmov %w0, %%es" : : "r"(USER_DS) : "memory");
}

LOAD_AND_READ(ds)
LOAD_AND_READ(es)
LOAD_AND_READ(fs)
LOAD_AND_READ(gs)
LOAD_AND_READ(ss)

static const uint16_t selectors[] = {
    0x08, 0x0b, 0x10, 0x13, 0x18, 0x1b, 0x20, 0x23, 0x28, 0x2b, 0x30, 0x33, 0x38, 0x3b,
    0x40, 0x43, 0x48, 0x4b, 0x50, 0x53, 0x58, 0x5b, 0x60, 0x63, 0x68, 0x6b,
    0x70, 0x73, 0x78, 0x7b, 0x37, 0x77, 0x7f,
};

int main(int argc, char **argv)
{
    esc_init();
    static const struct {
        const char *name;
        void (*fn)(uint32_t);
    } regs[] = {{"ds", load_ds}, {"es", load_es}, {"fs", load_fs}, {"gs", load_gs}, {"ss", load_ss}};
    if (argc == 4 && strcmp(argv[1], "host") == 0) {
        uint32_t sel = (uint32_t)strtoul(argv[3], NULL, 0);
        for (unsigned r = 0; r < 5; r++) {
            if (strcmp(argv[2], regs[r].name) != 0)
                continue;
            if (!host_loadable(sel))
                fail("not-a-host-loadable-selector-%#x", sel);
            native_evidence();
            tcdrain(1); /* the console has everything before an accelerated run stops */
            report(argv[2], "%s", probe_natively(regs[r].fn, sel));
            finish();
            return 0;
        }
        fail("unknown-register-%s", argv[2]);
    }
    if (argc != 1)
        fail("usage: esc-segload | esc-segload host ds|es|fs|gs|ss SELECTOR");
    for (unsigned r = 0; r < 5; r++) {
        for (unsigned i = 0; i < sizeof selectors / sizeof selectors[0]; i++) {
            if (host_loadable(selectors[i]))
                continue; /* the "host" mode, one boot each */
            char name[32];
            snprintf(name, sizeof name, "%s-%#04x", regs[r].name, selectors[i]);
            report(name, "%s", probe(regs[r].fn, selectors[i]));
        }
    }
    native_evidence();
    finish();
    return 0;
}
