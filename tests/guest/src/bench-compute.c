/*
 * bench-compute: pure user-mode CPU work, no system calls in the timed
 * part.  Integer hashing over a cache-resident table, a branchy
 * insertion sort, and x87 double arithmetic (Mandelbrot iterations).
 * Takes about 1 s natively on the reference host; argv[1] overrides the
 * number of rounds.  The result is a checksum of everything computed.
 */
#include "common.h"
#include <time.h>

#define TAB 16384
static uint32_t tab[TAB];

static uint32_t int_kernel(uint32_t seed)
{
    uint32_t h = seed;
    for (int i = 0; i < TAB; i++) {
        h ^= h << 13; h ^= h >> 17; h ^= h << 5;
        uint32_t j = h & (TAB - 1);
        tab[j] = tab[j] * 2654435761u + (tab[i] >> 3) + h;
        h += tab[j] >> 11;
    }
    return h;
}

static uint32_t sort_kernel(uint32_t seed)
{
    uint32_t a[96];
    for (int i = 0; i < 96; i++) {
        seed = seed * 1103515245u + 12345u;
        a[i] = seed >> 8;
    }
    for (int i = 1; i < 96; i++) {
        uint32_t v = a[i];
        int j = i - 1;
        while (j >= 0 && a[j] > v) { a[j + 1] = a[j]; j--; }
        a[j + 1] = v;
    }
    return a[0] ^ a[47] ^ a[95];
}

static uint32_t fp_kernel(int round)
{
    uint32_t total = 0;
    double y0 = -1.2 + (round % 16) * 0.15;
    for (int py = 0; py < 8; py++) {
        for (int px = 0; px < 48; px++) {
            double cr = -2.0 + px * (2.6 / 48), ci = y0 + py * 0.01;
            double zr = 0, zi = 0;
            int it = 0;
            while (it < 64 && zr * zr + zi * zi < 4.0) {
                double t = zr * zr - zi * zi + cr;
                zi = 2 * zr * zi + ci;
                zr = t;
                it++;
            }
            total += (uint32_t)it;
        }
    }
    return total;
}

int main(int argc, char **argv)
{
    suite_init();
    long rounds = argc > 1 ? atol(argv[1]) : 6500;
    for (int i = 0; i < TAB; i++) tab[i] = (uint32_t)i * 0x9e3779b9u;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint32_t acc = 0;
    for (long r = 0; r < rounds; r++) {
        acc = acc * 31 + int_kernel((uint32_t)r + acc);
        acc ^= sort_kernel(acc);
        acc += fp_kernel((int)r);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ck_t ck;
    ck_init(&ck);
    ck_bytes(&ck, tab, sizeof tab);
    ck_u32(&ck, acc);
    info("rounds=%ld elapsed=%.3fs", rounds,
         (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9);
    result("rounds%ld-%016llx", rounds, (unsigned long long)ck.h);
    return 0;
}
