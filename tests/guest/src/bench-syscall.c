/*
 * bench-syscall: 100000 getpid and 100000 write(/dev/null, 64 bytes)
 * system calls (through glibc's syscall(), i.e. the vDSO entry).
 * Result: the counts of successful calls and the number of bytes written.
 */
#define _GNU_SOURCE
#include "common.h"
#include <fcntl.h>
#include <time.h>
#include <sys/syscall.h>

int main(int argc, char **argv)
{
    suite_init();
    long n = argc > 1 ? atol(argv[1]) : 100000;
    int fd = open("/dev/null", O_WRONLY);
    if (fd < 0) fail("open-devnull");
    char buf[64];
    memset(buf, 'x', sizeof buf);
    pid_t me = getpid();
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long ok_pid = 0, ok_write = 0;
    unsigned long long bytes = 0;
    for (long i = 0; i < n; i++)
        if (syscall(SYS_getpid) == me) ok_pid++;
    for (long i = 0; i < n; i++) {
        long w = syscall(SYS_write, fd, buf, sizeof buf);
        if (w == (long)sizeof buf) ok_write++;
        if (w > 0) bytes += (unsigned long long)w;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double el = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    info("%ld calls in %.3fs, %.0f ns/call", 2 * n, el, el * 1e9 / (2.0 * n));
    if (ok_pid != n || ok_write != n) fail("getpid%ld-write%ld", ok_pid, ok_write);
    result("getpid%ld-write%ld-bytes%llu", ok_pid, ok_write, bytes);
    return 0;
}
