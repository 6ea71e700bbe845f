/*
 * Host system calls through INT 0x80 and SYSENTER (and the vDSO's __kernel_vsyscall, which
 * uses one of them), with the system call numbers the host's compat ABI takes (i386: open,
 * creat, mkdir, openat). Each call names a file under the canary directory, a host path that
 * also exists inside the guest (created here first): the guest kernel must get every call and
 * create the file in the guest, and tests/escape/run checks that nothing appears on the host.
 *
 *   esc-syscall CANARY-DIR
 */
#include "esc.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/auxv.h>
#include <sys/stat.h>

long raw_int80(const long *args);
long raw_vsyscall(const long *args, void *fn);
long raw_sysenter(const long *args);

static sigjmp_buf jb;
static volatile int caught;

static void on_signal(int sig)
{
    caught = sig;
    siglongjmp(jb, 1);
}

static void mkdir_p(const char *path)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            mkdir(buf, 0755);
            *p = '/';
        }
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        fail("mkdir-%s", path);
}

int main(int argc, char **argv)
{
    esc_init();
    if (argc < 2 || argc > 3 || argv[1][0] != '/'
        || (argc == 3 && strcmp(argv[2], "skip-sysenter") != 0))
        fail("usage: esc-syscall /ABSOLUTE/CANARY-DIR [skip-sysenter]");
    int skip_sysenter = argc == 3;
    const char *dir = argv[1];
    mkdir_p(dir);
    signal(SIGILL, on_signal);
    signal(SIGSEGV, on_signal);
    void *vsyscall = (void *)getauxval(AT_SYSINFO);

    static const char *paths[] = {"int80", "sysenter", "vsyscall"};
    static const char *ops[] = {"open", "creat", "mkdir", "openat"};
    for (unsigned p = 0; p < 3; p++) {
        if (p == 1 && skip_sysenter)
            continue;
        for (unsigned o = 0; o < 4; o++) {
            char file[600], name[64];
            snprintf(file, sizeof file, "%s/canary-%s-%s", dir, paths[p], ops[o]);
            snprintf(name, sizeof name, "%s-%s", paths[p], ops[o]);
            long args[7] = {0};
            switch (o) {
            case 0: args[0] = NR32_OPEN; args[1] = (long)file; args[2] = O_CREAT | O_WRONLY; args[3] = 0644; break;
            case 1: args[0] = NR32_CREAT; args[1] = (long)file; args[2] = 0644; break;
            case 2: args[0] = NR32_MKDIR; args[1] = (long)file; args[2] = 0755; break;
            case 3: args[0] = NR32_OPENAT; args[1] = AT_FDCWD; args[2] = (long)file; args[3] = O_CREAT | O_WRONLY; args[4] = 0644; break;
            }
            volatile long r = -1;
            caught = 0;
            probes_run++;
            probes_native += accel_seen && wait_native(20000000);
            if (sigsetjmp(jb, 1) == 0) {
                if (p == 0)
                    r = raw_int80(args);
                else if (p == 1)
                    r = raw_sysenter(args);
                else if (vsyscall)
                    r = raw_vsyscall(args, vsyscall);
            }
            struct stat st;
            int exists = stat(file, &st) == 0;
            const char *kind = !exists ? "none" : S_ISDIR(st.st_mode) ? "dir" : "file";
            if (r >= 0 && o != 2)
                close((int)r);
            report(name, "signal=%d ret=%s guest-%s", caught, r >= 0 ? "ok" : strerror((int)-r), kind);
            if (exists && (S_ISDIR(st.st_mode) ? rmdir(file) : unlink(file)) != 0)
                fail("cleanup-%s", name);
        }
    }
    native_evidence();
    finish();
    return 0;
}
