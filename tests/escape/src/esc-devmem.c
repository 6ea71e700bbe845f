/*
 * Device memory through /dev/mem: the VGA window (0xa0000-0xbffff, Bochs's VGA device), the
 * VGA BIOS ROM (0xc0000) and the system BIOS ROM (0xf0000). None of it is plain RAM, so the
 * accelerator must never map it natively: every access is emulated by Bochs.
 *
 *   esc-devmem data      writes and reads the text-mode buffer at 0xb8000, checksums both
 *                        ROMs, and executes a RET found in the system BIOS ROM
 *   esc-devmem vga-exec  executes from the VGA window. Bochs cannot fetch instructions from
 *                        device memory and stops ("getHostMemAddr vetoed direct read"), with
 *                        or without acceleration.
 */
#include "esc.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <termios.h>

static uint64_t fnv(const volatile uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

static void *map(int fd, off_t phys, size_t len, int prot)
{
    void *p = mmap(NULL, len, prot, MAP_SHARED, fd, phys);
    if (p == MAP_FAILED)
        fail("mmap-devmem-%#lx", (unsigned long)phys);
    return p;
}

int main(int argc, char **argv)
{
    esc_init();
    if (argc != 2)
        fail("usage: esc-devmem data|vga-exec");
    int fd = open("/dev/mem", O_RDWR | O_SYNC);
    if (fd < 0)
        fail("open-dev-mem");
    if (strcmp(argv[1], "vga-exec") == 0) {
        volatile uint8_t *vga = map(fd, 0xa0000, 0x20000, PROT_READ | PROT_WRITE | PROT_EXEC);
        /* text buffer: "mov $0x2a, %eax; ret" */
        static const uint8_t code[] = {0xb8, 0x2a, 0, 0, 0, 0xc3};
        for (unsigned i = 0; i < sizeof code; i++)
            vga[0x18f00 + i] = code[i];
        report("vga-readback", "%016llx", (unsigned long long)fnv(vga + 0x18f00, sizeof code));
        native_evidence();
        tcdrain(1); /* the console has everything before Bochs stops */
        if (accel_seen)
            wait_native(20000000); /* so that the call below is made natively */
        int (*f)(void) = (int (*)(void))(uintptr_t)(vga + 0x18f00);
        report("vga-exec", "returned-%d", f());
        finish();
        return 0;
    }
    if (strcmp(argv[1], "data") != 0)
        fail("unknown-mode-%s", argv[1]);

    volatile uint8_t *vga = map(fd, 0xa0000, 0x20000, PROT_READ | PROT_WRITE);
    volatile uint8_t *text = vga + 0x18000;
    uint8_t saved[256];
    for (unsigned i = 0; i < sizeof saved; i++)
        saved[i] = text[0xe00 + i];
    if (accel_seen) {
        probes_run++;
        probes_native += wait_native(20000000);
    }
    for (unsigned i = 0; i < 256; i++)
        text[0xe00 + i] = (uint8_t)(i * 37 + 11);
    report("vga-text-readback", "%016llx", (unsigned long long)fnv(text + 0xe00, 256));
    uint32_t word;
    memcpy(&word, (const void *)(text + 0xe10), 4);
    report("vga-text-word", "%#x", word);
    for (unsigned i = 0; i < sizeof saved; i++)
        text[0xe00 + i] = saved[i];

    volatile uint8_t *vgarom = map(fd, 0xc0000, 0x8000, PROT_READ);
    report("vga-rom", "sig=%02x%02x fnv=%016llx", vgarom[0], vgarom[1], (unsigned long long)fnv(vgarom, 0x8000));
    volatile uint8_t *bios = map(fd, 0xf0000, 0x10000, PROT_READ | PROT_EXEC);
    report("bios-rom", "fnv=%016llx", (unsigned long long)fnv(bios, 0x10000));
    /* a RET in the BIOS (any mode's RET is 0xc3): call it */
    int found = -1;
    for (unsigned i = 0x1000; i < 0x10000 && found < 0; i++)
        if (bios[i] == 0xc3)
            found = (int)i;
    if (found < 0) {
        report("bios-exec", "no-ret-byte");
    } else {
        if (accel_seen) {
            probes_run++;
            probes_native += wait_native(20000000);
        }
        void (*ret)(void) = (void (*)(void))(uintptr_t)(bios + found);
        ret();
        report("bios-exec", "returned offset=%#x", (unsigned)found);
    }
    native_evidence();
    finish();
    return 0;
}
