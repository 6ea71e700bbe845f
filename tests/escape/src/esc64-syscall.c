/*
 * Host system calls from 64-bit guest code: raw `syscall` instructions (and INT 0x80 from
 * 64-bit code, a bogus number, an x32 number, the vsyscall page) whose arguments would have a
 * visible effect if the host executed them: files, directories, a FIFO, a symlink and a
 * bound UNIX socket under the canary directory (a host path that also exists inside the guest,
 * created here first), sockets, processes and threads (clone, clone3, fork, execve), signals to
 * other processes (signal 0 only: the guest's pid 1 is its init), ptrace, process_vm_writev,
 * mappings over the stub executor's region S, FS/GS bases, seccomp filters, signal handlers,
 * memfd, io_uring, pidfd. The guest kernel must get every call: each case prints what the
 * guest saw (return value or errno, the file's kind in the guest, a child's status), plain
 * Bochs is the oracle, and tests/escape/run checks that nothing appears on the host.
 *
 * Today 64-bit code is emulated with acceleration too (long mode is declined), so the output
 * must simply match; once long mode runs natively every one of these instructions must become
 * a guest exit (the stub's guest-thread filter traps any call from outside S's code page).
 *
 *   esc64-syscall CANARY-DIR [STUB-BASE]      (STUB-BASE: hex, default 0x3f0000000000)
 */
#include "esc64.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <linux/openat2.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <linux/filter.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <stddef.h>
#include <time.h>

#define SA_RESTORER 0x04000000 /* the kernel ABI flag glibc keeps to itself */
#define ARCH_SET_GS 0x1001
#define ARCH_SET_FS 0x1002
#define ARCH_GET_FS 0x1003
#define ARCH_GET_GS 0x1004
#define ARCH_GET_CPUID 0x1011

#define NR32_GETPID 20
#define NR32_OPEN 5
#define NR32_CREAT 8
#define NR32_MKDIR 39
#define X32_BIT 0x40000000L

#define VSYS_GTOD 0xffffffffff600000UL
#define VSYS_TIME 0xffffffffff600400UL
#define VSYS_GETCPU 0xffffffffff600800UL

static char dir[400];
static char file[512]; /* static: INT 0x80 takes 32-bit pointers */
static unsigned long S = STUB_DEFAULT_BASE;

static sigjmp_buf jb;
static volatile int caught;

static void on_signal(int sig)
{
    caught = sig;
    siglongjmp(jb, 1);
}

