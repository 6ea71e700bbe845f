/*
 * Writes to pages Bochs holds decoded code for. A stub "mov $20, %eax; X; ret" sits in a page
 * mapped twice from one memfd: read-write and read-execute. X is an instruction that always
 * leaves native execution, so Bochs emulates it from its decoded copy of the page: INT 0x80
 * (getpid), UD2 (SIGILL), INT3 (SIGTRAP) or HLT (SIGSEGV). Each round rewrites X through the
 * writable alias (or, every third round, through a third, read-write-execute mapping) and
 * calls the stub: the guest must see the instruction it just wrote, never a stale decode.
 *
 *   esc-smc
 */
#include "esc.h"

#include <sys/mman.h>

static sigjmp_buf jb;
static volatile int caught;

static void on_signal(int sig)
{
    caught = sig;
    siglongjmp(jb, 1);
}

int main(void)
{
    esc_init();
    int fd = memfd_create("esc-smc", 0);
    if (fd < 0 || ftruncate(fd, 4096) != 0)
        fail("memfd");
    uint8_t *rw = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    uint8_t *rx = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
    uint8_t *rwx = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_SHARED, fd, 0);
    if (rw == MAP_FAILED || rx == MAP_FAILED || rwx == MAP_FAILED)
        fail("mmap");
    /* mov $20, %eax (getpid); X (2 bytes); ret */
    static const uint8_t head[] = {0xb8, 20, 0, 0, 0};
    static const struct {
        const char *name;
        uint8_t bytes[2];
    } variants[] = {{"int80", {0xcd, 0x80}}, {"ud2", {0x0f, 0x0b}}, {"int3", {0xcc, 0x90}}, {"hlt", {0xf4, 0x90}}};
    memcpy(rw, head, sizeof head);
    rw[7] = 0xc3;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGILL, &sa, NULL);
    sigaction(SIGTRAP, &sa, NULL);
    sigaction(SIGSEGV, &sa, NULL);
    pid_t pid = getpid();
    unsigned wrong = 0, counts[5] = {0};
    char seq[200];
    unsigned n = 0;
    for (unsigned round = 0; round < 120; round++) {
        unsigned v = (round * 7 + round / 4) % 4; /* every variant follows every other */
        uint8_t *w = round % 3 == 2 ? rwx : rw;
        if (accel_seen) {
            probes_run++;
            probes_native += wait_native(20000000);
        }
        w[5] = variants[v].bytes[0];
        w[6] = variants[v].bytes[1];
        caught = 0;
        volatile int ret = -1;
        if (sigsetjmp(jb, 1) == 0) {
            int (*stub)(void) = (int (*)(void))(round % 2 ? rx : rwx);
            ret = stub();
        }
        unsigned seen = caught == SIGILL ? 1 : caught == SIGTRAP ? 2 : caught == SIGSEGV ? 3
                        : caught == 0 && ret == pid ? 0 : 4;
        counts[seen]++;
        wrong += seen != v;
        if (n < sizeof seq - 1)
            seq[n++] = (char)('0' + seen);
    }
    seq[n] = 0;
    report("sequence", "%s", seq);
    report("stale", "%u", wrong);
    report("counts", "int80=%u ud2=%u int3=%u hlt=%u other=%u", counts[0], counts[1], counts[2], counts[3], counts[4]);
    native_evidence();
    finish();
    return 0;
}
