/*
 * glibc-strings: glibc's ifunc-selected string and memory routines
 * (dynamically linked; built with -fno-builtin so every call goes to libc).
 *
 * When the program is loaded, the i386 glibc picks a variant of memcpy,
 * memmove, memset, memcmp, strlen, strchr, strcmp, strcpy, wcslen, ...
 * (SSE2, SSSE3, SSE4.2, rep movs/stos) by CPUID, so under the accelerator
 * these run natively with the extensions of the guest's CPU model.
 *
 *  1. sweep: 32 routines over sizes 0..66 and larger edge sizes, at 8
 *     alignments, each operand either starting shortly before a page
 *     boundary or ending right at a PROT_NONE page (the routines' wide
 *     reads must not fault), checked against byte-loop references
 *     (memmove overlapping both ways, canaries around every write);
 *  2. bulk: 2 MiB buffers in freshly mmap'ed memory (the page faults
 *     happen inside memset, memcpy, memcmp, stpcpy, memmove), then
 *     passes over present buffers (long native runs: timer interrupts
 *     land inside the routines) with one page per 256 KiB dropped
 *     (MADV_DONTNEED) before the routine that writes it faults there;
 *     checked with memcmp and against known contents.
 * The result checksums the routines' return values and samples of the
 * bulk buffers.  Which variants glibc chose shows on cpu: lines (offsets of
 * the resolved functions in libc.so.6); they must not change the result
 * (GLIBC_TUNABLES=glibc.cpu.hwcaps=-SSSE3,-SSE4_2,... natively).
 */
#define _GNU_SOURCE
#include "common.h"
#include <dlfcn.h>
#include <strings.h>
#include <sys/mman.h>
#include <time.h>
#include <wchar.h>

static ck_t ck;
static size_t pg;
static uint32_t rs;

static uint32_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 17;
    rs ^= rs << 5;
    return rs;
}

static void note(long v) { ck_u32(&ck, (uint32_t)v); }
static int sgn(int v) { return (v > 0) - (v < 0); }

static void *fresh(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail("mmap");
    return p;
}

/* ------------------------------------------------------------ references */

static long ref_chr(const unsigned char *s, size_t n, int c)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == c) return (long)i;
    return -1;
}

static long ref_rchr(const unsigned char *s, size_t n, int c)
{
    for (size_t i = n; i-- > 0;)
        if (s[i] == c) return (long)i;
    return -1;
}

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }
static int flip_case(int c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z' ? c ^ 0x20 : c; }

/* sign of the first difference in n bytes; nul: stop after a NUL; fold: ASCII case */
static int ref_cmp(const unsigned char *a, const unsigned char *b, size_t n, int nul, int fold)
{
    for (size_t i = 0; i < n; i++) {
        int x = fold ? lower(a[i]) : a[i], y = fold ? lower(b[i]) : b[i];
        if (x != y) return sgn(x - y);
        if (nul && a[i] == 0) return 0;
    }
    return 0;
}

static long ref_wchr(const wchar_t *s, size_t n, wchar_t c)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == c) return (long)i;
    return -1;
}

static long ref_span(const unsigned char *s, const unsigned char *set, int in)
{
    unsigned char t[256] = { 0 };
    for (; *set; set++) t[*set] = 1;
    long i = 0;
    while (s[i] && t[s[i]] == in) i++;
    return i;
}

static long ref_str(const unsigned char *h, size_t n, const unsigned char *nd, size_t m)
{
    for (size_t i = 0; i + m <= n; i++) {
        size_t j = 0;
        while (j < m && h[i + j] == nd[j]) j++;
        if (j == m) return (long)i;
    }
    return -1;
}

static long off(const void *p, const void *base)
{
    return p ? (long)((const unsigned char *)p - (const unsigned char *)base) : -1;
}

/* ------------------------------------------------------------ part 1: sweep */

/* 3 read-write pages, then a PROT_NONE guard page at hi */
struct area { unsigned char *lo, *hi; };
static struct area S, T, D;

static struct area guarded(void)
{
    unsigned char *m = fresh(4 * pg);
    if (mprotect(m + 3 * pg, pg, PROT_NONE)) fail("mprotect");
    return (struct area){ m, m + 3 * pg };
}

/* len bytes starting 32-a bytes before a page boundary, or ending at the guard page */
static unsigned char *place(struct area ar, size_t len, int a, int at_end)
{
    return at_end ? ar.hi - len : ar.lo + pg - 32 + a;
}