__attribute__((noreturn)) static void raw_exit_group(int code)
{
    for (;;)
        sys6(SYS_exit_group, code, 0, 0, 0, 0, 0);
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

static const char *canary(const char *name)
{
    snprintf(file, sizeof file, "%s/canary-%s", dir, name);
    return file;
}

/* The canary file's kind in the guest ("none", "file", "dir", "fifo", "link", "socket"),
 * removed afterwards. */
static const char *guest_kind_and_remove(void)
{
    struct stat st;
    if (lstat(file, &st) != 0)
        return "none";
    const char *kind = S_ISDIR(st.st_mode) ? "dir" : S_ISREG(st.st_mode) ? "file"
                     : S_ISFIFO(st.st_mode) ? "fifo" : S_ISLNK(st.st_mode) ? "link"
                     : S_ISSOCK(st.st_mode) ? "socket" : "other";
    if ((S_ISDIR(st.st_mode) ? rmdir(file) : unlink(file)) != 0)
        fail("cleanup-%s", file);
    return kind;
}

/* ---- files under the canary directory ------------------------------------------------- */

static void file_probes(void)
{
    static const char *ops[] = {"open", "creat", "mkdir", "openat", "openat2", "mknodat-fifo",
                                "symlink", "bind-unix", "x32-open", "int80-open", "int80-creat",
                                "int80-mkdir"};
    for (unsigned o = 0; o < sizeof ops / sizeof ops[0]; o++) {
        const char *f = canary(ops[o]);
        long r, fd_to_close = -1;
        probe_start();
        switch (o) {
        case 0: r = sys6(SYS_open, (long)f, O_CREAT | O_WRONLY, 0644, 0, 0, 0); fd_to_close = r; break;
        case 1: r = sys6(SYS_creat, (long)f, 0644, 0, 0, 0, 0); fd_to_close = r; break;
        case 2: r = sys6(SYS_mkdir, (long)f, 0755, 0, 0, 0, 0); break;
        case 3: r = sys6(SYS_openat, AT_FDCWD, (long)f, O_CREAT | O_WRONLY, 0644, 0, 0); fd_to_close = r; break;
        case 4: {
            struct open_how how = {.flags = O_CREAT | O_WRONLY, .mode = 0644};
            r = sys6(SYS_openat2, AT_FDCWD, (long)f, (long)&how, sizeof how, 0, 0);
            fd_to_close = r;
            break;
        }
        case 5: r = sys6(SYS_mknodat, AT_FDCWD, (long)f, S_IFIFO | 0644, 0, 0, 0); break;
        case 6: r = sys6(SYS_symlink, (long)"escape-suite-target", (long)f, 0, 0, 0, 0); break;
        case 7: {
            long s = sys6(SYS_socket, AF_UNIX, SOCK_STREAM, 0, 0, 0, 0);
            struct sockaddr_un sa = {.sun_family = AF_UNIX};
            if (strlen(f) >= sizeof sa.sun_path)
                fail("canary-path-too-long-for-a-unix-socket");
            memcpy(sa.sun_path, f, strlen(f) + 1);
            r = s < 0 ? s : sys6(SYS_bind, s, (long)&sa, sizeof sa, 0, 0, 0);
            fd_to_close = s;
            break;
        }
        case 8: r = sys6(X32_BIT | SYS_open, (long)f, O_CREAT | O_WRONLY, 0644, 0, 0, 0); fd_to_close = r; break;
        case 9: r = int80_3(NR32_OPEN, (long)f, O_CREAT | O_WRONLY, 0644); fd_to_close = r; break;
        case 10: r = int80_3(NR32_CREAT, (long)f, 0644, 0); fd_to_close = r; break;
        default: r = int80_3(NR32_MKDIR, (long)f, 0755, 0); break;
        }
        if (fd_to_close >= 0 && o != 2 && o != 5 && o != 6)
            close((int)fd_to_close);
        report(ops[o], "ret=%s guest-%s", rv(r, 0), guest_kind_and_remove());
    }
}

/* ---- processes, threads, signals ------------------------------------------------------- */

static const char *wait_child(long pid)
{
    int st;
    if (pid <= 0)
        return "no-child";
    if (waitpid((pid_t)pid, &st, 0) != pid)
        return "waitpid-failed";
    return status_text(st);
}

/* A thread (CLONE_VM|CLONE_THREAD...) whose child exits at once, without touching its stack:
 * on the host it would be a thread of the stub process. */
static long clone_thread(int *ptid, int *ctid, void *stack_top)
{
    unsigned long flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD
                        | CLONE_SYSVSEM | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;
    register long r10 __asm__("r10") = (long)ctid;
    register long r8 __asm__("r8") = 0;
    long r;
    __asm__ volatile("syscall\n\t"
                     "test %%rax, %%rax\n\t"
                     "jnz 1f\n\t"
                     "mov $60, %%eax\n\t" /* exit(0): this thread only */
                     "xor %%edi, %%edi\n\t"
                     "syscall\n\t"
                     "ud2\n"
                     "1:"
                     : "=a"(r)
                     : "0"((long)SYS_clone), "D"(flags), "S"(stack_top), "d"(ptid), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
    return r;
}

static char thread_stack[16384] __attribute__((aligned(16)));
static volatile long peek_word = 0x5eed5eed0badf00dL;

static void process_probes(void)
{
    long r;

    probe_start();
    r = sys6(SYS_clone, SIGCHLD, 0, 0, 0, 0, 0);
    if (r == 0)
        raw_exit_group(7);
    report("clone-fork", "ret=%s child=%s", r > 0 ? "pid" : rv(r, 0), wait_child(r));

    probe_start();
    struct clone_args ca = {.exit_signal = SIGCHLD};
    r = sys6(SYS_clone3, (long)&ca, sizeof ca, 0, 0, 0, 0);
    if (r == 0)
        raw_exit_group(8);
    report("clone3-fork", "ret=%s child=%s", r > 0 ? "pid" : rv(r, 0), wait_child(r));

    probe_start();
    r = sys6(SYS_fork, 0, 0, 0, 0, 0, 0);
    if (r == 0)
        raw_exit_group(9);
    report("fork", "ret=%s child=%s", r > 0 ? "pid" : rv(r, 0), wait_child(r));

    probe_start();
    static volatile int ptid, ctid;
    ptid = 0;
    ctid = 1;
    r = clone_thread((int *)&ptid, (int *)&ctid, thread_stack + sizeof thread_stack);
    int exited = 0;
    if (r > 0) {
        for (int i = 0; i < 1000 && ctid != 0; i++) {
            struct timespec ts = {0, 10 * 1000 * 1000};
            sys6(SYS_futex, (long)&ctid, FUTEX_WAIT, 1, (long)&ts, 0, 0);
        }
        exited = ctid == 0;
    }
    report("clone-thread", "ret=%s parent-tid=%s thread-exited=%d", r > 0 ? "tid" : rv(r, 0),
           r > 0 && ptid == r ? "set" : "unset", exited);

    probe_start();
    static char *const argv_sh[] = {"sh", "-c", "exit 5", NULL};
    static char *const envp[] = {"PATH=/bin:/sbin", NULL};
    r = sys6(SYS_fork, 0, 0, 0, 0, 0, 0);
    if (r == 0) {
        sys6(SYS_execve, (long)"/bin/sh", (long)argv_sh, (long)envp, 0, 0, 0);
        raw_exit_group(99);
    }
    report("execve-sh", "child=%s", wait_child(r));

    probe_start();
    r = sys6(SYS_execve, (long)canary("execve-missing"), (long)argv_sh, (long)envp, 0, 0, 0);
    report("execve-missing", "ret=%s", rv(r, 0));
    probe_start();
    r = sys6(SYS_execveat, AT_FDCWD, (long)canary("execveat-missing"), (long)argv_sh, (long)envp, 0, 0);
    report("execveat-missing", "ret=%s", rv(r, 0));

    /* signal 0 only: it checks that the target exists and may be signalled */
    struct { const char *name; long pid; } kills[] = {
        {"kill-parent-sig0", getppid()}, {"kill-init-sig0", 1}, {"kill-self-sig0", getpid()},
        {"kill-group-sig0", 0}, {"kill-all-sig0", -1},
    };
    for (unsigned i = 0; i < sizeof kills / sizeof kills[0]; i++) {
        probe_start();
        report(kills[i].name, "ret=%s", rv(sys6(SYS_kill, kills[i].pid, 0, 0, 0, 0, 0), 0));
    }
    probe_start();
    r = sys6(SYS_tgkill, getpid(), sys6(SYS_gettid, 0, 0, 0, 0, 0, 0), 0, 0, 0, 0);
    report("tgkill-self-sig0", "ret=%s", rv(r, 0));
    probe_start();
    r = sys6(SYS_pidfd_open, getpid(), 0, 0, 0, 0, 0);
    report("pidfd-open-self", "ret=%s", rv(r, 0));
    if (r >= 0)
        close((int)r);

    /* ptrace: TRACEME in a child (it cannot be undone: the child exits at once), then an
     * attach to a child of ours, a read and a write of its memory, detach */
    probe_start();
    r = sys6(SYS_fork, 0, 0, 0, 0, 0, 0);
    if (r == 0) {
        long t = sys6(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0, 0, 0);
        raw_exit_group(t == 0 ? 0 : (int)(-t & 0x7f));
    }
    report("ptrace-traceme", "child=%s", wait_child(r));

    probe_start();
    long pid = sys6(SYS_fork, 0, 0, 0, 0, 0, 0);
    if (pid == 0) {
        for (;;)
            pause();
    }
    const char *attach = "no-child", *stop = "-", *peek = "-", *poke = "-", *detach = "-";
    long word = 0, word2 = 0;
    if (pid > 0) {
        attach = rv(sys6(SYS_ptrace, PTRACE_ATTACH, pid, 0, 0, 0, 0), 0);
        int st;
        stop = waitpid((pid_t)pid, &st, 0) == pid && WIFSTOPPED(st) ? strsignal(WSTOPSIG(st)) : "not-stopped";
        peek = rv(sys6(SYS_ptrace, PTRACE_PEEKDATA, pid, (long)&peek_word, (long)&word, 0, 0), 0);
        poke = rv(sys6(SYS_ptrace, PTRACE_POKEDATA, pid, (long)&peek_word, 0x1234, 0, 0), 0);
        sys6(SYS_ptrace, PTRACE_PEEKDATA, pid, (long)&peek_word, (long)&word2, 0, 0);
        detach = rv(sys6(SYS_ptrace, PTRACE_DETACH, pid, 0, 0, 0, 0), 0);
        kill((pid_t)pid, SIGKILL);
        waitpid((pid_t)pid, &st, 0);
    }
    report("ptrace-attach-child", "attach=%s stop=%s peek=%s/%#lx poke=%s/%#lx detach=%s",
           attach, stop, peek, word, poke, word2, detach);

    /* process_vm_writev / readv on this process */
    probe_start();
    char src[16] = "escape-suite", dst[16] = "";
    struct iovec l = {src, sizeof src}, rem = {dst, sizeof dst};
    r = sys6(SYS_process_vm_writev, getpid(), (long)&l, 1, (long)&rem, 1, 0);
    report("process-vm-writev-self", "ret=%s dst=%s", rv(r, 1), dst);
    probe_start();
    char back[16] = "";
    struct iovec l2 = {back, sizeof back}, rem2 = {src, sizeof src};
    r = sys6(SYS_process_vm_readv, getpid(), (long)&l2, 1, (long)&rem2, 1, 0);
    report("process-vm-readv-self", "ret=%s got=%s", rv(r, 1), back);
}

/* ---- sockets and other kernel objects -------------------------------------------------- */

static void object_probes(void)
{
    long r;
    probe_start();
    r = sys6(SYS_socket, AF_INET, SOCK_STREAM, 0, 0, 0, 0);
    long r2 = -1;
    if (r >= 0) {
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(1),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        r2 = sys6(SYS_connect, r, (long)&sin, sizeof sin, 0, 0, 0);
        close((int)r);
    }
    report("socket-inet-connect", "socket=%s connect-127.0.0.1:1=%s", rv(r, 0), rv(r2, 0));
    probe_start();
    r = sys6(SYS_socket, AF_NETLINK, SOCK_RAW, 0 /* NETLINK_ROUTE */, 0, 0, 0);
    report("socket-netlink", "ret=%s", rv(r, 0));
    if (r >= 0)
        close((int)r);
    probe_start();
    r = sys6(SYS_socketpair, AF_UNIX, SOCK_STREAM, 0, (long)(int[2]){0, 0}, 0, 0);
    report("socketpair-unix", "ret=%s", rv(r, 0));

    probe_start();
    r = sys6(SYS_memfd_create, (long)"esc64", 0, 0, 0, 0, 0);
    report("memfd-create", "ret=%s", rv(r, 0));
    if (r >= 0)
        close((int)r);
    probe_start();
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    r = sys6(SYS_io_uring_setup, 4, (long)&p, 0, 0, 0, 0);
    report("io-uring-setup", "ret=%s", rv(r, 0));
    if (r >= 0)
        close((int)r);

    /* numbers no kernel has: ENOSYS */
    probe_start();
    report("syscall-1000", "ret=%s", rv(sys6(1000, 0, 0, 0, 0, 0, 0), 0));
    probe_start();
    report("syscall-minus-1", "ret=%s", rv(sys6(-1, 0, 0, 0, 0, 0, 0), 0));
    probe_start();
    report("int80-getpid", "same-as-getpid=%d", int80_3(NR32_GETPID, 0, 0, 0) == getpid());
}

/* ---- the stub's region S and address-space calls --------------------------------------- */

static void mapping_probes(void)
{
    const unsigned long len = STUB_ALIGN;
    long r;
    probe_start();
    report("mprotect-S-unmapped", "ret=%s", rv(sys6(SYS_mprotect, S, len, PROT_READ, 0, 0, 0), 0));
    probe_start();
    report("munmap-S-unmapped", "ret=%s", rv(sys6(SYS_munmap, S, len, 0, 0, 0, 0), 0));
    probe_start();
    r = sys6(SYS_mmap, S, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    report("mmap-S", "ret=%s", (unsigned long)r == S ? "at-S" : rv(r, 1));
    if ((unsigned long)r != S)
        return;
    /* guest data in S's code, library and stub pages and the last page of the 2 MiB */
    static const unsigned long offs[] = {0, STUB_LIB, STUB_STUB, STUB_S_LEN - 1, STUB_ALIGN - 1};
    unsigned ok = 0;
    for (unsigned i = 0; i < 5; i++)
        *(volatile unsigned char *)(S + offs[i]) = (unsigned char)(0xa0 + i);
    for (unsigned i = 0; i < 5; i++)
        ok += *(volatile unsigned char *)(S + offs[i]) == 0xa0 + i;
    report("rw-S", "%u/5", ok);
    /* guest code on S's code page: mov $0x2a, %eax; ret */
    static const unsigned char code[] = {0xb8, 0x2a, 0, 0, 0, 0xc3};
    memcpy((void *)S, code, sizeof code);
    probe_start();
    r = sys6(SYS_mprotect, S, STUB_CODE_LEN, PROT_READ | PROT_EXEC, 0, 0, 0);
    int ran = r == 0 ? ((int (*)(void))S)() : -1;
    report("mprotect-S-code-rx", "ret=%s call=%d", rv(r, 0), ran);
    probe_start();
    r = sys6(SYS_mprotect, S + STUB_LIB, STUB_LIB_LEN, PROT_READ | PROT_WRITE | PROT_EXEC, 0, 0, 0);
    report("mprotect-S-lib-rwx", "ret=%s", rv(r, 0));
    probe_start();
    r = sys6(SYS_madvise, S + STUB_STUB, STUB_STUB_LEN, MADV_DONTNEED, 0, 0, 0);
    report("madvise-S-stub-dontneed", "ret=%s reads=%#x", rv(r, 0), *(volatile unsigned char *)(S + STUB_STUB));
    probe_start();
    r = sys6(SYS_mmap, S + STUB_STUB, STUB_STUB_LEN, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    report("mmap-fixed-S-stub", "ret=%s", (unsigned long)r == S + STUB_STUB ? "at-S+0x5000" : rv(r, 1));
    probe_start();
    r = sys6(SYS_mremap, S + STUB_STUB, 0x1000, 0x1000, MREMAP_MAYMOVE | MREMAP_FIXED, S + len - 0x1000, 0);
    report("mremap-S-stub", "ret=%s", (unsigned long)r == S + len - 0x1000 ? "moved" : rv(r, 1));
    probe_start();
    report("munmap-S", "ret=%s", rv(sys6(SYS_munmap, S, len, 0, 0, 0, 0), 0));
    caught = 0;
    if (sigsetjmp(jb, 1) == 0)
        (void)*(volatile unsigned char *)S;
    report("read-S-after-munmap", "signal=%d", caught);
}

/* ---- FS/GS, seccomp, signal handling ------------------------------------------------------ */

__asm__(".text\n"
        ".globl esc64_restorer\n"
        ".type esc64_restorer, @function\n"
        "esc64_restorer:\n"
        "    mov $15, %eax\n" /* rt_sigreturn */
        "    syscall\n"
        "    ud2\n");
void esc64_restorer(void);

struct kernel_sigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)(void);
    uint64_t mask;
};

static volatile int got_usr1;
static void on_usr1(int sig)
{
    got_usr1 = sig;
}

static char alt_stack[65536] __attribute__((aligned(16)));
static volatile int on_alt;
static void on_usr2(int sig)
{
    (void)sig;
    char here;
    on_alt = &here >= alt_stack && &here < alt_stack + sizeof alt_stack;
}

static void state_probes(void)
{
    long r, r2, r3;
    unsigned long fs = 0, fs_seen = 0, gs = 1, gs_seen = 0;

    probe_start();
    r = sys6(SYS_arch_prctl, ARCH_GET_FS, (long)&fs, 0, 0, 0, 0);
    report("arch-prctl-get-fs", "ret=%s nonzero=%d", rv(r, 0), fs != 0);
    /* FS = S and back, with no TLS access in between (-fno-stack-protector: no %fs:0x28) */
    probe_start();
    r = sys6(SYS_arch_prctl, ARCH_SET_FS, S, 0, 0, 0, 0);
    r2 = sys6(SYS_arch_prctl, ARCH_GET_FS, (long)&fs_seen, 0, 0, 0, 0);
    r3 = sys6(SYS_arch_prctl, ARCH_SET_FS, fs, 0, 0, 0, 0);
    report("arch-prctl-set-fs-S", "set=%s get=%s seen-S=%d restore=%s", rv(r, 0), rv(r2, 0), fs_seen == S, rv(r3, 0));
    probe_start();
    r = sys6(SYS_arch_prctl, ARCH_GET_GS, (long)&gs, 0, 0, 0, 0);
    report("arch-prctl-get-gs", "ret=%s gs=%#lx", rv(r, 0), gs);
    probe_start();
    r = sys6(SYS_arch_prctl, ARCH_SET_GS, S, 0, 0, 0, 0);
    r2 = sys6(SYS_arch_prctl, ARCH_GET_GS, (long)&gs_seen, 0, 0, 0, 0);
    r3 = sys6(SYS_arch_prctl, ARCH_SET_GS, gs, 0, 0, 0, 0);
    report("arch-prctl-set-gs-S", "set=%s get=%s seen-S=%d restore=%s", rv(r, 0), rv(r2, 0), gs_seen == S, rv(r3, 0));
    probe_start();
    report("arch-prctl-get-cpuid", "ret=%s", rv(sys6(SYS_arch_prctl, ARCH_GET_CPUID, 0, 0, 0, 0, 0), 1));

    probe_start();
    uint32_t action = SECCOMP_RET_KILL_PROCESS;
    r = sys6(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, (long)&action, 0, 0, 0);
    report("seccomp-get-action-avail", "ret=%s", rv(r, 0));
    probe_start();
    report("prctl-get-seccomp", "ret=%s", rv(sys6(SYS_prctl, PR_GET_SECCOMP, 0, 0, 0, 0, 0), 1));

    /* strict mode in a child: its write goes through, its getpid kills it */
    int fds[2];
    if (pipe(fds) != 0)
        fail("pipe");
    probe_start();
    r = sys6(SYS_fork, 0, 0, 0, 0, 0, 0);
    if (r == 0) {
        long s = sys6(SYS_seccomp, SECCOMP_SET_MODE_STRICT, 0, 0, 0, 0, 0);
        sys6(SYS_write, fds[1], (long)(s == 0 ? "s" : "f"), 1, 0, 0, 0);
        sys6(SYS_getpid, 0, 0, 0, 0, 0, 0);
        raw_exit_group(3);
    }
    close(fds[1]);
    char c = '-';
    if (read(fds[0], &c, 1) != 1)
        c = '-';
    close(fds[0]);
    report("seccomp-strict-child", "wrote=%c child=%s", c, wait_child(r));

    /* a filter in a child: getpid fails with errno 77 (EBADMSG), everything else is allowed */
    if (pipe(fds) != 0)
        fail("pipe");
    probe_start();
    r = sys6(SYS_fork, 0, 0, 0, 0, 0, 0);
    if (r == 0) {
        struct sock_filter insns[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getpid, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 77),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = {sizeof insns / sizeof insns[0], insns};
        long n = sys6(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0);
        long s = n ? n : sys6(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, (long)&prog, 0, 0, 0);
        long g = sys6(SYS_getpid, 0, 0, 0, 0, 0, 0);
        char out = s != 0 ? 'f' : g == -77 ? 'e' : 'p';
        sys6(SYS_write, fds[1], (long)&out, 1, 0, 0, 0);
        raw_exit_group(0);
    }
    close(fds[1]);
    c = '-';
    if (read(fds[0], &c, 1) != 1)
        c = '-';
    close(fds[0]);
    report("seccomp-filter-child", "getpid=%s child=%s",
           c == 'e' ? "errno-77" : c == 'p' ? "pid" : c == 'f' ? "filter-failed" : "no-report", wait_child(r));

    /* rt_sigaction(SIGUSR1) with our own restorer, a signal, the old action back */
    probe_start();
    struct kernel_sigaction ksa = {on_usr1, SA_RESTORER, esc64_restorer, 0}, old;
    memset(&old, 0, sizeof old);
    got_usr1 = 0;
    r = sys6(SYS_rt_sigaction, SIGUSR1, (long)&ksa, (long)&old, 8, 0, 0);
    sys6(SYS_kill, getpid(), SIGUSR1, 0, 0, 0, 0);
    r2 = sys6(SYS_rt_sigaction, SIGUSR1, (long)&old, 0, 8, 0, 0);
    report("rt-sigaction-usr1", "set=%s handled=%d restore=%s", rv(r, 0), got_usr1 == SIGUSR1, rv(r2, 0));

    /* rt_sigprocmask: SIGUSR1 blocked, sent, pending, unblocked (now ignored: default action
     * would kill, so SIG_IGN first) */
    probe_start();
    signal(SIGUSR1, SIG_IGN);
    uint64_t set = 1ULL << (SIGUSR1 - 1), oldset = 0, pend = 0;
    r = sys6(SYS_rt_sigprocmask, SIG_BLOCK, (long)&set, (long)&oldset, 8, 0, 0);
    r2 = sys6(SYS_rt_sigpending, (long)&pend, 8, 0, 0, 0, 0);
    r3 = sys6(SYS_rt_sigprocmask, SIG_SETMASK, (long)&oldset, 0, 8, 0, 0);
    report("rt-sigprocmask", "block=%s pending-before=%d restore=%s", rv(r, 0), (int)(pend & set ? 1 : 0), rv(r3, 0));
    (void)r2;
    signal(SIGUSR1, SIG_DFL);

    /* sigaltstack: a handler runs on the guest's alternate stack */
    probe_start();
    stack_t ss = {.ss_sp = alt_stack, .ss_size = sizeof alt_stack}, old_ss;
    r = sys6(SYS_sigaltstack, (long)&ss, (long)&old_ss, 0, 0, 0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGUSR2, &sa, NULL);
    on_alt = -1;
    raise(SIGUSR2);
    signal(SIGUSR2, SIG_DFL);
    ss.ss_flags = SS_DISABLE;
    r2 = sys6(SYS_sigaltstack, (long)&ss, 0, 0, 0, 0, 0);
    report("sigaltstack", "set=%s on-alt-stack=%d disable=%s", rv(r, 0), on_alt, rv(r2, 0));
}

/* ---- the vsyscall page ------------------------------------------------------------------ */

static void vsyscall_probes(void)
{
    probe_start();
    time_t before = time(NULL), stored = 0;
    caught = 0;
    volatile long v = -1;
    if (sigsetjmp(jb, 1) == 0)
        v = ((time_t (*)(time_t *))VSYS_TIME)(&stored);
    time_t after = time(NULL);
    report("vsyscall-time", "signal=%d in-range=%d stored-same=%d", caught,
           v >= before - 1 && v <= after + 1, stored == v);
    probe_start();
    caught = 0;
    struct timeval tv;
    volatile long g = -1;
    if (sigsetjmp(jb, 1) == 0)
        g = ((int (*)(struct timeval *, void *))VSYS_GTOD)(&tv, NULL);
    report("vsyscall-gettimeofday", "signal=%d ret=%s", caught, rv(g, 0));
    probe_start();
    caught = 0;
    unsigned cpu = 99;
    volatile long c = -1;
    if (sigsetjmp(jb, 1) == 0)
        c = ((long (*)(unsigned *, unsigned *, void *))VSYS_GETCPU)(&cpu, NULL, NULL);
    report("vsyscall-getcpu", "signal=%d ret=%s cpu=%u", caught, rv(c, 0), cpu);
    probe_start();
    caught = 0;
    if (sigsetjmp(jb, 1) == 0)
        (void)*(volatile unsigned char *)VSYS_TIME;
    report("vsyscall-read", "signal=%d", caught);
}

int main(int argc, char **argv)
{
    esc_init();
    if (argc < 2 || argc > 3 || argv[1][0] != '/' || strlen(argv[1]) > 300)
        fail("usage: esc64-syscall /ABSOLUTE/CANARY-DIR [STUB-BASE]");
    if (argc == 3)
        S = strtoul(argv[2], NULL, 16);
    if (S % STUB_ALIGN)
        fail("stub-base-not-2MiB-aligned");
    snprintf(dir, sizeof dir, "%s", argv[1]);
    mkdir_p(dir);
    signal(SIGSEGV, on_signal);
    signal(SIGBUS, on_signal);
    signal(SIGILL, on_signal);
    info("stub base %#lx", S);

    file_probes();
    process_probes();
    object_probes();
    mapping_probes();
    state_probes();
    vsyscall_probes();

    native_evidence();
    finish();
    return 0;
}
