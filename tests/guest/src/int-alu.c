/*
 * int-alu: integer instructions and EFLAGS over edge values.
 *
 * Every instruction is run with known input flags (set through popf) and
 * the output flags are read with pushf.  Only the flags that the Intel
 * and AMD manuals both define for the instruction go into the checksum
 * (e.g. AF after logic ops, SF/ZF/AF/PF after mul, all flags after div,
 * OF after multi-bit shifts are undefined and differ between Bochs and
 * real CPUs).  Where a C reference is easy the hardware result is also
 * checked against it (FAIL-<op> on mismatch).
 */
#include "common.h"

#define CF 0x001u
#define PF 0x004u
#define AF 0x010u
#define ZF 0x040u
#define SF 0x080u
#define OF 0x800u
#define ARITH (CF | PF | AF | ZF | SF | OF)
#define LOGIC (CF | PF | ZF | SF | OF)

static ck_t ck;
static unsigned long nchecks;

static void put(uint32_t v) { ck_u32(&ck, v); nchecks++; }

static const uint32_t edge[] = {
    0, 1, 2, 3, 0x0f, 0x10, 0x7e, 0x7f, 0x80, 0x81, 0xfe, 0xff, 0x100,
    0x7ffe, 0x7fff, 0x8000, 0x8001, 0xffff, 0x10000, 0x12345678,
    0x55555555, 0xaaaaaaaa, 0x7fffffff, 0x80000000, 0x80000001,
    0xdeadbeef, 0xfffffffe, 0xffffffff, 0x0000fff0, 0x89abcdef,
};
#define NEDGE (sizeof edge / sizeof edge[0])

/* Input flag patterns: all clear, all arithmetic flags set, CF only, AF only. */
static const uint32_t fins[] = { 0, ARITH, CF, AF | PF };
#define NFIN (sizeof fins / sizeof fins[0])

static uint32_t parity8(uint32_t r)
{
    r &= 0xff; r ^= r >> 4; r ^= r >> 2; r ^= r >> 1;
    return (r & 1) ? 0 : PF;
}

static uint32_t szp(uint32_t r, int bits)
{
    uint32_t mask = bits == 32 ? 0xffffffffu : ((1u << bits) - 1);
    uint32_t f = parity8(r);
    r &= mask;
    if (r == 0) f |= ZF;
    if (r >> (bits - 1) & 1) f |= SF;
    return f;
}

/* C reference for add/adc (sub=0) and sub/sbb/cmp (sub=1). */
static uint32_t ref_addsub(int sub, uint32_t a, uint32_t b, uint32_t cin, int bits,
                           uint32_t *flags)
{
    uint64_t mask = bits == 32 ? 0xffffffffull : ((1ull << bits) - 1);
    uint32_t sign = 1u << (bits - 1);
    uint64_t A = a & mask, B = b & mask, full;
    uint32_t r, f;
    if (!sub) full = A + B + cin; else full = A - B - cin;
    r = (uint32_t)(full & mask);
    f = szp(r, bits);
    if (!sub) { if (full >> bits) f |= CF; }
    else if (A < B + cin) f |= CF;
    if ((a ^ b ^ r) & 0x10) f |= AF;
    if (!sub) { if ((a ^ r) & (b ^ r) & sign) f |= OF; }
    else if ((a ^ b) & (a ^ r) & sign) f |= OF;
    *flags = f;
    return r;
}

/* ---- generated wrappers ---- */

