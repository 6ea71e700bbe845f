/*
 * simd: SSE/SSE2 packed and scalar float/double and integer operations
 * with MXCSR rounding modes, FTZ/DAZ and exception flags; unmasked SIMD
 * exceptions as SIGFPE; XMM/YMM/ZMM/opmask state preserved across system
 * calls and signal handlers; and a workload computed through a scalar
 * path and, when CPUID+XGETBV allow, through AVX2 and AVX-512 paths.
 *
 * The result line holds only path-independent data: the vector paths
 * must reproduce the scalar path bit for bit (FAIL otherwise) and which
 * ones ran is reported on "cpu:" lines.  The DE (denormal operand) MXCSR
 * flag is not summed (its corner cases are implementation-specific);
 * RCPPS/RSQRTPS results are only checked against their architectural
 * error bound (1.5*2^-12), never summed.
 */
#include "common.h"
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <immintrin.h>

static ck_t ck;
static unsigned long nops;
static const uint32_t DEFCSR = 0x1f80;
#define CSR_FLAGS 0x3d   /* IE ZE OE UE PE (not DE) */

typedef struct { uint32_t w[4]; } __attribute__((aligned(16))) v128;

/* ---- one instruction with xmm0 = a, xmm1 = b, result xmm0 ---- */
typedef uint32_t (*sseop_fn)(const v128 *a, const v128 *b, v128 *r, uint32_t csr);

#define SSEOP(name, text)                                                     \
static uint32_t name(const v128 *a, const v128 *b, v128 *r, uint32_t csr)     \
{                                                                             \
    uint32_t out;                                                             \
    __asm__ volatile("ldmxcsr %[c]\n\tmovaps (%[a]), %%xmm0\n\t"              \
                     "movaps (%[b]), %%xmm1\n\t" text "\n\t"                  \
                     "movaps %%xmm0, (%[r])\n\tstmxcsr %[o]\n\tldmxcsr %[d]"   \
                     : [o] "=m"(out)                                           \
                     : [a] "r"(a), [b] "r"(b), [r] "r"(r), [c] "m"(csr),       \
                       [d] "m"(DEFCSR)                                         \
                     : "xmm0", "xmm1", "memory");                              \
    return out;                                                               \
}

