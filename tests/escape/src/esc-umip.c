/*
 * SGDT, SIDT, SMSW (register and memory forms), STR and SLDT at CPL 3. With UMIP the guest
 * kernel decides what a user program sees (Linux emulates them with dummy values); natively
 * the host kernel answers instead. Whether each instruction faults is compared (case lines);
 * the values themselves are cpu: lines, documented in docs/ARCHITECTURE.md ("What leaks").
 *
 *   esc-umip
 */
#include "esc.h"

/* Ends the probe with the limit (part 0) or the base (part 1) of an SGDT/SIDT image. */
static void table_register_done(const uint8_t d[6], uint32_t part)
{
    uint16_t limit;
    uint32_t base;
    memcpy(&limit, d, 2);
    memcpy(&base, d + 2, 4);
    probe_done(part ? base : limit);
}

static void do_sgdt(uint32_t part)
{
    uint8_t d[6] = {0};
    __asm__ volatile("sgdt %0" : "=m"(d));
    table_register_done(d, part);
}

static void do_sidt(uint32_t part)
{
    uint8_t d[6] = {0};
    __asm__ volatile("sidt %0" : "=m"(d));
    table_register_done(d, part);
}

static void do_smsw(uint32_t mem)
{
    uint32_t v = 0xffffffff;
    uint16_t m = 0xffff;
    if (mem) {
        __asm__ volatile("smsw %0" : "=m"(m));
        v = m;
    } else {
        __asm__ volatile("smsw %0" : "+r"(v));
    }
    probe_done(v);
}

static void do_str(uint32_t unused)
{
    (void)unused;
    uint32_t v = 0xffffffff;
    __asm__ volatile("str %0" : "+r"(v));
    probe_done(v);
}

static void do_sldt(uint32_t unused)
{
    (void)unused;
    uint32_t v = 0xffffffff;
    __asm__ volatile("sldt %0" : "+r"(v));
    probe_done(v);
}

static const struct {
    const char *name;
    void (*fn)(uint32_t);
    uint32_t arg;
} probes[] = {
    {"sgdt-limit", do_sgdt, 0}, {"sgdt-base", do_sgdt, 1}, {"sidt-limit", do_sidt, 0},
    {"sidt-base", do_sidt, 1},  {"smsw-reg", do_smsw, 0},  {"smsw-mem", do_smsw, 1},
    {"str", do_str, 0},         {"sldt", do_sldt, 0},
};

int main(void)
{
    esc_init();
    for (unsigned i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        const char *out = probe(probes[i].fn, probes[i].arg);
        /* "ok:<value>" or a signal: the outcome kind is compared, the value is a cpu: line */
        report(probes[i].name, "%s", strncmp(out, "ok:", 3) == 0 ? "ok" : out);
        printf("cpu: %s=%s\n", probes[i].name, out);
    }
    native_evidence();
    finish();
    return 0;
}