static size_t cn;
static int ca, cl;
#define EXPECT(cond, what) \
    do { if (!(cond)) fail("%s-n%zu-a%d-l%d", what, cn, ca, cl); } while (0)

static void sweep_bytes(size_t n, int a, int layout)
{
    int ay = (a * 7) & 31;
    unsigned char *x = place(S, n + 1, a, layout), *t = place(T, n + 1, ay, !layout);
    unsigned char *d = place(D, n + 1, ay, !layout);
    size_t i;

    for (i = 0; i < n; i++) x[i] = (unsigned char)(2 + rnd() % 254);  /* 1 never occurs */
    x[n] = 0;
    size_t p = n ? rnd() % n : 0, q = n ? rnd() % n : 0;
    int c = n ? x[p] : 'a';

    /* length and search */
    EXPECT(strlen((char *)x) == n, "strlen");
    EXPECT(strnlen((char *)x, n / 2) == n / 2, "strnlen-half");
    EXPECT(strnlen((char *)x, SIZE_MAX) == n, "strnlen-max");
    long e = ref_chr(x, n, c), r = ref_rchr(x, n, c);
    note(e);
    note(r);
    EXPECT(off(memchr(x, c, n), x) == e, "memchr");
    EXPECT(off(memchr(x, c, p), x) == ref_chr(x, p, c), "memchr-bounded");
    EXPECT(memchr(x, 1, n) == NULL, "memchr-absent");
    EXPECT(off(memrchr(x, c, n), x) == r, "memrchr");
    EXPECT(rawmemchr(x, 0) == x + n, "rawmemchr-nul");
    if (n) EXPECT(off(rawmemchr(x, c), x) == e, "rawmemchr");
    EXPECT(off(strchr((char *)x, c), x) == (n ? e : -1), "strchr");
    EXPECT(strchr((char *)x, 1) == NULL, "strchr-absent");
    EXPECT(strchr((char *)x, 0) == (char *)x + n, "strchr-nul");
    EXPECT(off(strrchr((char *)x, c), x) == (n ? r : -1), "strrchr");
    EXPECT(strrchr((char *)x, 0) == (char *)x + n, "strrchr-nul");

    unsigned char set[12];
    size_t k = n < 8 ? n : 8;
    for (i = 0; i < k; i++) set[i] = x[i];
    set[k] = 0;
    long sp = (long)strspn((char *)x, (char *)set);
    EXPECT(sp == ref_span(x, set, 1), "strspn");
    set[0] = (unsigned char)c;
    set[1] = n ? x[n - 1] : 0;
    set[2] = 0;
    long cs = (long)strcspn((char *)x, (char *)set);
    EXPECT(cs == ref_span(x, set, 0), "strcspn");
    EXPECT(off(strpbrk((char *)x, (char *)set), x) == ((size_t)cs < n ? cs : -1), "strpbrk");
    note(sp);
    note(cs);
    if (n) {
        unsigned char nd[12];
        size_t m = n - p < (size_t)(1 + a % 9) ? n - p : (size_t)(1 + a % 9);
        for (i = 0; i < m; i++) nd[i] = x[p + i];
        nd[m] = 0;
        long h = off(strstr((char *)x, (char *)nd), x);
        EXPECT(h == ref_str(x, n, nd, m), "strstr");
        note(h);
    }

    /* copies into d, with canaries before and after */
    d[-1] = 0xee;
    d[n] = 0xee;
    EXPECT(memset(d, c, n) == d, "memset-ret");
    for (i = 0; i < n; i++) EXPECT(d[i] == c, "memset");
    EXPECT(d[-1] == 0xee && d[n] == 0xee, "memset-canary");
    EXPECT(memcpy(d, x, n) == d, "memcpy-ret");
    EXPECT(ref_cmp(d, x, n, 0, 0) == 0 && d[-1] == 0xee && d[n] == 0xee, "memcpy");
    size_t sh = 1 + (size_t)a % 17;
    if (n > sh) {
        memmove(d + sh, d, n - sh);  /* overlapping, copies backwards */
        for (i = 0; i < n; i++) EXPECT(d[i] == (i < sh ? x[i] : x[i - sh]), "memmove-up");
        memmove(d, d + sh, n - sh);  /* overlapping, copies forwards */
        for (i = 0; i < n; i++)
            EXPECT(d[i] == (i < n - sh ? x[i] : i < sh ? x[i] : x[i - sh]), "memmove-down");
        EXPECT(d[-1] == 0xee && d[n] == 0xee, "memmove-canary");
    }
    EXPECT(mempcpy(d, x, n) == d + n, "mempcpy");
    EXPECT(strcpy((char *)d, (char *)x) == (char *)d && ref_cmp(d, x, n + 1, 0, 0) == 0, "strcpy");
    EXPECT(stpcpy((char *)d, (char *)x) == (char *)d + n && d[-1] == 0xee, "stpcpy");
    size_t h = n / 2;
    d[h] = 0xee;
    EXPECT(strncpy((char *)d, (char *)x, h) == (char *)d && ref_cmp(d, x, h, 0, 0) == 0 &&
           d[h] == 0xee, "strncpy");
    size_t pre = (size_t)a & 7;  /* strcat onto a prefix of pre bytes */
    d[-(long)pre - 1] = 0xee;
    for (i = 0; i < pre; i++) d[(long)i - (long)pre] = 'P';
    d[0] = 0;
    EXPECT(strcat((char *)d - pre, (char *)x) == (char *)d - pre && ref_cmp(d, x, n + 1, 0, 0) == 0,
           "strcat");
    d[0] = 0;
    EXPECT(strncat((char *)d - pre, (char *)x, h) == (char *)d - pre &&
           ref_cmp(d, x, h, 0, 0) == 0 && d[h] == 0 && d[-(long)pre - 1] == 0xee, "strncat");

    /* comparisons against t: equal, one byte changed at q, shorter */
    for (i = 0; i <= n; i++) t[i] = x[i];
    EXPECT(memcmp(x, t, n) == 0 && bcmp(x, t, n) == 0, "memcmp-eq");
    EXPECT(strcmp((char *)x, (char *)t) == 0 && strncmp((char *)x, (char *)t, n + 9) == 0, "strcmp-eq");
    if (n) {
        t[q] = (unsigned char)(x[q] < 128 ? x[q] + 128 : x[q] - 126);
        int s = ref_cmp(x, t, n, 0, 0);
        note(s);
        EXPECT(sgn(memcmp(x, t, n)) == s && bcmp(x, t, n) != 0, "memcmp");
        EXPECT(memcmp(x, t, q) == 0 && bcmp(x, t, q) == 0, "memcmp-prefix");
        EXPECT(sgn(strcmp((char *)x, (char *)t)) == s, "strcmp");
        EXPECT(strncmp((char *)x, (char *)t, q) == 0, "strncmp-prefix");
        EXPECT(sgn(strncmp((char *)x, (char *)t, q + 1)) == s, "strncmp");
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wstringop-overread" /* the bound is the point (x86-64) */
        EXPECT(sgn(strncmp((char *)x, (char *)t, SIZE_MAX)) == s, "strncmp-max");
#pragma GCC diagnostic pop
        int sc = ref_cmp(x, t, n + 1, 1, 1);
        EXPECT(sgn(strcasecmp((char *)x, (char *)t)) == sc, "strcasecmp-diff");
        t[q] = x[q];
        t[n - 1] = 0;
        EXPECT(strcmp((char *)x, (char *)t) > 0 && strcmp((char *)t, (char *)x) < 0, "strcmp-shorter");
    }
    for (i = 0; i < n; i++) t[i] = (unsigned char)flip_case(x[i]);
    t[n] = 0;
    int sc = ref_cmp(x, t, n + 1, 1, 1);
    note(sc);
    EXPECT(sgn(strcasecmp((char *)x, (char *)t)) == sc, "strcasecmp");
    EXPECT(sgn(strncasecmp((char *)x, (char *)t, h)) == ref_cmp(x, t, h, 1, 1), "strncasecmp");
}