#define X2(insn) insn " %%xmm1, %%xmm0"
/* packed/scalar single */
SSEOP(o_addps, X2("addps")) SSEOP(o_subps, X2("subps")) SSEOP(o_mulps, X2("mulps"))
SSEOP(o_divps, X2("divps")) SSEOP(o_sqrtps, X2("sqrtps")) SSEOP(o_minps, X2("minps"))
SSEOP(o_maxps, X2("maxps")) SSEOP(o_addss, X2("addss")) SSEOP(o_divss, X2("divss"))
SSEOP(o_sqrtss, X2("sqrtss")) SSEOP(o_minss, X2("minss"))
SSEOP(o_cmpeqps, X2("cmpeqps")) SSEOP(o_cmpltps, X2("cmpltps"))
SSEOP(o_cmpleps, X2("cmpleps")) SSEOP(o_cmpunordps, X2("cmpunordps"))
SSEOP(o_cmpneqps, X2("cmpneqps")) SSEOP(o_cmpnltps, X2("cmpnltps"))
SSEOP(o_cmpnleps, X2("cmpnleps")) SSEOP(o_cmpordps, X2("cmpordps"))
SSEOP(o_andps, X2("andps")) SSEOP(o_andnps, X2("andnps")) SSEOP(o_orps, X2("orps"))
SSEOP(o_xorps, X2("xorps")) SSEOP(o_unpcklps, X2("unpcklps")) SSEOP(o_unpckhps, X2("unpckhps"))
SSEOP(o_shufps, "shufps $0x1b, %%xmm1, %%xmm0") SSEOP(o_movss, X2("movss"))
/* conversions */
SSEOP(o_cvtps2dq, X2("cvtps2dq")) SSEOP(o_cvttps2dq, X2("cvttps2dq"))
SSEOP(o_cvtdq2ps, X2("cvtdq2ps")) SSEOP(o_cvtps2pd, X2("cvtps2pd"))
SSEOP(o_cvtpd2ps, X2("cvtpd2ps")) SSEOP(o_cvtpd2dq, X2("cvtpd2dq"))
SSEOP(o_cvttpd2dq, X2("cvttpd2dq")) SSEOP(o_cvtdq2pd, X2("cvtdq2pd"))
SSEOP(o_cvtsd2ss, X2("cvtsd2ss")) SSEOP(o_cvtss2sd, X2("cvtss2sd"))
/* packed/scalar double */
SSEOP(o_addpd, X2("addpd")) SSEOP(o_subpd, X2("subpd")) SSEOP(o_mulpd, X2("mulpd"))
SSEOP(o_divpd, X2("divpd")) SSEOP(o_sqrtpd, X2("sqrtpd")) SSEOP(o_minpd, X2("minpd"))
SSEOP(o_maxpd, X2("maxpd")) SSEOP(o_addsd, X2("addsd")) SSEOP(o_mulsd, X2("mulsd"))
SSEOP(o_sqrtsd, X2("sqrtsd")) SSEOP(o_cmpltpd, X2("cmpltpd"))
SSEOP(o_cmpunordpd, X2("cmpunordpd")) SSEOP(o_cmpnlepd, X2("cmpnlepd"))
SSEOP(o_unpcklpd, X2("unpcklpd")) SSEOP(o_shufpd, "shufpd $1, %%xmm1, %%xmm0")
/* integer */
SSEOP(o_paddb, X2("paddb")) SSEOP(o_paddw, X2("paddw")) SSEOP(o_paddd, X2("paddd"))
SSEOP(o_paddq, X2("paddq")) SSEOP(o_paddsb, X2("paddsb")) SSEOP(o_paddsw, X2("paddsw"))
SSEOP(o_paddusb, X2("paddusb")) SSEOP(o_paddusw, X2("paddusw"))
SSEOP(o_psubb, X2("psubb")) SSEOP(o_psubw, X2("psubw")) SSEOP(o_psubd, X2("psubd"))
SSEOP(o_psubq, X2("psubq")) SSEOP(o_psubsb, X2("psubsb")) SSEOP(o_psubsw, X2("psubsw"))
SSEOP(o_psubusb, X2("psubusb")) SSEOP(o_psubusw, X2("psubusw"))
SSEOP(o_pmullw, X2("pmullw")) SSEOP(o_pmulhw, X2("pmulhw")) SSEOP(o_pmulhuw, X2("pmulhuw"))
SSEOP(o_pmuludq, X2("pmuludq")) SSEOP(o_pmaddwd, X2("pmaddwd")) SSEOP(o_psadbw, X2("psadbw"))
SSEOP(o_pavgb, X2("pavgb")) SSEOP(o_pavgw, X2("pavgw"))
SSEOP(o_pcmpeqb, X2("pcmpeqb")) SSEOP(o_pcmpeqw, X2("pcmpeqw")) SSEOP(o_pcmpeqd, X2("pcmpeqd"))
SSEOP(o_pcmpgtb, X2("pcmpgtb")) SSEOP(o_pcmpgtw, X2("pcmpgtw")) SSEOP(o_pcmpgtd, X2("pcmpgtd"))
SSEOP(o_packsswb, X2("packsswb")) SSEOP(o_packssdw, X2("packssdw")) SSEOP(o_packuswb, X2("packuswb"))
SSEOP(o_punpcklbw, X2("punpcklbw")) SSEOP(o_punpckhbw, X2("punpckhbw"))
SSEOP(o_punpcklwd, X2("punpcklwd")) SSEOP(o_punpckhwd, X2("punpckhwd"))
SSEOP(o_punpckldq, X2("punpckldq")) SSEOP(o_punpckhdq, X2("punpckhdq"))
SSEOP(o_punpcklqdq, X2("punpcklqdq")) SSEOP(o_punpckhqdq, X2("punpckhqdq"))
SSEOP(o_pshufd, "pshufd $0x4e, %%xmm1, %%xmm0") SSEOP(o_pshuflw, "pshuflw $0xb1, %%xmm1, %%xmm0")
SSEOP(o_pshufhw, "pshufhw $0x1b, %%xmm1, %%xmm0")
SSEOP(o_psllw, X2("psllw")) SSEOP(o_pslld, X2("pslld")) SSEOP(o_psllq, X2("psllq"))
SSEOP(o_psrlw, X2("psrlw")) SSEOP(o_psrld, X2("psrld")) SSEOP(o_psrlq, X2("psrlq"))
SSEOP(o_psraw, X2("psraw")) SSEOP(o_psrad, X2("psrad"))
SSEOP(o_psllwi, "psllw $3, %%xmm0") SSEOP(o_psrldi, "psrld $17, %%xmm0")
SSEOP(o_psradi, "psrad $31, %%xmm0") SSEOP(o_psllqi, "psllq $63, %%xmm0")
SSEOP(o_pslldq, "pslldq $5, %%xmm0") SSEOP(o_psrldq, "psrldq $11, %%xmm0")
SSEOP(o_pand, X2("pand")) SSEOP(o_pandn, X2("pandn")) SSEOP(o_por, X2("por"))
SSEOP(o_pxor, X2("pxor")) SSEOP(o_pminub, X2("pminub")) SSEOP(o_pmaxub, X2("pmaxub"))
SSEOP(o_pminsw, X2("pminsw")) SSEOP(o_pmaxsw, X2("pmaxsw"))

static const sseop_fn fops[] = {
    o_addps, o_subps, o_mulps, o_divps, o_sqrtps, o_minps, o_maxps, o_addss, o_divss,
    o_sqrtss, o_minss, o_cmpeqps, o_cmpltps, o_cmpleps, o_cmpunordps, o_cmpneqps,
    o_cmpnltps, o_cmpnleps, o_cmpordps, o_andps, o_andnps, o_orps, o_xorps, o_unpcklps,
    o_unpckhps, o_shufps, o_movss, o_cvtps2dq, o_cvttps2dq, o_cvtdq2ps, o_cvtps2pd,
    o_cvtss2sd,
};
static const sseop_fn dops[] = {
    o_addpd, o_subpd, o_mulpd, o_divpd, o_sqrtpd, o_minpd, o_maxpd, o_addsd, o_mulsd,
    o_sqrtsd, o_cmpltpd, o_cmpunordpd, o_cmpnlepd, o_unpcklpd, o_shufpd, o_cvtpd2ps,
    o_cvtpd2dq, o_cvttpd2dq, o_cvtsd2ss,
};
static const sseop_fn iops[] = {
    o_paddb, o_paddw, o_paddd, o_paddq, o_paddsb, o_paddsw, o_paddusb, o_paddusw,
    o_psubb, o_psubw, o_psubd, o_psubq, o_psubsb, o_psubsw, o_psubusb, o_psubusw,
    o_pmullw, o_pmulhw, o_pmulhuw, o_pmuludq, o_pmaddwd, o_psadbw, o_pavgb, o_pavgw,
    o_pcmpeqb, o_pcmpeqw, o_pcmpeqd, o_pcmpgtb, o_pcmpgtw, o_pcmpgtd, o_packsswb,
    o_packssdw, o_packuswb, o_punpcklbw, o_punpckhbw, o_punpcklwd, o_punpckhwd,
    o_punpckldq, o_punpckhdq, o_punpcklqdq, o_punpckhqdq, o_pshufd, o_pshuflw, o_pshufhw,
    o_psllw, o_pslld, o_psllq, o_psrlw, o_psrld, o_psrlq, o_psraw, o_psrad, o_psllwi,
    o_psrldi, o_psradi, o_psllqi, o_pslldq, o_psrldq, o_pand, o_pandn, o_por, o_pxor,
    o_pminub, o_pmaxub, o_pminsw, o_pmaxsw, o_cvtdq2pd,
};
#define N(a) (sizeof(a) / sizeof((a)[0]))

