/*
 * deb-libs: crypto and compression libraries of Debian bookworm i386,
 * loaded with dlopen() (dynamically linked; no -dev packages needed).
 *
 *  libcrypto.so.3 (libssl3): SHA-1, SHA-256, SHA-512 through EVP (one
 *    call = uneven chunks); AES-128-CTR, AES-128-GCM and ChaCha20-Poly1305
 *    encrypt + decrypt round trips (a wrong tag must be refused); a
 *    2048-bit modular exponentiation.  OpenSSL picks its SHA-NI, AES-NI,
 *    PCLMULQDQ, SSSE3, AVX2 ... code by its own CPUID probe: the
 *    capability vector is on a cpu: line (OPENSSL_ia32cap narrows it).
 *  libz.so.1 (zlib1g): compress2 at levels 1 and 6, uncompress, crc32,
 *    adler32.
 *  liblzma.so.5 (liblzma5): xz preset 1 encode + decode, crc32, crc64.
 * The data and every output buffer are freshly mmap'ed, so page faults
 * happen inside the libraries' code; the digests are also taken over
 * untouched (zero-page) memory.  The result checksums digests, tags,
 * ciphertext digests, compressed bytes and CRCs.
 *
 * ci/build-guest copies the three libraries into the guest's
 * /lib/i386-linux-gnu; ci/run-native points LD_LIBRARY_PATH at the same
 * extracted files, so the guest and the host run identical library bytes.
 */
#define _GNU_SOURCE
#include "common.h"
#include <dlfcn.h>
#include <sys/mman.h>
#include <time.h>

#define DATA (1u << 20)       /* input of the digests and ciphers */
#define ZDATA (128u << 10)    /* input of the compressors */
#define ZERO (512u << 10)     /* untouched memory digested */

static ck_t ck;
static uint32_t rs = 0x2545f491;

static uint32_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 17;
    rs ^= rs << 5;
    return rs;
}

static unsigned char *fresh(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail("mmap");
    return p;
}

static void *lib(const char *name)
{
    void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        info("dlopen %s: %s (natively: ci/run-native sets LD_LIBRARY_PATH to the packages "
             "ci/build-guest extracts)", name, dlerror());
        fail("dlopen-%s", name);
    }
    return h;
}

static void *need(void *h, const char *name)
{
    void *p = dlsym(h, name);
    if (!p) fail("dlsym-%s", name);
    return p;
}
#define BIND(h, var, name) (*(void **)&(var) = need((h), (name)))

/* ------------------------------------------------------------ libcrypto */

typedef struct opaque EVP_MD, EVP_MD_CTX, EVP_CIPHER, EVP_CIPHER_CTX, BIGNUM, BN_CTX;
#define OPENSSL_INIT_NO_LOAD_CONFIG 0x80
#define OPENSSL_VERSION 0
#define OPENSSL_CPU_INFO 9
#define EVP_CTRL_AEAD_GET_TAG 0x10
#define EVP_CTRL_AEAD_SET_TAG 0x11

static struct {
    int (*init)(uint64_t, const void *);
    const char *(*version)(int);
    const EVP_MD *(*sha1)(void), *(*sha256)(void), *(*sha512)(void);
    EVP_MD_CTX *(*md_new)(void);
    void (*md_free)(EVP_MD_CTX *);
    int (*d_init)(EVP_MD_CTX *, const EVP_MD *, void *);
    int (*d_update)(EVP_MD_CTX *, const void *, size_t);
    int (*d_final)(EVP_MD_CTX *, unsigned char *, unsigned *);
    const EVP_CIPHER *(*aes_ctr)(void), *(*aes_gcm)(void), *(*chacha_poly)(void);
    EVP_CIPHER_CTX *(*c_new)(void);
    void (*c_free)(EVP_CIPHER_CTX *);
    int (*c_init)(EVP_CIPHER_CTX *, const EVP_CIPHER *, void *, const unsigned char *,
                  const unsigned char *, int);
    int (*c_update)(EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int);
    int (*c_final)(EVP_CIPHER_CTX *, unsigned char *, int *);
    int (*c_ctrl)(EVP_CIPHER_CTX *, int, int, void *);
    BIGNUM *(*bn_new)(void);
    void (*bn_free)(BIGNUM *);
    BN_CTX *(*bn_ctx_new)(void);
    void (*bn_ctx_free)(BN_CTX *);
    int (*bn_hex2bn)(BIGNUM **, const char *);
    char *(*bn_bn2hex)(const BIGNUM *);
    int (*bn_mod_exp)(BIGNUM *, const BIGNUM *, const BIGNUM *, const BIGNUM *, BN_CTX *);
    void (*crypto_free)(void *, const char *, int);
} ssl;

