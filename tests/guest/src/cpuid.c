/*
 * cpuid: CPUID leaves 0 and 1 are stable and sane.
 *
 * The result line only says that repeated calls return the same values
 * (leaf 1 EBX[31:24], the initial APIC id, is masked), that the maximum
 * basic leaf is >= 1, that the vendor string is printable, and that the
 * features every CPU of interest has (FPU TSC CX8 CMOV MMX FXSR SSE
 * SSE2) are present.  Everything CPU-specific goes to "cpu:" lines.
 */
#define _GNU_SOURCE
#include "common.h"
#include <ctype.h>
#include <sched.h>
#include <cpuid.h>

static void cpuid2(unsigned leaf, unsigned sub, unsigned r[4])
{
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}

int main(void)
{
    suite_init();
    pin_to_current_cpu();
    unsigned l0[4], l1[4], r[4];
    cpuid2(0, 0, l0);
    cpuid2(1, 0, l1);
    for (int i = 0; i < 1000; i++) {
        cpuid2(0, 0, r);
        if (memcmp(r, l0, sizeof r)) fail("leaf0-changed");
        cpuid2(1, 0, r);
        if (r[0] != l1[0] || (r[1] & 0x00ffffff) != (l1[1] & 0x00ffffff) ||
            r[2] != l1[2] || r[3] != l1[3])
            fail("leaf1-changed");
    }
    unsigned max = l0[0];
    if (max < 1) fail("max-leaf-%u", max);
    char vendor[13];
    memcpy(vendor, &l0[1], 4);
    memcpy(vendor + 4, &l0[3], 4);
    memcpy(vendor + 8, &l0[2], 4);
    vendor[12] = 0;
    for (int i = 0; i < 12; i++)
        if (!isprint((unsigned char)vendor[i])) fail("vendor-not-printable");
    static const struct { int bit; const char *name; } base[] = {
        { 0, "fpu" }, { 4, "tsc" }, { 8, "cx8" }, { 15, "cmov" }, { 23, "mmx" },
        { 24, "fxsr" }, { 25, "sse" }, { 26, "sse2" },
    };
    for (unsigned i = 0; i < sizeof base / sizeof base[0]; i++)
        if (!((l1[3] >> base[i].bit) & 1)) fail("missing-%s", base[i].name);

    unsigned fam = (l1[0] >> 8) & 0xf, model = (l1[0] >> 4) & 0xf, step = l1[0] & 0xf;
    if (fam == 0xf) fam += (l1[0] >> 20) & 0xff;
    if (fam == 0x6 || fam >= 0xf) model |= ((l1[0] >> 16) & 0xf) << 4;
    cpu_line("vendor", "%s", vendor);
    cpu_line("max_leaf", "0x%x", max);
    cpu_line("family", "0x%x", fam);
    cpu_line("model", "0x%x", model);
    cpu_line("stepping", "%u", step);
    cpu_line("leaf1", "eax=%08x,ecx=%08x,edx=%08x", l1[0], l1[2], l1[3]);
    cpu_line("hypervisor", "%s", (l1[2] >> 31) & 1 ? "yes" : "no");
    if (max >= 7) {
        cpuid2(7, 0, r);
        cpu_line("leaf7", "ebx=%08x,ecx=%08x,edx=%08x", r[1], r[2], r[3]);
    }
    cpuid2(0x80000000, 0, r);
    unsigned emax = r[0];
    cpu_line("ext_max_leaf", "0x%x", emax);
    if (emax >= 0x80000004) {
        char brand[49];
        for (unsigned k = 0; k < 3; k++) {
            cpuid2(0x80000002 + k, 0, r);
            memcpy(brand + 16 * k, r, 16);
        }
        brand[48] = 0;
        char *s = brand;
        while (*s == ' ') s++;
        for (char *q = s; *q; q++)
            if (!isgraph((unsigned char)*q)) *q = '_';
        size_t n = strlen(s);
        while (n && s[n - 1] == '_') s[--n] = 0;
        cpu_line("brand", "%s", s);
    }
    result("cpuid-consistent");
    return 0;
}