static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bitsf(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static const uint32_t csrs[] = {
    0x1f80, 0x3f80, 0x5f80, 0x7f80,      /* RN RD RU RZ */
    0x9fc0, 0xffc0,                      /* FTZ+DAZ with RN, RZ */
};

static void t_float(void)
{
    float fv[20];
    double dv[16];
    int nf = 0, nd = 0;
    volatile float one = 1, three = 3;
    fv[nf++] = 0.0f; fv[nf++] = -0.0f; fv[nf++] = 1.0f; fv[nf++] = -1.0f;
    fv[nf++] = 1.5f; fv[nf++] = 3.0f; fv[nf++] = one / three; fv[nf++] = 1e-40f;
    fv[nf++] = -1e-39f; fv[nf++] = FLT_MIN; fv[nf++] = FLT_MAX; fv[nf++] = -FLT_MAX;
    fv[nf++] = bitsf(0x7f800000); fv[nf++] = bitsf(0xff800000); fv[nf++] = bitsf(0x7fc00000);
    fv[nf++] = 16777216.0f; fv[nf++] = 1e20f; fv[nf++] = -7.25f; fv[nf++] = 0.1f;
    fv[nf++] = 2.5f;
    dv[nd++] = 0.0; dv[nd++] = -0.0; dv[nd++] = 1.0; dv[nd++] = -3.0; dv[nd++] = 1.0 / 3;
    dv[nd++] = 1e-310; dv[nd++] = DBL_MIN; dv[nd++] = DBL_MAX; dv[nd++] = HUGE_VAL;
    dv[nd++] = -HUGE_VAL; dv[nd++] = NAN; dv[nd++] = 1e300; dv[nd++] = 2.5;
    dv[nd++] = 3e9; dv[nd++] = 1e-40; dv[nd++] = 0.1;

    for (unsigned m = 0; m < N(csrs); m++)
        for (int i = 0; i < nf; i++)
            for (int j = 0; j < nf; j++) {
                v128 a, b, r;
                a.w[0] = fbits(fv[i]); a.w[1] = fbits(fv[j]);
                a.w[2] = fbits(fv[(i + 1) % nf]); a.w[3] = fbits(fv[(j + 7) % nf]);
                b.w[0] = fbits(fv[j]); b.w[1] = fbits(fv[i]);
                b.w[2] = fbits(fv[(i + j) % nf]); b.w[3] = fbits(fv[(3 * i + j) % nf]);
                for (unsigned k = 0; k < N(fops); k++) {
                    uint32_t c = fops[k](&a, &b, &r, csrs[m]);
                    ck_bytes(&ck, &r, 16);
                    ck_u32(&ck, c & CSR_FLAGS);
                    nops++;
                }
            }
    for (unsigned m = 0; m < N(csrs); m++)
        for (int i = 0; i < nd; i++)
            for (int j = 0; j < nd; j++) {
                v128 a, b, r;
                memcpy(&a.w[0], &dv[i], 8); memcpy(&a.w[2], &dv[(i + j) % nd], 8);
                memcpy(&b.w[0], &dv[j], 8); memcpy(&b.w[2], &dv[(3 * i + 1) % nd], 8);
                for (unsigned k = 0; k < N(dops); k++) {
                    uint32_t c = dops[k](&a, &b, &r, csrs[m]);
                    ck_bytes(&ck, &r, 16);
                    ck_u32(&ck, c & CSR_FLAGS);
                    nops++;
                }
            }
    /* known answers */
    {
        v128 a = { { fbits(1.0f), fbits(1.0f), fbits(-1.0f), fbits(FLT_MAX) } };
        v128 b = { { fbits(3.0f), fbits(0.0f), fbits(0.0f), fbits(2.0f) } }, r;
        uint32_t c = o_divps(&a, &b, &r, 0x1f80);
        if (r.w[0] != fbits(1.0f / 3.0f) || r.w[1] != 0x7f800000 || r.w[2] != 0xff800000 ||
            r.w[3] != 0x7effffff || (c & CSR_FLAGS) != 0x24)
            fail("divps-%08x", c);
        c = o_mulps(&a, &b, &r, 0x7f80);        /* RZ: FLT_MAX*2 -> FLT_MAX */
        if (r.w[3] != fbits(FLT_MAX) || (c & CSR_FLAGS) != 0x28) fail("mulps-rz");
        v128 t = { { 0x00400000, 0, 0, 0 } }, u = { { fbits(1.0f), 0, 0, 0 } };
        c = o_mulps(&t, &u, &r, 0x1fc0);        /* DAZ: denormal input as zero */
        if (r.w[0] != 0) fail("daz");
        c = o_mulps(&t, &u, &r, 0x1f80);
        if (r.w[0] != 0x00400000) fail("nodaz");
    }
}

static uint32_t lcg_state = 0x2545f491u;
static uint32_t lcg(void)
{
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return lcg_state ^ (lcg_state >> 15);
}

static void t_int(void)
{
    static const uint32_t edge[] = { 0, 0xffffffff, 0x80000000, 0x7fffffff, 0x00ff00ff,
                                     0x80808080, 0x7f7f7f7f, 0x00000001, 0x8000ffff,
                                     0x12345678, 0x0000003f, 0x00000010 };
    for (int round = 0; round < 160; round++) {
        v128 a, b, r;
        for (int k = 0; k < 4; k++) {
            a.w[k] = round < 144 ? edge[(round / 12 + k) % N(edge)] : lcg();
            b.w[k] = round < 144 ? edge[(round + 3 * k) % N(edge)] : lcg();
        }
        if (round % 5 == 0) { b.w[0] &= 0x3f; b.w[1] = 0; }   /* shift counts */
        for (unsigned k = 0; k < N(iops); k++) {
            iops[k](&a, &b, &r, DEFCSR);
            ck_bytes(&ck, &r, 16);
            nops++;
        }
        /* GPR results */
        uint32_t m1, m2, m3, ex;
        __asm__ volatile("movaps (%[a]), %%xmm0\n\tpmovmskb %%xmm0, %[m1]\n\t"
                         "movmskps %%xmm0, %[m2]\n\tmovmskpd %%xmm0, %[m3]\n\t"
                         "pextrw $3, %%xmm0, %[ex]"
                         : [m1] "=r"(m1), [m2] "=r"(m2), [m3] "=r"(m3), [ex] "=r"(ex)
                         : [a] "r"(&a) : "xmm0");
        ck_u32(&ck, m1); ck_u32(&ck, m2); ck_u32(&ck, m3); ck_u32(&ck, ex);
    }
    {
        v128 a = { { 0x00010002, 0x00030004, 0xffff0001, 0x7fff8000 } };
        v128 b = { { 0x00050006, 0x00070008, 0x00020002, 0x7fff7fff } }, r;
        o_paddsw(&a, &b, &r, DEFCSR);
        if (r.w[0] != 0x00060008 || r.w[2] != 0x00010003 || r.w[3] != 0x7fffffff)
            fail("paddsw");
        o_pmaddwd(&a, &b, &r, DEFCSR);
        if (r.w[0] != 5 * 1 + 2 * 6) fail("pmaddwd");
    }
}

/* scalar int <-> float conversions under each rounding mode, comiss */
static void t_conv(void)
{
    static const int32_t ints[] = { 0, 1, -1, 16777217, -16777219, 0x7fffffff,
                                    (int32_t)0x80000000, 123456789 };
    static const float fl[] = { 0.5f, 1.5f, 2.5f, -2.5f, 2147483520.0f, 3e9f, -3e9f,
                                1e-3f, -0.0f, 8388609.0f };
    for (unsigned m = 0; m < 4; m++) {
        uint32_t csr = csrs[m], out;
        for (unsigned i = 0; i < N(ints); i++) {
            float f; double d;
            __asm__ volatile("ldmxcsr %[c]\n\tcvtsi2ss %[i], %%xmm0\n\tmovss %%xmm0, %[f]\n\t"
                             "cvtsi2sd %[i], %%xmm1\n\tmovsd %%xmm1, %[d]\n\t"
                             "stmxcsr %[o]\n\tldmxcsr %[dc]"
                             : [f] "=m"(f), [d] "=m"(d), [o] "=m"(out)
                             : [i] "r"(ints[i]), [c] "m"(csr), [dc] "m"(DEFCSR)
                             : "xmm0", "xmm1");
            ck_bytes(&ck, &f, 4); ck_bytes(&ck, &d, 8); ck_u32(&ck, out & CSR_FLAGS);
        }
        for (unsigned i = 0; i < N(fl); i++) {
            int32_t r1, r2, r3;
            double d = fl[i] * 1.25;
            __asm__ volatile("ldmxcsr %[c]\n\tcvtss2si %[f], %[r1]\n\tcvttss2si %[f], %[r2]\n\t"
                             "cvtsd2si %[d], %[r3]\n\tstmxcsr %[o]\n\tldmxcsr %[dc]"
                             : [r1] "=&r"(r1), [r2] "=&r"(r2), [r3] "=&r"(r3), [o] "=m"(out)
                             : [f] "m"(fl[i]), [d] "m"(d), [c] "m"(csr), [dc] "m"(DEFCSR));
            ck_u32(&ck, (uint32_t)r1); ck_u32(&ck, (uint32_t)r2); ck_u32(&ck, (uint32_t)r3);
            ck_u32(&ck, out & CSR_FLAGS);
        }
    }
    static const float cv[] = { 1.0f, 2.0f, -0.0f, 0.0f, NAN, INFINITY };
    for (unsigned i = 0; i < N(cv); i++)
        for (unsigned j = 0; j < N(cv); j++) {
            uint32_t f1, f2, c1, c2;
            __asm__ volatile("ldmxcsr %[dc]\n\tmovss %[a], %%xmm0\n\tcomiss %[b], %%xmm0\n\t"
                             "pushfl\n\tpopl %[f1]\n\tstmxcsr %[c1]\n\tldmxcsr %[dc]\n\t"
                             "ucomiss %[b], %%xmm0\n\tpushfl\n\tpopl %[f2]\n\tstmxcsr %[c2]\n\t"
                             "ldmxcsr %[dc]"
                             : [f1] "=&r"(f1), [f2] "=&r"(f2), [c1] "=m"(c1), [c2] "=m"(c2)
                             : [a] "m"(cv[i]), [b] "m"(cv[j]), [dc] "m"(DEFCSR)
                             : "xmm0", "cc");
            /* ZF PF CF; OF SF AF are cleared */
            if (f1 & 0x890) fail("comiss-flags");
            ck_u32(&ck, f1 & 0x8d5); ck_u32(&ck, f2 & 0x8d5);
            ck_u32(&ck, c1 & CSR_FLAGS); ck_u32(&ck, c2 & CSR_FLAGS);
        }
}

/* RCPPS/RSQRTPS: only the architectural bound |rel err| <= 1.5*2^-12 */
static int approx_ok, approx_bad;
SSEOP(o_rcpps, X2("rcpps")) SSEOP(o_rsqrtps, X2("rsqrtps"))
static void t_approx(void)
{
    for (int i = 0; i < 64; i++) {
        v128 a, r1, r2;
        for (int k = 0; k < 4; k++) a.w[k] = fbits(0.001f + (float)(i * 4 + k) * 3.7f);
        o_rcpps(&a, &a, &r1, DEFCSR);
        o_rsqrtps(&a, &a, &r2, DEFCSR);
        for (int k = 0; k < 4; k++) {
            double x = bitsf(a.w[k]);
            double e1 = fabs(bitsf(r1.w[k]) * x - 1.0);
            double e2 = fabs(bitsf(r2.w[k]) * sqrt(x) - 1.0);
            if (e1 <= 1.5 / 4096 && e2 <= 1.5 / 4096) approx_ok++; else approx_bad++;
        }
    }
    ck_u32(&ck, (uint32_t)approx_ok);
}

/* ---- unmasked SIMD exception ---- */
static sigjmp_buf jb;
static volatile int fpe_code;
static void on_fpe(int sig, siginfo_t *si, void *uc)
{
    (void)sig; (void)uc;
    fpe_code = si->si_code;
    siglongjmp(jb, 1);
}

__attribute__((noinline))
static int simd_fault(int k, uint32_t csr)
{
    static v128 a, b, r;
    a.w[0] = k == 1 ? 0 : fbits(1.0f);   /* 0/0 -> invalid, 1/0 -> zero divide */
    b.w[0] = k == 2 ? fbits(3.0f) : 0;   /* 1/3 -> inexact */
    fpe_code = 0;
    if (sigsetjmp(jb, 1) == 0) {
        o_divss(&a, &b, &r, csr);
        fail("no-sigfpe-%d", k);
    }
    _mm_setcsr(DEFCSR);
    return fpe_code;
}

static void t_sigfpe(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fpe;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGFPE, &sa, NULL);
    static const uint32_t unmask[3] = { 0x1f80 & ~0x200, 0x1f80 & ~0x080, 0x1f80 & ~0x1000 };
    static const int want[3] = { FPE_FLTDIV, FPE_FLTINV, FPE_FLTRES };
    for (int rep = 0; rep < 2; rep++)
        for (int k = 0; k < 3; k++) {
            int code = simd_fault(k, unmask[k]);
            if (code != want[k]) fail("simd-sigfpe-%d-code%d", k, code);
            ck_u32(&ck, (uint32_t)code);
        }
    signal(SIGFPE, SIG_DFL);
}