static void sweep_wide(size_t n, int a, int layout)
{
    size_t nw = n < 1024 ? n : n / 4, i;
    int aw = a & ~3, ay = (a * 7) & 28;
    wchar_t *w = (wchar_t *)place(S, 4 * (nw + 1), aw, layout);
    wchar_t *t = (wchar_t *)place(T, 4 * (nw + 1), ay, !layout);
    wchar_t *d = (wchar_t *)place(D, 4 * (nw + 1), ay, !layout);

    for (i = 0; i < nw; i++) w[i] = (wchar_t)(2 + (rnd() & (i & 1 ? 0xff : 0x7ffffff)));
    w[nw] = 0;
    size_t p = nw ? rnd() % nw : 0;
    wchar_t c = nw ? w[p] : 2;
    long e = ref_wchr(w, nw, c), r = -1;
    for (i = nw; i-- > 0;)
        if (w[i] == c) { r = (long)i; break; }
    note(e);
    EXPECT(wcslen(w) == nw, "wcslen");
    EXPECT(off(wcschr(w, c), w) == (nw ? 4 * e : -1), "wcschr");
    EXPECT(wcschr(w, 1) == NULL && wcschr(w, 0) == w + nw, "wcschr-absent");
    EXPECT(off(wcsrchr(w, c), w) == (nw ? 4 * r : -1), "wcsrchr");
    d[-1] = 0x5eeeeeee;
    EXPECT(wcscpy(d, w) == d && d[-1] == 0x5eeeeeee, "wcscpy-ret");
    for (i = 0; i <= nw; i++) EXPECT(d[i] == w[i], "wcscpy");
    for (i = 0; i <= nw; i++) t[i] = w[i];
    EXPECT(wcscmp(w, t) == 0 && wmemcmp(w, t, nw) == 0, "wcscmp-eq");
    if (nw) {
        size_t q = rnd() % nw;
        t[q] = (q & 1) ? w[q] + 1 : w[q] - 1;  /* stays > 0 */
        int s = t[q] < w[q] ? 1 : -1;
        note(s);
        EXPECT(sgn(wcscmp(w, t)) == s && sgn(wmemcmp(w, t, nw)) == s, "wcscmp");
        EXPECT(wmemcmp(w, t, q) == 0, "wmemcmp-prefix");
    }
}