static void bind_crypto(void)
{
    void *h = lib("libcrypto.so.3");
    BIND(h, ssl.init, "OPENSSL_init_crypto");
    BIND(h, ssl.version, "OpenSSL_version");
    BIND(h, ssl.sha1, "EVP_sha1");
    BIND(h, ssl.sha256, "EVP_sha256");
    BIND(h, ssl.sha512, "EVP_sha512");
    BIND(h, ssl.md_new, "EVP_MD_CTX_new");
    BIND(h, ssl.md_free, "EVP_MD_CTX_free");
    BIND(h, ssl.d_init, "EVP_DigestInit_ex");
    BIND(h, ssl.d_update, "EVP_DigestUpdate");
    BIND(h, ssl.d_final, "EVP_DigestFinal_ex");
    BIND(h, ssl.aes_ctr, "EVP_aes_128_ctr");
    BIND(h, ssl.aes_gcm, "EVP_aes_128_gcm");
    BIND(h, ssl.chacha_poly, "EVP_chacha20_poly1305");
    BIND(h, ssl.c_new, "EVP_CIPHER_CTX_new");
    BIND(h, ssl.c_free, "EVP_CIPHER_CTX_free");
    BIND(h, ssl.c_init, "EVP_CipherInit_ex");
    BIND(h, ssl.c_update, "EVP_CipherUpdate");
    BIND(h, ssl.c_final, "EVP_CipherFinal_ex");
    BIND(h, ssl.c_ctrl, "EVP_CIPHER_CTX_ctrl");
    BIND(h, ssl.bn_new, "BN_new");
    BIND(h, ssl.bn_free, "BN_free");
    BIND(h, ssl.bn_ctx_new, "BN_CTX_new");
    BIND(h, ssl.bn_ctx_free, "BN_CTX_free");
    BIND(h, ssl.bn_hex2bn, "BN_hex2bn");
    BIND(h, ssl.bn_bn2hex, "BN_bn2hex");
    BIND(h, ssl.bn_mod_exp, "BN_mod_exp");
    BIND(h, ssl.crypto_free, "CRYPTO_free");
    /* no openssl.cnf: the host's and the guest's differ (or are missing) */
    CHECK(ssl.init(OPENSSL_INIT_NO_LOAD_CONFIG, NULL) == 1, "openssl-init");
    info("%s", ssl.version(OPENSSL_VERSION));
    const char *ci = ssl.version(OPENSSL_CPU_INFO), *eq = strchr(ci, '=');
    cpu_line("openssl_ia32cap", "%s", eq ? eq + 1 : ci);
}

/* digest of n bytes, fed in chunks of 1..max bytes (max 1: in one call) */
static void digest(const EVP_MD *md, const unsigned char *p, size_t n, size_t max,
                   unsigned char *out, unsigned *len)
{
    EVP_MD_CTX *c = ssl.md_new();
    CHECK(c && ssl.d_init(c, md, NULL) == 1, "digest-init");
    while (n) {
        size_t k = max > 1 ? 1 + rnd() % max : n;
        k = k < n ? k : n;
        CHECK(ssl.d_update(c, p, k) == 1, "digest-update");
        p += k;
        n -= k;
    }
    CHECK(ssl.d_final(c, out, len) == 1, "digest-final");
    ssl.md_free(c);
}

static void t_digests(const unsigned char *data, const unsigned char *zero)
{
    const EVP_MD *mds[3] = { ssl.sha1(), ssl.sha256(), ssl.sha512() };
    for (int i = 0; i < 3; i++) {
        unsigned char a[64], b[64], c[64], z[64];
        unsigned la, lb, lc, lz;
        digest(mds[i], data, DATA, 1, a, &la);
        digest(mds[i], data, DATA / 4, 1, b, &lb);
        digest(mds[i], data, DATA / 4, 5000, c, &lc);  /* partial blocks at every chunk end */
        CHECK(lb == lc && memcmp(b, c, lb) == 0, "digest-chunked-%d", i);
        digest(mds[i], zero, ZERO, 1, z, &lz);         /* read faults inside the digest */
        ck_bytes(&ck, a, la);
        ck_bytes(&ck, b, lb);
        ck_bytes(&ck, z, lz);
    }
}

/* one pass of cipher ci over n bytes in at most 3 uneven calls; returns the output length */
static int crypt_pass(const EVP_CIPHER *ci, int enc, const unsigned char *key, const unsigned char *iv,
                      const unsigned char *in, unsigned char *out, int n, unsigned char *tag)
{
    EVP_CIPHER_CTX *c = ssl.c_new();
    int l, total = 0, cut1 = n / 3 + 5, cut2 = n - n / 4;
    CHECK(c && ssl.c_init(c, ci, NULL, key, iv, enc) == 1, "cipher-init");
    if (!enc && tag) CHECK(ssl.c_ctrl(c, EVP_CTRL_AEAD_SET_TAG, 16, tag) == 1, "cipher-set-tag");
    const int cuts[4] = { 0, cut1, cut2, n };
    for (int i = 0; i < 3; i++) {
        CHECK(ssl.c_update(c, out + total, &l, in + cuts[i], cuts[i + 1] - cuts[i]) == 1, "cipher-update");
        total += l;
    }
    int ok = ssl.c_final(c, out + total, &l) == 1;
    if (ok) total += l;
    if (enc && tag) CHECK(ssl.c_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, tag) == 1, "cipher-get-tag");
    ssl.c_free(c);
    return ok ? total : -1;
}