/* ---- CPU features ---- */
static int have_avx2, have_avx512;

static void detect(void)
{
    struct vector_isa v = detect_vector_isa();
    have_avx2 = v.avx2;
    have_avx512 = v.avx512;
}

/* ---- register state across syscalls and signals ---- */
static volatile int handler_ran;

__attribute__((target("avx2")))
static void clobber_ymm(void)
{
    __asm__ volatile("vpcmpeqd %%ymm0, %%ymm0, %%ymm0\n\tvmovdqa %%ymm0, %%ymm1\n\t"
                     "vmovdqa %%ymm0, %%ymm2\n\tvmovdqa %%ymm0, %%ymm3\n\t"
                     "vmovdqa %%ymm0, %%ymm4\n\tvmovdqa %%ymm0, %%ymm5\n\t"
                     "vmovdqa %%ymm0, %%ymm6\n\tvmovdqa %%ymm0, %%ymm7\n\tvzeroupper"
                     ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7");
}

__attribute__((target("avx512f,avx512bw")))
static void clobber_zmm(void)
{
    __asm__ volatile("vpternlogd $0xff, %%zmm0, %%zmm0, %%zmm0\n\t"
                     "vmovdqa64 %%zmm0, %%zmm1\n\tvmovdqa64 %%zmm0, %%zmm2\n\t"
                     "vmovdqa64 %%zmm0, %%zmm3\n\tvmovdqa64 %%zmm0, %%zmm4\n\t"
                     "vmovdqa64 %%zmm0, %%zmm5\n\tvmovdqa64 %%zmm0, %%zmm6\n\t"
                     "vmovdqa64 %%zmm0, %%zmm7\n\tkxnorq %%k0, %%k0, %%k1\n\t"
                     "kmovq %%k1, %%k2\n\tkmovq %%k1, %%k3\n\tkmovq %%k1, %%k4\n\t"
                     "kmovq %%k1, %%k5\n\tkmovq %%k1, %%k6\n\tkmovq %%k1, %%k7\n\tvzeroupper"
                     ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
                         "k1", "k2", "k3", "k4", "k5", "k6", "k7");
}

static void on_usr1(int sig)
{
    (void)sig;
    __asm__ volatile("pcmpeqd %%xmm0, %%xmm0\n\tmovaps %%xmm0, %%xmm1\n\t"
                     "movaps %%xmm0, %%xmm2\n\tmovaps %%xmm0, %%xmm3\n\t"
                     "movaps %%xmm0, %%xmm4\n\tmovaps %%xmm0, %%xmm5\n\t"
                     "movaps %%xmm0, %%xmm6\n\tmovaps %%xmm0, %%xmm7\n\tldmxcsr %[c]"
                     :: [c] "m"((uint32_t){0x7fc0})
                     : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7");
    if (have_avx2) clobber_ymm();
    if (have_avx512) clobber_zmm();
    handler_ran++;
}

#define LOAD8(ins, w) ins " 0*" #w "(%[p]), %%" REG "0\n\t" ins " 1*" #w "(%[p]), %%" REG "1\n\t" \
    ins " 2*" #w "(%[p]), %%" REG "2\n\t" ins " 3*" #w "(%[p]), %%" REG "3\n\t" \
    ins " 4*" #w "(%[p]), %%" REG "4\n\t" ins " 5*" #w "(%[p]), %%" REG "5\n\t" \
    ins " 6*" #w "(%[p]), %%" REG "6\n\t" ins " 7*" #w "(%[p]), %%" REG "7\n\t"
#define STORE8(ins, w) ins " %%" REG "0, 0*" #w "(%[q])\n\t" ins " %%" REG "1, 1*" #w "(%[q])\n\t" \
    ins " %%" REG "2, 2*" #w "(%[q])\n\t" ins " %%" REG "3, 3*" #w "(%[q])\n\t" \
    ins " %%" REG "4, 4*" #w "(%[q])\n\t" ins " %%" REG "5, 5*" #w "(%[q])\n\t" \
    ins " %%" REG "6, 6*" #w "(%[q])\n\t" ins " %%" REG "7, 7*" #w "(%[q])\n\t"
#if defined(__x86_64__)
/* kill(getpid(), SIGUSR1) then getpid() through syscall, registers live */
#define SYSCALLS "movl $62, %%eax\n\tsyscall\n\tmovl $39, %%eax\n\tsyscall\n\t"
#define PID_REG "D"
#define SIG_REG "S"
#define SYS_CLOBBERS "rcx", "r11",
#define LDMXCSR_IMM(v) "pushq $" v "\n\tldmxcsr (%%rsp)\n\taddq $8, %%rsp\n\t"
#else
/* kill(getpid(), SIGUSR1) then getpid() through int $0x80, registers live */
#define SYSCALLS "movl $37, %%eax\n\tint $0x80\n\tmovl $20, %%eax\n\tint $0x80\n\t"
#define PID_REG "b"
#define SIG_REG "c"
#define SYS_CLOBBERS
#define LDMXCSR_IMM(v) "pushl $" v "\n\tldmxcsr (%%esp)\n\taddl $4, %%esp\n\t"
#endif

static unsigned char pat[8 * 64] __attribute__((aligned(64)));
static unsigned char got[8 * 64] __attribute__((aligned(64)));
static uint16_t kpat[8], kgot[8];

static void preserve_xmm(int pid)
{
#define REG "xmm"
    __asm__ volatile(LOAD8("movaps", 16)
                     LDMXCSR_IMM("0x3f80")
                     SYSCALLS STORE8("movaps", 16)
                     "stmxcsr 128(%[q])\n\t"
                     LDMXCSR_IMM("0x1f80")
                     : : [p] "r"(pat), [q] "r"(got), PID_REG(pid), SIG_REG(SIGUSR1)
                     : "eax", SYS_CLOBBERS "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
                       "xmm7", "memory");
#undef REG
}

__attribute__((target("avx2")))
static void preserve_ymm(int pid)
{
#define REG "ymm"
    __asm__ volatile(LOAD8("vmovdqa", 32) SYSCALLS STORE8("vmovdqa", 32) "vzeroupper"
                     : : [p] "r"(pat), [q] "r"(got), PID_REG(pid), SIG_REG(SIGUSR1)
                     : "eax", SYS_CLOBBERS "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
                       "xmm7", "memory");
#undef REG
}

__attribute__((target("avx512f,avx512bw")))
static void preserve_zmm(int pid)
{
#define REG "zmm"
    __asm__ volatile(LOAD8("vmovdqa64", 64)
                     "kmovw 0(%[kp]), %%k1\n\tkmovw 2(%[kp]), %%k2\n\tkmovw 4(%[kp]), %%k3\n\t"
                     "kmovw 6(%[kp]), %%k4\n\tkmovw 8(%[kp]), %%k5\n\tkmovw 10(%[kp]), %%k6\n\t"
                     "kmovw 12(%[kp]), %%k7\n\t"
                     SYSCALLS STORE8("vmovdqa64", 64)
                     "kmovw %%k1, 0(%[kq])\n\tkmovw %%k2, 2(%[kq])\n\tkmovw %%k3, 4(%[kq])\n\t"
                     "kmovw %%k4, 6(%[kq])\n\tkmovw %%k5, 8(%[kq])\n\tkmovw %%k6, 10(%[kq])\n\t"
                     "kmovw %%k7, 12(%[kq])\n\tvzeroupper"
                     : : [p] "r"(pat), [q] "r"(got), [kp] "r"(kpat), [kq] "r"(kgot),
                         PID_REG(pid), SIG_REG(SIGUSR1)
                     : "eax", SYS_CLOBBERS "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
                       "xmm7", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "memory");
#undef REG
}

static void t_preserve(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    int pid = getpid();
    for (int rep = 0; rep < 4; rep++) {
        for (unsigned i = 0; i < sizeof pat; i++) pat[i] = (unsigned char)(i * 7 + rep * 31 + 1);
        for (int i = 0; i < 8; i++) kpat[i] = (uint16_t)(0x1234 * (i + 1) + rep);
        handler_ran = 0;
        memset(got, 0, sizeof got);
        preserve_xmm(pid);
        if (memcmp(pat, got, 8 * 16)) fail("xmm-not-preserved");
        if (*(uint32_t *)(got + 8 * 16) != 0x3f80) fail("mxcsr-not-preserved");
        if (have_avx2) {
            memset(got, 0, sizeof got);
            preserve_ymm(pid);
            if (memcmp(pat, got, 8 * 32)) fail("ymm-not-preserved");
        }
        if (have_avx512) {
            memset(got, 0, sizeof got);
            memset(kgot, 0, sizeof kgot);
            preserve_zmm(pid);
            if (memcmp(pat, got, 8 * 64)) fail("zmm-not-preserved");
            if (memcmp(kpat, kgot, 14)) fail("opmask-not-preserved");
        }
        if (handler_ran != 1 + have_avx2 + have_avx512) fail("usr1-handler");
    }
    signal(SIGUSR1, SIG_DFL);
    ck_u32(&ck, 0x600d);
}

/* ---- vector vs scalar workload ---- */
#define NW 4096
static uint32_t wa[NW], wb[NW];
static float fa[NW], fb[NW], fc[NW];
typedef struct {
    uint32_t c[NW], e[NW], z[NW];
    float d[NW];
} wout;
static wout out_s, out_v;

static void work_init(void)
{
    for (int i = 0; i < NW; i++) {
        wa[i] = lcg();
        wb[i] = (i % 17 == 0) ? 0 : lcg();
        fa[i] = (float)(lcg() % 1000000) * 0.001f + (i % 9 == 0 ? 1e-39f : 0.0f);
        fb[i] = (float)((int32_t)lcg() % 100000) * 0.01f;
        fc[i] = (float)(lcg() % 1000) * 0.5f - 250.0f;
    }
}

static uint32_t sat_add_bytes(uint32_t x, uint32_t y)
{
    uint32_t r = 0;
    for (int k = 0; k < 4; k++) {
        uint32_t s = ((x >> (8 * k)) & 0xff) + ((y >> (8 * k)) & 0xff);
        r |= (s > 255 ? 255 : s) << (8 * k);
    }
    return r;
}

static void work_scalar(wout *o)
{
    const __m128 onev = _mm_set_ss(1.0f);
    for (int i = 0; i < NW; i++) {
        uint32_t a = wa[i], b = wb[i];
        uint32_t t = a * b + (a >> 3);
        t ^= (b << 7) | (b >> 25);
        if (!(a & 1)) t += 0x9e3779b9u;
        uint32_t m = t < b ? t : b;
        o->c[i] = t + m;
        o->e[i] = sat_add_bytes(t, b);
        o->z[i] = t ? (uint32_t)__builtin_clz(t) : 32;
        __m128 x = _mm_set_ss(fa[i]), y = _mm_set_ss(fb[i]), z = _mm_set_ss(fc[i]);
        __m128 r = _mm_add_ss(_mm_mul_ss(_mm_sqrt_ss(x), y), z);
        r = _mm_div_ss(r, _mm_max_ss(_mm_and_ps(y, _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff))),
                                     onev));
        _mm_store_ss(&o->d[i], r);
    }
}