#define BIN(name, insn, T, cons)                                              \
static T name(T a, T b, uint32_t fin, uint32_t *fo)                           \
{                                                                             \
    uint32_t f;                                                               \
    __asm__ volatile("pushl %[fi]\n\tpopfl\n\t" insn " %[b], %[a]\n\t"        \
                     "pushfl\n\tpopl %[f]"                                     \
                     : [a] "+" cons(a), [f] "=&r"(f)                           \
                     : [b] cons(b), [fi] "r"(fin) : "cc");                     \
    *fo = f;                                                                  \
    return a;                                                                 \
}
#define BIN3(op) BIN(op##32, #op "l", uint32_t, "r") BIN(op##16, #op "w", uint16_t, "r") \
                 BIN(op##8, #op "b", uint8_t, "q")
BIN3(add) BIN3(adc) BIN3(sub) BIN3(sbb) BIN3(and) BIN3(or) BIN3(xor)
BIN3(cmp) BIN3(test)

#define UN(name, insn, T, cons)                                               \
static T name(T a, uint32_t fin, uint32_t *fo)                                \
{                                                                             \
    uint32_t f;                                                               \
    __asm__ volatile("pushl %[fi]\n\tpopfl\n\t" insn " %[a]\n\t"              \
                     "pushfl\n\tpopl %[f]"                                     \
                     : [a] "+" cons(a), [f] "=&r"(f) : [fi] "r"(fin) : "cc");  \
    *fo = f;                                                                  \
    return a;                                                                 \
}
#define UN3(op) UN(op##32, #op "l", uint32_t, "r") UN(op##16, #op "w", uint16_t, "r") \
                UN(op##8, #op "b", uint8_t, "q")
UN3(inc) UN3(dec) UN3(neg) UN3(not) UN(bswap32, "bswap", uint32_t, "r")

#define SH(name, insn, T, cons)                                               \
static T name(T a, uint8_t c, uint32_t fin, uint32_t *fo)                     \
{                                                                             \
    uint32_t f;                                                               \
    __asm__ volatile("pushl %[fi]\n\tpopfl\n\t" insn " %%cl, %[a]\n\t"        \
                     "pushfl\n\tpopl %[f]"                                     \
                     : [a] "+" cons(a), [f] "=&r"(f)                           \
                     : "c"(c), [fi] "r"(fin) : "cc");                          \
    *fo = f;                                                                  \
    return a;                                                                 \
}
#define SH3(op) SH(op##32, #op "l", uint32_t, "r") SH(op##16, #op "w", uint16_t, "r") \
                SH(op##8, #op "b", uint8_t, "q")
SH3(shl) SH3(shr) SH3(sar) SH3(rol) SH3(ror) SH3(rcl) SH3(rcr)

#define SHD(name, insn)                                                       \
static uint32_t name(uint32_t a, uint32_t b, uint8_t c, uint32_t fin,         \
                     uint32_t *fo)                                            \
{                                                                             \
    uint32_t f;                                                               \
    __asm__ volatile("pushl %[fi]\n\tpopfl\n\t" insn " %%cl, %[b], %[a]\n\t"  \
                     "pushfl\n\tpopl %[f]"                                     \
                     : [a] "+r"(a), [f] "=&r"(f)                               \
                     : [b] "r"(b), "c"(c), [fi] "r"(fin) : "cc");              \
    *fo = f;                                                                  \
    return a;                                                                 \
}
SHD(shld32, "shldl") SHD(shrd32, "shrdl")

#define BT(name, insn)                                                        \
static uint32_t name(uint32_t a, uint32_t bit, uint32_t fin, uint32_t *fo)    \
{                                                                             \
    uint32_t f;                                                               \
    __asm__ volatile("pushl %[fi]\n\tpopfl\n\t" insn " %[b], %[a]\n\t"        \
                     "pushfl\n\tpopl %[f]"                                     \
                     : [a] "+r"(a), [f] "=&r"(f)                               \
                     : [b] "r"(bit), [fi] "r"(fin) : "cc");                    \
    *fo = f;                                                                  \
    return a;                                                                 \
}
BT(bt32, "btl") BT(bts32, "btsl") BT(btr32, "btrl") BT(btc32, "btcl")

#define BTM(name, insn)                                                       \
static uint32_t name(uint32_t *base, int32_t bit, uint32_t fin)               \
{                                                                             \
    uint32_t f;                                                               \
    __asm__ volatile("pushl %[fi]\n\tpopfl\n\t" insn " %[b], (%[p])\n\t"      \
                     "pushfl\n\tpopl %[f]"                                     \
                     : [f] "=&r"(f)                                            \
                     : [b] "r"(bit), [p] "r"(base), [fi] "r"(fin)              \
                     : "cc", "memory");                                        \
    return f;                                                                 \
}
BTM(btm, "btl") BTM(btsm, "btsl") BTM(btrm, "btrl") BTM(btcm, "btcl")

/* one-operand forms on (e)dx:(e)ax */
static void mul32(uint32_t a, uint32_t b, int sgn, uint32_t *lo, uint32_t *hi, uint32_t *fo)
{
    uint32_t f, d;
    if (sgn)
        __asm__ volatile("pushl $0\n\tpopfl\n\timull %[b]\n\tpushfl\n\tpopl %[f]"
                         : "+a"(a), "=d"(d), [f] "=&r"(f) : [b] "r"(b) : "cc");
    else
        __asm__ volatile("pushl $0\n\tpopfl\n\tmull %[b]\n\tpushfl\n\tpopl %[f]"
                         : "+a"(a), "=d"(d), [f] "=&r"(f) : [b] "r"(b) : "cc");
    *lo = a; *hi = d; *fo = f;
}

static uint16_t mul8(uint8_t a, uint8_t b, int sgn, uint32_t *fo)
{
    uint32_t f, ax = a;
    if (sgn)
        __asm__ volatile("pushl $0\n\tpopfl\n\timulb %[b]\n\tpushfl\n\tpopl %[f]"
                         : "+a"(ax), [f] "=&r"(f) : [b] "q"(b) : "cc");
    else
        __asm__ volatile("pushl $0\n\tpopfl\n\tmulb %[b]\n\tpushfl\n\tpopl %[f]"
                         : "+a"(ax), [f] "=&r"(f) : [b] "q"(b) : "cc");
    *fo = f;
    return (uint16_t)ax;
}

static uint32_t imul2(uint32_t a, uint32_t b, uint32_t *fo)
{
    uint32_t f;
    __asm__ volatile("pushl $0\n\tpopfl\n\timull %[b], %[a]\n\tpushfl\n\tpopl %[f]"
                     : [a] "+r"(a), [f] "=&r"(f) : [b] "r"(b) : "cc");
    *fo = f;
    return a;
}

#define IMUL3(name, imm)                                                      \
static uint32_t name(uint32_t b, uint32_t *fo)                                \
{                                                                             \
    uint32_t f, r;                                                            \
    __asm__ volatile("pushl $0\n\tpopfl\n\timull $" #imm ", %[b], %[r]\n\t"   \
                     "pushfl\n\tpopl %[f]"                                     \
                     : [r] "=&r"(r), [f] "=&r"(f) : [b] "r"(b) : "cc");        \
    *fo = f;                                                                  \
    return r;                                                                 \
}
IMUL3(imul3_a, 7) IMUL3(imul3_b, -3) IMUL3(imul3_c, 0x12345) IMUL3(imul3_d, -100000)

static void div32(uint32_t lo, uint32_t hi, uint32_t d, int sgn, uint32_t *q, uint32_t *r)
{
    if (sgn)
        __asm__ volatile("idivl %[d]" : "+a"(lo), "+d"(hi) : [d] "r"(d) : "cc");
    else
        __asm__ volatile("divl %[d]" : "+a"(lo), "+d"(hi) : [d] "r"(d) : "cc");
    *q = lo; *r = hi;
}

static uint16_t div8(uint16_t ax, uint8_t d, int sgn)
{
    uint32_t a = ax;
    if (sgn)
        __asm__ volatile("idivb %[d]" : "+a"(a) : [d] "q"(d) : "cc");
    else
        __asm__ volatile("divb %[d]" : "+a"(a) : [d] "q"(d) : "cc");
    return (uint16_t)a;
}

static void div16(uint16_t lo, uint16_t hi, uint16_t d, int sgn, uint16_t *q, uint16_t *r)
{
    uint32_t a = lo, dx = hi;
    if (sgn)
        __asm__ volatile("idivw %w[d]" : "+a"(a), "+d"(dx) : [d] "r"((uint32_t)d) : "cc");
    else
        __asm__ volatile("divw %w[d]" : "+a"(a), "+d"(dx) : [d] "r"((uint32_t)d) : "cc");
    *q = (uint16_t)a; *r = (uint16_t)dx;
}

#define BITSCAN(name, insn)                                                   \
static uint32_t name(uint32_t s, uint32_t *fo)                                \
{                                                                             \
    uint32_t f, d = 0;                                                        \
    __asm__ volatile("pushl $0\n\tpopfl\n\t" insn " %[s], %[d]\n\t"           \
                     "pushfl\n\tpopl %[f]"                                     \
                     : [d] "+r"(d), [f] "=&r"(f) : [s] "r"(s) : "cc");         \
    *fo = f;                                                                  \
    return d;                                                                 \
}
BITSCAN(bsf32, "bsfl") BITSCAN(bsr32, "bsrl")

/* BCD adjust: input AX and flags, returns AX, *fo flags. */
#define ADJ(name, insn)                                                       \
static uint16_t name(uint16_t ax, uint32_t fin, uint32_t *fo)                 \
{                                                                             \
    uint32_t a = ax, f;                                                       \
    __asm__ volatile("pushl %[fi]\n\tpopfl\n\t" insn "\n\tpushfl\n\tpopl %[f]"\
                     : "+a"(a), [f] "=&r"(f) : [fi] "r"(fin) : "cc");          \
    *fo = f;                                                                  \
    return (uint16_t)a;                                                       \
}
#if defined(__i386__) /* the BCD instructions are invalid in 64-bit mode */
ADJ(daa_, "daa") ADJ(das_, "das") ADJ(aaa_, "aaa") ADJ(aas_, "aas")
ADJ(aam10, ".byte 0xd4, 0x0a") ADJ(aam16, ".byte 0xd4, 0x10") ADJ(aam7, ".byte 0xd4, 0x07")
ADJ(aad10, ".byte 0xd5, 0x0a") ADJ(aad16, ".byte 0xd5, 0x10") ADJ(aad7, ".byte 0xd5, 0x07")
#endif

static uint32_t read_flags_after(uint32_t fin)
{
    uint32_t f;
    __asm__ volatile("pushl %[fi]\n\tpopfl\n\tpushfl\n\tpopl %[f]"
                     : [f] "=&r"(f) : [fi] "r"(fin) : "cc");
    return f;
}

/* ---- test groups ---- */

static void t_binops(void)
{
    for (unsigned i = 0; i < NEDGE; i++)
        for (unsigned j = 0; j < NEDGE; j++)
            for (unsigned k = 0; k < NFIN; k++) {
                uint32_t a = edge[i], b = edge[j], fin = fins[k], f, rf, r, rr;
                uint32_t cin = fin & CF;
#define CHK_ADDSUB(op, sub, c, bits, T)                                         \
                r = op(a, b, fin, &f);                                         \
                rr = ref_addsub(sub, a, b, c, bits, &rf);                      \
                if (r != (T)rr || (f & ARITH) != rf)                           \
                    fail(#op "-%08x-%08x-%x", a, b, fin);                      \
                put(r); put(f & ARITH);
#define CHK3(op, sub, c)                                                       \
                CHK_ADDSUB(op##32, sub, c, 32, uint32_t)                       \
                CHK_ADDSUB(op##16, sub, c, 16, uint16_t)                       \
                CHK_ADDSUB(op##8, sub, c, 8, uint8_t)
                CHK3(add, 0, 0)
                CHK3(adc, 0, cin)
                CHK3(sub, 1, 0)
                CHK3(sbb, 1, cin)
                /* cmp: result is the unchanged destination */
                r = cmp32(a, b, fin, &f);
                ref_addsub(1, a, b, 0, 32, &rf);
                if (r != a || (f & ARITH) != rf) fail("cmp32-%08x-%08x", a, b);
                cmp16((uint16_t)a, (uint16_t)b, fin, &f);
                ref_addsub(1, a, b, 0, 16, &rf);
                if ((f & ARITH) != rf) fail("cmp16-%08x-%08x", a, b);
                put(f & ARITH);
                cmp8((uint8_t)a, (uint8_t)b, fin, &f);
                ref_addsub(1, a, b, 0, 8, &rf);
                if ((f & ARITH) != rf) fail("cmp8-%08x-%08x", a, b);
                put(f & ARITH);
#define CHK_LOGIC(op, expr, bits, T)                                           \
                r = op((T)a, (T)b, fin, &f);                                   \
                rr = (T)(expr);                                                \
                if (r != rr || (f & LOGIC) != szp(rr, bits))                   \
                    fail(#op "-%08x-%08x", a, b);                              \
                put(r); put(f & LOGIC);
                CHK_LOGIC(and32, a & b, 32, uint32_t)
                CHK_LOGIC(and16, a & b, 16, uint16_t)
                CHK_LOGIC(and8, a & b, 8, uint8_t)
                CHK_LOGIC(or32, a | b, 32, uint32_t)
                CHK_LOGIC(or16, a | b, 16, uint16_t)
                CHK_LOGIC(or8, a | b, 8, uint8_t)
                CHK_LOGIC(xor32, a ^ b, 32, uint32_t)
                CHK_LOGIC(xor16, a ^ b, 16, uint16_t)
                CHK_LOGIC(xor8, a ^ b, 8, uint8_t)
                test32(a, b, fin, &f);
                if ((f & LOGIC) != szp(a & b, 32)) fail("test32");
                test16((uint16_t)a, (uint16_t)b, fin, &f);
                put(f & LOGIC);
                test8((uint8_t)a, (uint8_t)b, fin, &f);
                put(f & LOGIC);
            }
}

static void t_unops(void)
{
    for (unsigned i = 0; i < NEDGE; i++)
        for (unsigned k = 0; k < NFIN; k++) {
            uint32_t a = edge[i], fin = fins[k], f, rf, r, rr;
            /* inc/dec keep CF: all six flags are defined */
#define CHK_INCDEC(op, sub, bits, T)                                            \
            r = op((T)a, fin, &f);                                             \
            rr = ref_addsub(sub, a, 1, 0, bits, &rf);                          \
            rf = (rf & ~CF) | (fin & CF);                                      \
            if (r != (T)rr || (f & ARITH) != rf) fail(#op "-%08x", a);         \
            put(r); put(f & ARITH);
            CHK_INCDEC(inc32, 0, 32, uint32_t)
            CHK_INCDEC(inc16, 0, 16, uint16_t)
            CHK_INCDEC(inc8, 0, 8, uint8_t)
            CHK_INCDEC(dec32, 1, 32, uint32_t)
            CHK_INCDEC(dec16, 1, 16, uint16_t)
            CHK_INCDEC(dec8, 1, 8, uint8_t)
#define CHK_NEG(op, bits, T)                                                    \
            r = op((T)a, fin, &f);                                             \
            rr = ref_addsub(1, 0, a, 0, bits, &rf);                            \
            if (r != (T)rr || (f & ARITH) != rf) fail(#op "-%08x", a);         \
            put(r); put(f & ARITH);
            CHK_NEG(neg32, 32, uint32_t)
            CHK_NEG(neg16, 16, uint16_t)
            CHK_NEG(neg8, 8, uint8_t)
            r = not32(a, fin, &f);
            if (r != ~a || (f & ARITH) != (fin & ARITH)) fail("not32");
            put(r);
            put(not16((uint16_t)a, fin, &f)); put(f & ARITH);
            put(not8((uint8_t)a, fin, &f)); put(f & ARITH);
            r = bswap32(a, fin, &f);
            if (r != __builtin_bswap32(a)) fail("bswap");
            put(r);
        }
}

static void t_shifts(void)
{
    static const uint32_t vals[] = { 0, 1, 0x80, 0x81, 0x7f, 0xff, 0x8000, 0x8001,
                                     0x12345678, 0x80000000, 0x80000001, 0xffffffff,
                                     0x7fffffff, 0xa5a5a5a5, 0x0f0f00f0 };
    for (unsigned i = 0; i < sizeof vals / sizeof vals[0]; i++)
        for (unsigned c = 0; c < 40; c++)
            for (unsigned k = 0; k < NFIN; k++) {
                uint32_t a = vals[i], fin = fins[k], f, r;
                unsigned mc = c & 31;
                /* Defined flags for SHL/SHR/SAR:
                 *   count 0: nothing changes (all defined);
                 *   count 1: CF OF SF ZF PF (AF undefined);
                 *   count>1: CF SF ZF PF, CF only while count < size. */
#define SHMASK(bits) (mc == 0 ? ARITH : \
                      ((mc == 1 ? (CF | OF | SF | ZF | PF) : (CF | SF | ZF | PF)) & \
                       (mc < (bits) ? ~0u : ~CF)))
                r = shl32(a, (uint8_t)c, fin, &f);
                if (r != (a << mc)) fail("shl32");
                put(r); put(f & SHMASK(32));
                r = shr32(a, (uint8_t)c, fin, &f);
                if (r != (a >> mc)) fail("shr32");
                put(r); put(f & SHMASK(32));
                r = sar32(a, (uint8_t)c, fin, &f);
                if (r != (uint32_t)((int32_t)a >> mc)) fail("sar32");
                put(r); put(f & SHMASK(32));
                put(shl16((uint16_t)a, (uint8_t)c, fin, &f)); put(f & SHMASK(16));
                put(shr16((uint16_t)a, (uint8_t)c, fin, &f)); put(f & SHMASK(16));
                put(sar16((uint16_t)a, (uint8_t)c, fin, &f)); put(f & SHMASK(16));
                put(shl8((uint8_t)a, (uint8_t)c, fin, &f)); put(f & SHMASK(8));
                put(shr8((uint8_t)a, (uint8_t)c, fin, &f)); put(f & SHMASK(8));
                put(sar8((uint8_t)a, (uint8_t)c, fin, &f)); put(f & SHMASK(8));

                /* ROL/ROR 32-bit: CF defined for count!=0, OF for count==1,
                 * all others preserved. */
#define ROTMASK (mc == 0 ? ARITH : (ARITH & ~(OF | CF)) | CF | (mc == 1 ? OF : 0))
                r = rol32(a, (uint8_t)c, fin, &f);
                if (r != (mc ? (a << mc) | (a >> (32 - mc)) : a)) fail("rol32");
                put(r); put(f & ROTMASK);
                r = ror32(a, (uint8_t)c, fin, &f);
                if (r != (mc ? (a >> mc) | (a << (32 - mc)) : a)) fail("ror32");
                put(r); put(f & ROTMASK);
                /* RCL/RCR 32-bit: count masked to 5 bits, rotate through CF */
                put(rcl32(a, (uint8_t)c, fin, &f)); put(f & ROTMASK);
                put(rcr32(a, (uint8_t)c, fin, &f)); put(f & ROTMASK);
                /* narrow rotates only with counts inside (0, size) */
                if (mc >= 1 && mc < 8) {
                    put(rol8((uint8_t)a, (uint8_t)mc, fin, &f)); put(f & ROTMASK);
                    put(ror8((uint8_t)a, (uint8_t)mc, fin, &f)); put(f & ROTMASK);
                    put(rcl8((uint8_t)a, (uint8_t)mc, fin, &f)); put(f & ROTMASK);
                    put(rcr8((uint8_t)a, (uint8_t)mc, fin, &f)); put(f & ROTMASK);
                }
                if (mc >= 1 && mc < 16) {
                    put(rol16((uint16_t)a, (uint8_t)mc, fin, &f)); put(f & ROTMASK);
                    put(ror16((uint16_t)a, (uint8_t)mc, fin, &f)); put(f & ROTMASK);
                    put(rcl16((uint16_t)a, (uint8_t)mc, fin, &f)); put(f & ROTMASK);
                    put(rcr16((uint16_t)a, (uint8_t)mc, fin, &f)); put(f & ROTMASK);
                }
                /* SHLD/SHRD 32-bit: count 0 changes nothing; else CF SF ZF PF,
                 * OF only for count 1; AF undefined. */
                {
                    uint32_t b = vals[(i + 5) % (sizeof vals / sizeof vals[0])];
                    uint32_t m = mc == 0 ? ARITH : (CF | SF | ZF | PF | (mc == 1 ? OF : 0));
                    r = shld32(a, b, (uint8_t)c, fin, &f);
                    if (r != (mc ? (a << mc) | (b >> (32 - mc)) : a)) fail("shld32");
                    put(r); put(f & m);
                    r = shrd32(a, b, (uint8_t)c, fin, &f);
                    if (r != (mc ? (a >> mc) | (b << (32 - mc)) : a)) fail("shrd32");
                    put(r); put(f & m);
                }
            }
}

static void t_muldiv(void)
{
    for (unsigned i = 0; i < NEDGE; i++)
        for (unsigned j = 0; j < NEDGE; j++) {
            uint32_t a = edge[i], b = edge[j], lo, hi, f;
            uint64_t p;
            int64_t sp;
            /* MUL/IMUL: only CF and OF are defined */
            mul32(a, b, 0, &lo, &hi, &f);
            p = (uint64_t)a * b;
            if (lo != (uint32_t)p || hi != (uint32_t)(p >> 32) ||
                ((f & (CF | OF)) != 0) != (hi != 0))
                fail("mul32-%08x-%08x", a, b);
            put(lo); put(hi); put(f & (CF | OF));
            mul32(a, b, 1, &lo, &hi, &f);
            sp = (int64_t)(int32_t)a * (int32_t)b;
            if (lo != (uint32_t)sp || hi != (uint32_t)((uint64_t)sp >> 32) ||
                ((f & (CF | OF)) != 0) != (sp != (int32_t)sp))
                fail("imul32-%08x-%08x", a, b);
            put(lo); put(hi); put(f & (CF | OF));
            lo = imul2(a, b, &f);
            if (lo != (uint32_t)sp) fail("imul2");
            put(lo); put(f & (CF | OF));
            put(mul8((uint8_t)a, (uint8_t)b, 0, &f)); put(f & (CF | OF));
            put(mul8((uint8_t)a, (uint8_t)b, 1, &f)); put(f & (CF | OF));

            /* DIV/IDIV: results only (all flags undefined) */
            if (b != 0) {
                uint32_t q, r, hi2 = a % b;
                uint64_t n = ((uint64_t)hi2 << 32) | a;
                div32(a, hi2, b, 0, &q, &r);
                if (q != (uint32_t)(n / b) || r != (uint32_t)(n % b))
                    fail("div32-%08x-%08x", a, b);
                put(q); put(r);
                /* idiv of sign-extended edx:eax by b, if the quotient fits */
                {
                    int64_t sn = (int32_t)a, sd = (int32_t)b, sq = sn / sd;
                    if (sq == (int32_t)sq) {
                        div32(a, (uint32_t)((int32_t)a >> 31), b, 1, &q, &r);
                        if (q != (uint32_t)sq || r != (uint32_t)(sn % sd))
                            fail("idiv32-%08x-%08x", a, b);
                        put(q); put(r);
                    }
                }
                if ((uint8_t)b != 0) {
                    uint16_t ax = (uint16_t)a;
                    uint8_t d = (uint8_t)b;
                    if ((ax / d) <= 0xff) put(div8(ax, d, 0));
                    {
                        int q8 = (int16_t)ax / (int8_t)d;
                        if (q8 >= -128 && q8 <= 127) put(div8(ax, d, 1));
                    }
                }
                if ((uint16_t)b != 0) {
                    uint16_t q16, r16, hi16 = (uint16_t)(a >> 16) % (uint16_t)b;
                    div16((uint16_t)a, hi16, (uint16_t)b, 0, &q16, &r16);
                    put(q16); put(r16);
                }
            }
        }
    {
        uint32_t f;
        for (unsigned i = 0; i < NEDGE; i++) {
            put(imul3_a(edge[i], &f)); put(f & (CF | OF));
            put(imul3_b(edge[i], &f)); put(f & (CF | OF));
            put(imul3_c(edge[i], &f)); put(f & (CF | OF));
            put(imul3_d(edge[i], &f)); put(f & (CF | OF));
        }
    }
}

static void t_bits(void)
{
    uint32_t f, r;
    for (unsigned i = 0; i < NEDGE; i++) {
        uint32_t a = edge[i];
        for (uint32_t bit = 0; bit < 40; bit += 3) {
            /* BT*: only CF is defined */
            r = bt32(a, bit, 0, &f);
            if (!!(f & CF) != ((a >> (bit & 31)) & 1)) fail("bt32");
            put(r); put(f & CF);
            r = bts32(a, bit, 0, &f);
            if (r != (a | (1u << (bit & 31)))) fail("bts32");
            put(r); put(f & CF);
            r = btr32(a, bit, ARITH, &f);
            if (r != (a & ~(1u << (bit & 31)))) fail("btr32");
            put(r); put(f & CF);
            r = btc32(a, bit, 0, &f);
            if (r != (a ^ (1u << (bit & 31)))) fail("btc32");
            put(r); put(f & CF);
        }
        /* BSF/BSR: ZF and (for nonzero sources) the index */
        r = bsf32(a, &f);
        if (a) {
            if (r != (uint32_t)__builtin_ctz(a) || (f & ZF)) fail("bsf");
            put(r);
        } else if (!(f & ZF)) fail("bsf0");
        put(f & ZF);
        r = bsr32(a, &f);
        if (a) {
            if (r != 31u - (uint32_t)__builtin_clz(a) || (f & ZF)) fail("bsr");
            put(r);
        } else if (!(f & ZF)) fail("bsr0");
        put(f & ZF);
    }
    /* bit-string forms on memory with offsets reaching other dwords */
    {
        uint32_t arr[8];
        for (int i = 0; i < 8; i++) arr[i] = 0x9e3779b9u * (uint32_t)(i + 1);
        for (int32_t bit = -128; bit < 128; bit += 7) {
            uint32_t *base = &arr[4];
            uint32_t old = (arr[4 + (bit >> 5)] >> (bit & 31)) & 1;
            f = btm(base, bit, 0);
            if (!!(f & CF) != old) fail("btmem");
            f = btcm(base, bit, 0);
            if (!!(f & CF) != old) fail("btcmem");
            put(f & CF);
            f = btsm(base, bit + 1, 0); put(f & CF);
            f = btrm(base, bit + 2, 0); put(f & CF);
        }
        for (int i = 0; i < 8; i++) put(arr[i]);
    }
}

static void t_chains(void)
{
    /* 256-bit add and subtract with adc/sbb chains vs C reference */
    uint32_t x[8], y[8], s[8], d[8];
    uint32_t seed = 0x12345u;
    for (int round = 0; round < 64; round++) {
        for (int i = 0; i < 8; i++) {
            seed = seed * 1103515245u + 12345u;
            x[i] = (round & 1) ? 0xffffffffu : seed;
            seed = seed * 1103515245u + 12345u;
            y[i] = (round & 2) ? (i == 0 ? 1u : 0u) : seed;
        }
        uint32_t cf_out_a, cf_out_s;
#if defined(__x86_64__) /* index registers of an address have the base's width */
#define RCX "%%rcx"
#define RDX "%%rdx"
#else
#define RCX "%%ecx"
#define RDX "%%edx"
#endif
        /* add chain: CF must survive the loop control, keep it in AH */
        __asm__ volatile(
            "clc\n\t"
            "lahf\n\t"
            "movl $0, %%ecx\n"
            "1:\n\t"
            "sahf\n\t"
            "movl (%[x]," RCX ",4), %%edx\n\t"
            "adcl (%[y]," RCX ",4), %%edx\n\t"
            "movl %%edx, (%[s]," RCX ",4)\n\t"
            "lahf\n\t"
            "incl %%ecx\n\t"
            "cmpl $8, %%ecx\n\t"
            "jne 1b\n\t"
            "sahf\n\t"
            "setc %%al\n\t"
            "movzbl %%al, %[co]\n\t"
            : [co] "=r"(cf_out_a)
            : [x] "r"(x), [y] "r"(y), [s] "r"(s)
            : "eax", "ecx", "edx", "cc", "memory");
        __asm__ volatile(
            "clc\n\t"
            "movl $8, %%ecx\n\t"
            "xorl %%edx, %%edx\n"
            "1:\n\t"
            "movl (%[x]," RDX ",4), %%eax\n\t"
            "sbbl (%[y]," RDX ",4), %%eax\n\t"
            "movl %%eax, (%[d]," RDX ",4)\n\t"
            "leal 1(%%edx), %%edx\n\t"  /* lea and loop keep CF */
            "loop 1b\n\t"
            "setc %%al\n\t"
            "movzbl %%al, %[co]\n\t"
            : [co] "=r"(cf_out_s)
            : [x] "r"(x), [y] "r"(y), [d] "r"(d)
            : "eax", "ecx", "edx", "cc", "memory");
        uint64_t c = 0, b = 0;
        for (int i = 0; i < 8; i++) {
            uint64_t t = (uint64_t)x[i] + y[i] + c;
            if ((uint32_t)t != s[i]) fail("adc-chain");
            c = t >> 32;
            uint64_t u = (uint64_t)x[i] - y[i] - b;
            if ((uint32_t)u != d[i]) fail("sbb-chain");
            b = (u >> 63) & 1;
            put(s[i]); put(d[i]);
        }
        if (c != cf_out_a || b != cf_out_s) fail("chain-carry");
        put((uint32_t)c); put((uint32_t)b);
    }
}

#if defined(__i386__)
static void t_bcd(void)
{
    uint32_t f;
    for (uint32_t al = 0; al < 256; al++)
        for (uint32_t k = 0; k < 4; k++) {
            uint32_t fin = ((k & 1) ? CF : 0) | ((k & 2) ? AF : 0);
            uint16_t r;
            /* DAA/DAS: OF undefined */
            r = daa_((uint16_t)(0x1200 | al), fin, &f);
            put(r); put(f & (CF | AF | SF | ZF | PF));
            r = das_((uint16_t)(0x3400 | al), fin, &f);
            put(r); put(f & (CF | AF | SF | ZF | PF));
            /* AAA/AAS: only AF and CF defined.  Inputs near the AL
             * wrap-around behave differently on old/new CPUs (AL+6 vs
             * AX+0x106): keep AL <= 0xf9 for AAA and AL >= 6 for AAS. */
            if (al <= 0xf9) {
                r = aaa_((uint16_t)(0x0500 | al), fin, &f);
                put(r); put(f & (CF | AF));
            }
            if (al >= 6) {
                r = aas_((uint16_t)(0x0500 | al), fin, &f);
                put(r); put(f & (CF | AF));
            }
            /* AAM/AAD: SF ZF PF defined */
            r = aam10((uint16_t)al, fin, &f); put(r); put(f & (SF | ZF | PF));
            if (r != (uint16_t)(((al / 10) << 8) | (al % 10))) fail("aam");
            r = aam16((uint16_t)al, fin, &f); put(r); put(f & (SF | ZF | PF));
            r = aam7((uint16_t)al, fin, &f); put(r); put(f & (SF | ZF | PF));
            r = aad10((uint16_t)((al * 7) & 0x0f0f), fin, &f); put(r); put(f & (SF | ZF | PF));
            r = aad16((uint16_t)(al << 4 | al >> 4), fin, &f); put(r); put(f & (SF | ZF | PF));
            r = aad7((uint16_t)(al * 0x0101), fin, &f); put(r); put(f & (SF | ZF | PF));
        }
}
#else
static void t_bcd(void) {}
#endif

static int cond_true(unsigned cc, uint32_t f)
{
    int cf = !!(f & CF), pf = !!(f & PF), zf = !!(f & ZF), sf = !!(f & SF), of = !!(f & OF);
    int r;
    switch (cc >> 1) {
    case 0: r = of; break;
    case 1: r = cf; break;
    case 2: r = zf; break;
    case 3: r = cf || zf; break;
    case 4: r = sf; break;
    case 5: r = pf; break;
    case 6: r = sf != of; break;
    default: r = zf || (sf != of); break;
    }
    return (cc & 1) ? !r : r;
}

static void t_setcc_cmov_lahf(void)
{
    for (uint32_t combo = 0; combo < 64; combo++) {
        uint32_t fin = ((combo & 1) ? CF : 0) | ((combo & 2) ? PF : 0) |
                       ((combo & 4) ? AF : 0) | ((combo & 8) ? ZF : 0) |
                       ((combo & 16) ? SF : 0) | ((combo & 32) ? OF : 0);
        uint8_t s[16];
        uint32_t m[16];
        __asm__ volatile(
            "pushl %[fi]\n\tpopfl\n\t"
            "seto 0(%[p])\n\tsetno 1(%[p])\n\tsetb 2(%[p])\n\tsetae 3(%[p])\n\t"
            "sete 4(%[p])\n\tsetne 5(%[p])\n\tsetbe 6(%[p])\n\tseta 7(%[p])\n\t"
            "sets 8(%[p])\n\tsetns 9(%[p])\n\tsetp 10(%[p])\n\tsetnp 11(%[p])\n\t"
            "setl 12(%[p])\n\tsetge 13(%[p])\n\tsetle 14(%[p])\n\tsetg 15(%[p])\n\t"
            : : [fi] "r"(fin), [p] "r"(s) : "cc", "memory");
#define CM(cc, off) "movl $0, %%eax\n\tcmov" cc " %[one], %%eax\n\tmovl %%eax, " off "(%[p])\n\t"
        __asm__ volatile(
            "pushl %[fi]\n\tpopfl\n\t"
            CM("o", "0") CM("no", "4") CM("b", "8") CM("ae", "12")
            CM("e", "16") CM("ne", "20") CM("be", "24") CM("a", "28")
            CM("s", "32") CM("ns", "36") CM("p", "40") CM("np", "44")
            CM("l", "48") CM("ge", "52") CM("le", "56") CM("g", "60")
            : : [fi] "r"(fin), [p] "r"(m), [one] "r"(1u) : "eax", "cc", "memory");
        for (unsigned cc = 0; cc < 16; cc++) {
            if (s[cc] != cond_true(cc, fin)) fail("setcc-%u-%x", cc, fin);
            if (m[cc] != (uint32_t)cond_true(cc, fin)) fail("cmov-%u-%x", cc, fin);
            put(s[cc]);
        }
        /* LAHF: AH = SF ZF 0 AF 0 PF 1 CF */
        {
            uint32_t ah;
            __asm__ volatile("pushl %[fi]\n\tpopfl\n\tlahf\n\tmovzbl %%ah, %[r]"
                             : [r] "=Q"(ah) : [fi] "r"(fin) : "eax", "cc");
            if (ah != ((fin & (SF | ZF | AF | PF | CF)) | 2)) fail("lahf-%x", fin);
            put(ah);
        }
    }
    for (uint32_t v = 0; v < 256; v++) {
        uint32_t f;
        __asm__ volatile("pushl $0x800\n\tpopfl\n\tmovb %b[v], %%ah\n\tsahf\n\t"
                         "pushfl\n\tpopl %[f]"
                         : [f] "=r"(f) : [v] "Q"(v) : "eax", "cc");
        if ((f & ARITH) != ((v & (SF | ZF | AF | PF | CF)) | OF)) fail("sahf-%x", v);
        put(f & ARITH);
    }
}

static void t_atomic(void)
{
    for (unsigned i = 0; i < NEDGE; i++)
        for (unsigned j = 0; j < NEDGE; j += 3) {
            uint32_t mem = edge[i], exp = edge[j], nv = edge[(i + j) % NEDGE], f, rf;
            uint32_t old = mem;
            __asm__ volatile("pushl $0\n\tpopfl\n\tlock cmpxchgl %[n], %[m]\n\t"
                             "pushfl\n\tpopl %[f]"
                             : "+a"(exp), [m] "+m"(mem), [f] "=&r"(f)
                             : [n] "r"(nv) : "cc", "memory");
            ref_addsub(1, edge[j], old, 0, 32, &rf);
            if ((f & ARITH) != rf) fail("cmpxchg-flags");
            if (old == edge[j] ? (mem != nv) : (mem != old || exp != old)) fail("cmpxchg");
            put(mem); put(exp); put(f & ARITH);

            /* xadd: flags as add */
            uint32_t a = edge[i], m2 = edge[j];
            __asm__ volatile("pushl $0\n\tpopfl\n\tlock xaddl %[a], %[m]\n\t"
                             "pushfl\n\tpopl %[f]"
                             : [a] "+r"(a), [m] "+m"(m2), [f] "=&r"(f) : : "cc", "memory");
            ref_addsub(0, edge[j], edge[i], 0, 32, &rf);
            if (a != edge[j] || m2 != edge[j] + edge[i] || (f & ARITH) != rf) fail("xadd");
            put(m2); put(f & ARITH);

            /* cmpxchg8b: ZF only */
            uint64_t m8 = ((uint64_t)edge[i] << 32) | edge[j];
            uint64_t e8 = (j & 1) ? m8 : m8 ^ 1;
            uint64_t n8 = ((uint64_t)nv << 32) | edge[(i * 7 + j) % NEDGE];
            uint64_t o8 = m8, e8in = e8;
            {   /* EDX:EAX explicitly: "A" is only RAX in 64-bit code */
                uint32_t lo = (uint32_t)e8, hi = (uint32_t)(e8 >> 32);
                __asm__ volatile("pushl $0\n\tpopfl\n\tlock cmpxchg8b %[m]\n\t"
                                 "pushfl\n\tpopl %[f]"
                                 : "+a"(lo), "+d"(hi), [m] "+m"(m8), [f] "=&r"(f)
                                 : "b"((uint32_t)n8), "c"((uint32_t)(n8 >> 32))
                                 : "cc", "memory");
                e8 = ((uint64_t)hi << 32) | lo;
            }
            if (e8in == o8) {
                if (m8 != n8 || !(f & ZF)) fail("cmpxchg8b-eq");
            } else if (m8 != o8 || e8 != o8 || (f & ZF)) fail("cmpxchg8b-ne");
            put((uint32_t)m8); put((uint32_t)(m8 >> 32)); put(f & ZF);
        }
}

static void t_misc(void)
{
    uint32_t f, a, d;
    /* pushf: bit 1 and IF always set in user mode; DF visible */
    f = read_flags_after(0);
    if ((f & 0x202) != 0x202) fail("pushf-if");
    __asm__ volatile("std\n\tpushfl\n\tpopl %[f]\n\tcld" : [f] "=r"(f) : : "cc");
    if (!(f & 0x400)) fail("pushf-df");
    put(f & (ARITH | 0x400 | 0x202));
    /* ID flag (bit 21) is toggleable on every CPUID-capable CPU */
    {
        uint32_t f1, f2;
        __asm__ volatile("pushfl\n\tpopl %%eax\n\tmovl %%eax, %%ecx\n\t"
                         "xorl $0x200000, %%eax\n\tpushl %%eax\n\tpopfl\n\t"
                         "pushfl\n\tpopl %[f1]\n\tpushl %%ecx\n\tpopfl\n\t"
                         "pushfl\n\tpopl %[f2]"
                         : [f1] "=r"(f1), [f2] "=r"(f2) : : "eax", "ecx", "cc");
        if (((f1 ^ f2) & 0x200000) == 0) fail("idflag");
        put(1);
    }
    /* sign extensions */
    for (unsigned i = 0; i < NEDGE; i++) {
        a = edge[i];
        __asm__ volatile("cwtl" : "+a"(a));
        put(a);
        a = edge[i];
        __asm__ volatile("cltd" : "+a"(a), "=d"(d));
        put(d);
        a = edge[i];
        __asm__ volatile("cbtw" : "+a"(a));
        put(a);
        a = edge[i];
        __asm__ volatile("cwtd" : "+a"(a), "=d"(d));
        put(d & 0xffff);
        put((uint32_t)(int32_t)(int8_t)edge[i]);
        put((uint32_t)(int32_t)(int16_t)edge[i]);
    }
    /* xlat */
    {
        static const uint8_t tab[256] = { [0] = 7, [1] = 9, [0x80] = 0x33, [0xff] = 0x44 };
        for (uint32_t i = 0; i < 256; i += 0x3f) {
            uint32_t ax = 0x1200 | i;
            __asm__ volatile("xlat" : "+a"(ax) : "b"(tab) : "memory");
            if ((ax & 0xff) != tab[i] || (ax >> 8) != 0x12) fail("xlat");
            put(ax);
        }
    }
    /* string instructions, both directions */
    {
        char src[64], dst[64];
        for (int i = 0; i < 64; i++) src[i] = (char)(i * 13 + 1);
        memset(dst, 0, sizeof dst);
        {
            void *S = src, *D = dst;
            uint32_t c = 40;
            __asm__ volatile("cld\n\trep movsb" : "+S"(S), "+D"(D), "+c"(c) : : "memory");
            if (memcmp(src, dst, 40) || c != 0 || S != src + 40) fail("movsb");
        }
        {
            void *S = src + 63, *D = dst + 63;
            uint32_t c = 23;
            __asm__ volatile("std\n\trep movsb\n\tcld" : "+S"(S), "+D"(D), "+c"(c) : : "memory", "cc");
            if (memcmp(src + 41, dst + 41, 23) || S != src + 40) fail("movsb-std");
        }
        {
            uint32_t buf[8], c = 8;
            void *D = buf;
            __asm__ volatile("cld\n\trep stosl" : "+D"(D), "+c"(c) : "a"(0xabcd1234u) : "memory");
            for (int i = 0; i < 8; i++) if (buf[i] != 0xabcd1234u) fail("stosl");
        }
        dst[30] ^= 1;
        {
            void *S = src, *D = dst;
            uint32_t c = 64;
            __asm__ volatile("cld\n\trepe cmpsb\n\tpushfl\n\tpopl %[f]"
                             : "+S"(S), "+D"(D), "+c"(c), [f] "=r"(f) : : "memory", "cc");
            if (c != 33 || S != src + 31) fail("cmpsb");
            put(c); put(f & ARITH);
        }
        {
            void *D = src;
            uint32_t c = 64;
            __asm__ volatile("cld\n\trepne scasb\n\tpushfl\n\tpopl %[f]"
                             : "+D"(D), "+c"(c), [f] "=r"(f)
                             : "a"((uint32_t)(uint8_t)src[17]) : "memory", "cc");
            put(c); put(f & ARITH);
            if (D != src + 18) fail("scasb");
        }
        {
            void *S = src + 5;
            uint32_t al = 0;
            __asm__ volatile("cld\n\tlodsb" : "+S"(S), "+a"(al) : : "memory");
            if ((al & 0xff) != (uint8_t)src[5] || S != src + 6) fail("lodsb");
        }
        ck_bytes(&ck, dst, sizeof dst);
    }
    /* loop / jecxz / enter / leave / xchg */
    {
        uint32_t c = 1000, n = 0;
        __asm__ volatile("1:\n\tincl %[n]\n\tloop 1b" : "+c"(c), [n] "+r"(n) : : "cc");
        if (n != 1000) fail("loop");
        c = 0; n = 0;
        __asm__ volatile("jecxz 1f\n\tmovl $1, %[n]\n1:" : [n] "+r"(n) : "c"(c));
        if (n != 0) fail("jecxz");
        __asm__ volatile("enter $36, $0\n\tmovl %%ebp, %%eax\n\tsubl %%esp, %%eax\n\tleave"
                         : "=a"(a) : : "memory");
        if (a != 36) fail("enter");
        a = 5; d = 9;
        __asm__ volatile("xchgl %[a], %[d]" : [a] "+r"(a), [d] "+r"(d));
        if (a != 9 || d != 5) fail("xchg");
        put(a);
    }
}

int main(void)
{
    suite_init();
    ck_init(&ck);
    t_binops();
    t_unops();
    t_shifts();
    t_muldiv();
    t_bits();
    t_chains();
    t_bcd();
    t_setcc_cmov_lahf();
    t_atomic();
    t_misc();
    info("checks=%lu", nchecks);
    result_ck("alu", &ck);
    return 0;
}
