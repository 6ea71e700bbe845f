/*
 * A guest program with its own LDT (modify_ldt): data segments at LDT indices 1, 6, 14 and
 * 15 (each based on its own buffer) and a flat 32-bit code segment at index 0. Indices 6, 14
 * and 15 are chosen on purpose: the executor mirrors the guest's GDT selectors 0x33, 0x73 and
 * 0x7b at those host LDT indices, so the guest's LDT selectors 0x37, 0x77 and 0x7f are also
 * valid native selectors. Loads into DS/ES/FS read back through the register; code runs
 * through a far call into the LDT code segment (a loop, then LRET).
 *
 *   esc-ldt
 */
#include "esc.h"

#include <asm/ldt.h>
#include <sys/syscall.h>

static uint32_t bufs[16][4];

static void set_entry(unsigned idx, uint32_t base, unsigned limit, int code)
{
    struct user_desc d;
    memset(&d, 0, sizeof d);
    d.entry_number = idx;
    d.base_addr = base;
    d.limit = limit;
    d.seg_32bit = 1;
    d.contents = code ? MODIFY_LDT_CONTENTS_CODE : MODIFY_LDT_CONTENTS_DATA;
    d.read_exec_only = 0;
    d.limit_in_pages = code ? 1 : 0;
    d.useable = 1;
    if (syscall(SYS_modify_ldt, 1, &d, sizeof d) != 0)
        fail("modify_ldt-%u", idx);
}

#define LOAD_AND_READ(sreg)                                                            \
    static void load_##sreg(uint32_t sel)                                              \
    {                                                                                  \
        uint32_t v;                                                                    \
        __asm__ volatile("mov %w1, %%" #sreg "\n\t"                                    \
                         "mov %%" #sreg ":4, %0\n\t"                                   \
                         : "=&r"(v)                                                    \
                         : "r"(sel)                                                    \
                         : "memory");                                                  \
        __asm__ volatile("mov %w0, %%ds\n\tmov %w0, %%es" : : "r"(USER_DS) : "memory"); \
        probe_done(v);                                                                 \
    }
LOAD_AND_READ(ds)
LOAD_AND_READ(es)
LOAD_AND_READ(fs)

/* Reached through the LDT code segment: sums 1..n (n in ecx) and returns far. */
void ldt_code(void);
__asm__(".text\nldt_code:\n"
        "xor %eax, %eax\n"
        "1: add %ecx, %eax\n"
        "loop 1b\n"
        "lret\n");

static struct {
    uint32_t offset;
    uint16_t selector;
} __attribute__((packed)) fp;

static void far_call_ldt(uint32_t n)
{
    uint32_t v;
    __asm__ volatile("lcall *%2" : "=a"(v), "+c"(n) : "m"(fp) : "memory");
    probe_done(v);
}

int main(void)
{
    esc_init();
    static const unsigned data_idx[] = {1, 6, 14, 15};
    for (unsigned i = 0; i < 4; i++) {
        unsigned idx = data_idx[i];
        bufs[idx][0] = 0x1d700000 + idx;
        bufs[idx][1] = 0xbeef0000 + idx;
        set_entry(idx, (uint32_t)(uintptr_t)bufs[idx], sizeof bufs[idx] - 1, 0);
    }
    set_entry(0, 0, 0xfffff, 1);
    fp.offset = (uint32_t)(uintptr_t)ldt_code;
    fp.selector = 0x07; /* LDT index 0, RPL 3 */
    static const struct {
        const char *name;
        void (*fn)(uint32_t);
    } regs[] = {{"ds", load_ds}, {"es", load_es}, {"fs", load_fs}};
    static const uint16_t sels[] = {0x0f, 0x37, 0x77, 0x7f};
    for (unsigned r = 0; r < 3; r++) {
        for (unsigned i = 0; i < 4; i++) {
            char name[32];
            snprintf(name, sizeof name, "%s-%#04x", regs[r].name, sels[i]);
            report(name, "%s", probe(regs[r].fn, sels[i]));
        }
    }
    report("lcall-0x07-sum10", "%s", probe(far_call_ldt, 10));
    report("lcall-0x07-sum200000", "%s", probe(far_call_ldt, 200000));
    native_evidence();
    finish();
    return 0;
}