static void sweep(void)
{
    static const size_t big[] = { 95, 96, 97, 127, 128, 129, 255, 256, 257, 1000, 4095, 4097, 6001 };
    static const int aligns[] = { 0, 1, 3, 4, 7, 8, 15, 31 };
    S = guarded();
    T = guarded();
    D = guarded();
    rs = 0x12345679;
    for (size_t k = 0; k < 67 + sizeof big / sizeof big[0]; k++) {
        cn = k < 67 ? k : big[k - 67];
        for (size_t j = 0; j < sizeof aligns / sizeof aligns[0]; j++)
            for (cl = 0; cl < 2; cl++) {
                ca = aligns[j];
                sweep_bytes(cn, ca, cl);
                sweep_wide(cn, ca, cl);
            }
    }
}

/* ------------------------------------------------------------ part 2: bulk */

#define BIG (2u << 20)
#define FRESH_PASSES 2
#define WARM_ROUNDS 3
#define PUNCH_STRIDE (256u << 10)

static unsigned char *A, *B, *C, *E;
static size_t last_rand;  /* position of the last sparse random byte in A */

/* FNV of 16 bytes per page at a page-dependent offset (whole buffers are checked with memcmp) */
static void sample(const unsigned char *p)
{
    for (size_t i = 0; i < BIG / 4096; i++) ck_bytes(&ck, p + i * 4096 + (i * 37) % 4080, 16);
}

/* Drops one page per PUNCH_STRIDE of a buffer that is about to be written: the routine
 * writing it takes a page fault there after a long stretch of work on present pages. */
static void punch(unsigned char *p, unsigned r)
{
    for (size_t o = (r * 3 + 1) * pg % PUNCH_STRIDE; o < BIG; o += PUNCH_STRIDE)
        if (madvise(p + o, pg, MADV_DONTNEED)) fail("madvise");
}

/* Fresh buffers: the first access to each page faults inside the routine. */
static void fresh_pass(unsigned pass)
{
    if (pass) {
        munmap(A, BIG);
        munmap(B, BIG);
        munmap(C, BIG);
        munmap(E, BIG);
    }
    A = fresh(BIG);
    B = fresh(BIG);
    C = fresh(BIG);
    E = fresh(BIG);
    CHECK(memset(A, 'a' + (int)pass, BIG) == A, "fresh-memset");
    CHECK(memcmp(C, E, BIG) == 0, "fresh-memcmp");  /* read faults: the zero page */
    for (size_t i = 0; i < BIG; i += 1024) {
        last_rand = i + rnd() % 1024;
        A[last_rand] = (unsigned char)(2 + rnd() % 254);
    }
    A[BIG - 1] = 0;
    last_rand = last_rand < BIG - 16 ? last_rand : BIG - 16;
    CHECK(memcpy(B, A, BIG) == B, "fresh-memcpy");
    munmap(C, BIG);
    C = fresh(BIG);
    CHECK(stpcpy((char *)C, (char *)A) == (char *)C + BIG - 1, "fresh-stpcpy");
    munmap(E, BIG);
    E = fresh(BIG);
    CHECK(memmove(E, A, BIG) == E && memcmp(E, C, BIG) == 0, "fresh-memmove");
    sample(C);
}