static void t_ciphers(const unsigned char *data)
{
    const EVP_CIPHER *cs[3] = { ssl.aes_ctr(), ssl.aes_gcm(), ssl.chacha_poly() };
    unsigned char key[32], iv[16];
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 32; j++) key[j] = (unsigned char)rnd();
        for (int j = 0; j < 16; j++) iv[j] = (unsigned char)rnd();
        unsigned char *ct = fresh(DATA), *pt = fresh(DATA);  /* write faults inside the cipher */
        unsigned char tag[16], md[32];
        unsigned char *tp = i ? tag : NULL;
        unsigned mdl;
        CHECK(crypt_pass(cs[i], 1, key, iv, data, ct, DATA, tp) == (int)DATA, "encrypt-%d", i);
        CHECK(crypt_pass(cs[i], 0, key, iv, ct, pt, DATA, tp) == (int)DATA, "decrypt-%d", i);
        CHECK(memcmp(pt, data, DATA) == 0, "roundtrip-%d", i);
        CHECK(memcmp(ct, data, 4096) != 0, "not-encrypted-%d", i);
        if (tp) {
            ck_bytes(&ck, tag, 16);
            tag[5] ^= 1;
            CHECK(crypt_pass(cs[i], 0, key, iv, ct, pt, DATA, tp) == -1, "bad-tag-accepted-%d", i);
        }
        digest(ssl.sha256(), ct, DATA, 1, md, &mdl);
        ck_bytes(&ck, md, mdl);
        munmap(ct, DATA);
        munmap(pt, DATA);
    }
}

static void t_modexp(void)
{
    char hex[3][513];  /* base and modulus 2048 bits, exponent 256 bits */
    for (int k = 0; k < 3; k++) {
        int len = k == 1 ? 64 : 512;
        for (int j = 0; j < len; j++) hex[k][j] = "0123456789ABCDEF"[rnd() & 15];
        hex[k][len] = 0;
    }
    hex[2][511] = 'B';  /* odd modulus: Montgomery multiplication */
    hex[2][0] = 'C';    /* full 2048 bits */
    BIGNUM *a = ssl.bn_new(), *p = ssl.bn_new(), *m = ssl.bn_new(), *r = ssl.bn_new();
    BN_CTX *ctx = ssl.bn_ctx_new();
    CHECK(ssl.bn_hex2bn(&a, hex[0]) && ssl.bn_hex2bn(&p, hex[1]) && ssl.bn_hex2bn(&m, hex[2]),
          "bn-hex2bn");
    CHECK(ssl.bn_mod_exp(r, a, p, m, ctx) == 1, "bn-mod-exp");
    char *s = ssl.bn_bn2hex(r);
    CHECK(s != NULL, "bn-bn2hex");
    ck_bytes(&ck, s, strlen(s));
    ssl.crypto_free(s, __FILE__, __LINE__);
    ssl.bn_free(a);
    ssl.bn_free(p);
    ssl.bn_free(m);
    ssl.bn_free(r);
    ssl.bn_ctx_free(ctx);
}

/* ------------------------------------------------------------ zlib, liblzma */

static struct {
    const char *(*version)(void);
    int (*compress2)(unsigned char *, unsigned long *, const unsigned char *, unsigned long, int);
    unsigned long (*bound)(unsigned long);
    int (*uncompress)(unsigned char *, unsigned long *, const unsigned char *, unsigned long);
    unsigned long (*crc32)(unsigned long, const unsigned char *, unsigned);
    unsigned long (*adler32)(unsigned long, const unsigned char *, unsigned);
} z;

static struct {
    const char *(*version)(void);
    int (*encode)(uint32_t, int, const void *, const uint8_t *, size_t, uint8_t *, size_t *, size_t);
    int (*decode)(uint64_t *, uint32_t, const void *, const uint8_t *, size_t *, size_t, uint8_t *,
                  size_t *, size_t);
    size_t (*bound)(size_t);
    uint32_t (*crc32)(const uint8_t *, size_t, uint32_t);
    uint64_t (*crc64)(const uint8_t *, size_t, uint64_t);
} xz;
#define LZMA_CHECK_CRC64 4