__attribute__((target("avx2")))
static void work_avx2(wout *o)
{
    const __m256i one = _mm256_set1_epi32(1), k9 = _mm256_set1_epi32((int)0x9e3779b9u);
    const __m256 onef = _mm256_set1_ps(1.0f);
    const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int i = 0; i < NW; i += 8) {
        __m256i a = _mm256_loadu_si256((const __m256i *)&wa[i]);
        __m256i b = _mm256_loadu_si256((const __m256i *)&wb[i]);
        __m256i t = _mm256_add_epi32(_mm256_mullo_epi32(a, b), _mm256_srli_epi32(a, 3));
        t = _mm256_xor_si256(t, _mm256_or_si256(_mm256_slli_epi32(b, 7), _mm256_srli_epi32(b, 25)));
        __m256i odd = _mm256_cmpeq_epi32(_mm256_and_si256(a, one), one);
        t = _mm256_blendv_epi8(_mm256_add_epi32(t, k9), t, odd);
        __m256i m = _mm256_min_epu32(t, b);
        _mm256_storeu_si256((__m256i *)&o->c[i], _mm256_add_epi32(t, m));
        _mm256_storeu_si256((__m256i *)&o->e[i], _mm256_adds_epu8(t, b));
        uint32_t tt[8];
        _mm256_storeu_si256((__m256i *)tt, t);
        for (int k = 0; k < 8; k++) o->z[i + k] = tt[k] ? (uint32_t)__builtin_clz(tt[k]) : 32;
        __m256 x = _mm256_loadu_ps(&fa[i]), y = _mm256_loadu_ps(&fb[i]), z = _mm256_loadu_ps(&fc[i]);
        __m256 r = _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(x), y), z);
        r = _mm256_div_ps(r, _mm256_max_ps(_mm256_and_ps(y, absm), onef));
        _mm256_storeu_ps(&o->d[i], r);
    }
    _mm256_zeroupper();
}