/* Present buffers (but for the punched pages): long runs inside the routines. */
static void warm(unsigned r)
{
    size_t i, P1 = BIG - 4096 * r - 77, P2 = BIG - 513 * r - 3;
    char *a = (char *)A, *b = (char *)B, *c = (char *)C;

    CHECK(strlen(a) == BIG - 1 && strnlen(a, BIG / 2) == BIG / 2, "bulk-strlen");
    unsigned char old = A[P1];
    A[P1] = 1;
    CHECK(memchr(A, 1, BIG) == A + P1 && rawmemchr(A, 1) == A + P1 && memrchr(A, 1, BIG) == A + P1,
          "bulk-memchr");
    CHECK(strchr(a, 1) == a + P1 && strrchr(a, 1) == a + P1, "bulk-strchr");
    A[P1] = old;

    CHECK(memcmp(A, B, BIG) == 0 && strcmp(a, b) == 0, "bulk-memcmp-eq");
    B[P2] ^= 0x40;
    int s = sgn(memcmp(A, B, BIG));
    note(s);
    CHECK(s != 0 && sgn(strcmp(a, b)) == s && strncmp(a, b, P2) == 0, "bulk-strcmp");
    B[P2] ^= 0x40;

    punch(C, r);
    CHECK(strcpy(c, a) == c && memcmp(A, C, BIG) == 0, "bulk-strcpy");
    c[BIG / 2] = 0;
    CHECK(strcat(c, a + BIG / 2 + 1) == c && strlen(c) == BIG - 2, "bulk-strcat");

    size_t n = 24, at = last_rand - 10;
    char nd[32];
    memcpy(nd, a + at, n);
    nd[n] = 0;
    char *h = strstr(a + BIG - 65536, nd);  /* two-way search: not vectorised, slow */
    CHECK(h && h <= a + at && memcmp(h, nd, n) == 0, "bulk-strstr");
    note(h - a);

    size_t s1 = 1 + r, s2 = 3 + 5 * r;
    memmove(B + s1, B, BIG - 64);
    memmove(B, B + s2, BIG - 64);
    CHECK(memcmp(B, A + s2 - s1, BIG - 64 - (s2 - s1)) == 0, "bulk-memmove");
    sample(B);
    punch(B, r);
    memcpy(B, A, BIG);

    wchar_t *w = (wchar_t *)E;
    punch(E, r);
    wmemset(w, (wchar_t)(0x41424344 + r), BIG / 4 - 1);
    w[BIG / 4 - 1] = 0;
    w[BIG / 4 - 1000 * r - 5] = 7;
    CHECK(wcslen(w) == BIG / 4 - 1 && wcschr(w, 7) == w + BIG / 4 - 1000 * r - 5, "bulk-wcs");
    punch(E, r + 1);
    memset(E, (int)r, BIG);
    CHECK(E[0] == r && memcmp(E, E + 1, BIG - 1) == 0, "bulk-memset");  /* every byte equal */
    for (i = 0; i < BIG; i += 65536) note(C[i] + (A[i] << 8));
}

/* ------------------------------------------------------------ variants */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void report_variants(void)
{
    static const struct { const char *name; void *fn; } f[] = {
        { "memcpy", (void *)memcpy }, { "memmove", (void *)memmove }, { "memset", (void *)memset },
        { "memcmp", (void *)memcmp }, { "strlen", (void *)strlen }, { "strchr", (void *)strchr },
        { "strcmp", (void *)strcmp }, { "strcpy", (void *)strcpy }, { "wcslen", (void *)wcslen },
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        Dl_info di;
        if (dladdr(f[i].fn, &di) && di.dli_fname) {
            const char *base = strrchr(di.dli_fname, '/');
            cpu_line(f[i].name, "%s+0x%lx", base ? base + 1 : di.dli_fname,
                     (unsigned long)((char *)f[i].fn - (char *)di.dli_fbase));
        }
    }
}

int main(void)
{
    suite_init();
    ck_init(&ck);
    pg = (size_t)sysconf(_SC_PAGESIZE);
    report_variants();
    double t0 = now_ms();
    sweep();
    double t1 = now_ms();
    rs = 0xfeedbeef;
    for (unsigned pass = 0; pass < FRESH_PASSES; pass++) fresh_pass(pass);
    double t2 = now_ms();
    for (unsigned r = 0; r < WARM_ROUNDS; r++) warm(r);
    info("sweep %.1f ms, fresh %.1f ms, warm %.1f ms", t1 - t0, t2 - t1, now_ms() - t2);
    result_ck("strings", &ck);
    return 0;
}