static void t_zlib(const unsigned char *in)
{
    void *h = lib("libz.so.1");
    BIND(h, z.version, "zlibVersion");
    BIND(h, z.compress2, "compress2");
    BIND(h, z.bound, "compressBound");
    BIND(h, z.uncompress, "uncompress");
    BIND(h, z.crc32, "crc32");
    BIND(h, z.adler32, "adler32");
    info("zlib %s", z.version());
    ck_u32(&ck, (uint32_t)z.crc32(0, in, ZDATA));
    ck_u32(&ck, (uint32_t)z.adler32(1, in, ZDATA));
    static const int levels[2] = { 1, 6 };
    for (int i = 0; i < 2; i++) {
        unsigned long cap = z.bound(ZDATA), clen = cap, dlen = ZDATA;
        unsigned char *c = fresh(cap), *d = fresh(ZDATA);
        CHECK(z.compress2(c, &clen, in, ZDATA, levels[i]) == 0, "zlib-compress-%d", levels[i]);
        CHECK(z.uncompress(d, &dlen, c, clen) == 0 && dlen == ZDATA, "zlib-uncompress-%d", levels[i]);
        CHECK(memcmp(d, in, ZDATA) == 0, "zlib-roundtrip-%d", levels[i]);
        info("zlib level %d: %lu -> %lu bytes", levels[i], (unsigned long)ZDATA, clen);
        ck_u32(&ck, (uint32_t)clen);
        ck_bytes(&ck, c, clen);
        munmap(c, cap);
        munmap(d, ZDATA);
    }
}

static void t_lzma(const unsigned char *in)
{
    void *h = lib("liblzma.so.5");
    BIND(h, xz.version, "lzma_version_string");
    BIND(h, xz.encode, "lzma_easy_buffer_encode");
    BIND(h, xz.decode, "lzma_stream_buffer_decode");
    BIND(h, xz.bound, "lzma_stream_buffer_bound");
    BIND(h, xz.crc32, "lzma_crc32");
    BIND(h, xz.crc64, "lzma_crc64");
    info("liblzma %s", xz.version());
    ck_u32(&ck, xz.crc32(in, ZDATA, 0));
    ck_u64(&ck, xz.crc64(in, ZDATA, 0));
    size_t cap = xz.bound(ZDATA), clen = 0, ipos = 0, dlen = 0;
    unsigned char *c = fresh(cap), *d = fresh(ZDATA);
    uint64_t memlimit = 64u << 20;
    CHECK(xz.encode(1, LZMA_CHECK_CRC64, NULL, in, ZDATA, c, &clen, cap) == 0, "xz-encode");
    CHECK(xz.decode(&memlimit, 0, NULL, c, &ipos, clen, d, &dlen, ZDATA) == 0 &&
          ipos == clen && dlen == ZDATA, "xz-decode");
    CHECK(memcmp(d, in, ZDATA) == 0, "xz-roundtrip");
    info("xz preset 1: %lu -> %zu bytes", (unsigned long)ZDATA, clen);
    ck_u32(&ck, (uint32_t)clen);
    ck_bytes(&ck, c, clen);
    munmap(c, cap);
    munmap(d, ZDATA);
}

/* ------------------------------------------------------------ data */

/* Text-like bytes: words from a small vocabulary, numbers, now and then a
 * run of random bytes; compresses roughly 3:1. */
static void make_data(unsigned char *p, size_t n)
{
    static const char *const words[] = {
        "the ", "accelerator ", "runs ", "guest ", "code ", "natively ", "while ", "Bochs ",
        "emulates ", "kernel; ", "page ", "fault ", "timer ", "exit ", "i386 ", "glibc\n",
    };
    size_t i = 0;
    while (i < n) {
        uint32_t r = rnd();
        if ((r & 63) == 0) {
            for (unsigned k = 0; k < 16 + (r >> 8) % 48 && i < n; k++) p[i++] = (unsigned char)rnd();
        } else if ((r & 7) == 1) {
            i += (size_t)snprintf((char *)p + i, n - i, "%u ", (unsigned)(r >> 12) % 100000);
            if (i > n) i = n;  /* snprintf's count of a truncated number */
        } else {
            for (const char *w = words[(r >> 4) & 15]; *w && i < n; w++) p[i++] = (unsigned char)*w;
        }
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(void)
{
    suite_init();
    ck_init(&ck);
    bind_crypto();
    unsigned char *data = fresh(DATA), *zero = fresh(ZERO);
    make_data(data, DATA);
    double t0 = now_ms();
    t_digests(data, zero);
    t_ciphers(data);
    t_modexp();
    double t1 = now_ms();
    t_zlib(data);
    double t2 = now_ms();
    t_lzma(data);
    info("libcrypto %.1f ms, zlib %.1f ms, liblzma %.1f ms", t1 - t0, t2 - t1, now_ms() - t2);
    result_ck("deb-libs", &ck);
    return 0;
}