__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512cd")))
static void work_avx512(wout *o)
{
    const __m512i one = _mm512_set1_epi32(1), k9 = _mm512_set1_epi32((int)0x9e3779b9u);
    const __m512 onef = _mm512_set1_ps(1.0f);
    int i;
    for (i = 0; i + 16 <= NW - 8; i += 16) {
        __m512i a = _mm512_loadu_si512(&wa[i]);
        __m512i b = _mm512_loadu_si512(&wb[i]);
        __m512i t = _mm512_add_epi32(_mm512_mullo_epi32(a, b), _mm512_srli_epi32(a, 3));
        t = _mm512_xor_si512(t, _mm512_rol_epi32(b, 7));
        __mmask16 odd = _mm512_test_epi32_mask(a, one);
        t = _mm512_mask_blend_epi32(odd, _mm512_add_epi32(t, k9), t);
        __m512i m = _mm512_min_epu32(t, b);
        _mm512_storeu_si512(&o->c[i], _mm512_add_epi32(t, m));
        _mm512_storeu_si512(&o->e[i], _mm512_adds_epu8(t, b));
        _mm512_storeu_si512(&o->z[i], _mm512_lzcnt_epi32(t));
        __m512 x = _mm512_loadu_ps(&fa[i]), y = _mm512_loadu_ps(&fb[i]), z = _mm512_loadu_ps(&fc[i]);
        __m512 r = _mm512_add_ps(_mm512_mul_ps(_mm512_sqrt_ps(x), y), z);
        r = _mm512_div_ps(r, _mm512_max_ps(_mm512_abs_ps(y), onef));
        _mm512_storeu_ps(&o->d[i], r);
    }
    /* tail of 8 through 256-bit EVEX (AVX512VL) forms with opmasks */
    for (; i < NW; i += 8) {
        __m256i a = _mm256_loadu_si256((const __m256i *)&wa[i]);
        __m256i b = _mm256_loadu_si256((const __m256i *)&wb[i]);
        __m256i t = _mm256_add_epi32(_mm256_mullo_epi32(a, b), _mm256_srli_epi32(a, 3));
        t = _mm256_xor_si256(t, _mm256_rol_epi32(b, 7));
        __mmask8 even = _mm256_testn_epi32_mask(a, _mm256_set1_epi32(1));
        t = _mm256_mask_add_epi32(t, even, t, _mm256_set1_epi32((int)0x9e3779b9u));
        __m256i m = _mm256_min_epu32(t, b);
        _mm256_storeu_si256((__m256i *)&o->c[i], _mm256_add_epi32(t, m));
        _mm256_storeu_si256((__m256i *)&o->e[i], _mm256_adds_epu8(t, b));
        _mm256_storeu_si256((__m256i *)&o->z[i], _mm256_lzcnt_epi32(t));
        __m256 x = _mm256_loadu_ps(&fa[i]), y = _mm256_loadu_ps(&fb[i]), z = _mm256_loadu_ps(&fc[i]);
        __m256 r = _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(x), y), z);
        __m256 ay = _mm256_castsi256_ps(_mm256_and_si256(_mm256_castps_si256(y),
                                                         _mm256_set1_epi32(0x7fffffff)));
        r = _mm256_div_ps(r, _mm256_max_ps(ay, _mm256_set1_ps(1.0f)));
        _mm256_storeu_ps(&o->d[i], r);
    }
    _mm256_zeroupper();
}

static void t_work(void)
{
    work_init();
    work_scalar(&out_s);
    if (have_avx2) {
        memset(&out_v, 0, sizeof out_v);
        work_avx2(&out_v);
        if (memcmp(&out_s, &out_v, sizeof out_s)) fail("avx2-vs-scalar");
    }
    if (have_avx512) {
        memset(&out_v, 0, sizeof out_v);
        work_avx512(&out_v);
        if (memcmp(&out_s, &out_v, sizeof out_s)) fail("avx512-vs-scalar");
    }
    ck_bytes(&ck, &out_s, sizeof out_s);
}

int main(void)
{
    suite_init();
    ck_init(&ck);
    detect();
    t_float();
    t_int();
    t_conv();
    t_approx();
    t_sigfpe();
    t_preserve();
    t_work();
    info("ops=%lu rcp/rsqrt_within_bound=%d/%d", nops, approx_ok, approx_ok + approx_bad);
    if (approx_bad) fail("rcp-bound-%d", approx_bad);
    result_ck("simd", &ck);
    return 0;
}
