/*
 * proc: processes (dynamically linked).
 *
 *  - fork with copy-on-write: parent and child both modify data that was
 *    shared before the fork (globals, heap, private anonymous mapping)
 *    and each sees only its own changes; a MAP_SHARED mapping is seen by
 *    both;
 *  - exit statuses through wait/waitpid: exit codes, death by signal,
 *    stop/continue (WUNTRACED/WCONTINUED), WNOHANG on a running child;
 *  - exec: the program re-executes itself (/proc/self/exe, falling back
 *    to argv[0]) with arguments and an environment variable, the new
 *    image reports back through an inherited pipe fd;
 *  - bulk data through pipes in both directions.
 */
#define _GNU_SOURCE
#include "common.h"
#include <errno.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

static ck_t ck;
#define NDATA 65536
static uint32_t gdata[NDATA];

static void xwrite(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) _exit(90);
        c += w; n -= (size_t)w;
    }
}

static int xread(int fd, void *p, size_t n)
{
    char *c = p;
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, c + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    return (int)got;
}

static uint32_t sum32(const uint32_t *p, size_t n)
{
    uint32_t s = 0;
    for (size_t i = 0; i < n; i++) s = s * 31 + p[i];
    return s;
}

static void t_cow(void)
{
    uint32_t *heap = malloc(NDATA * sizeof(uint32_t));
    uint32_t *priv = mmap(NULL, NDATA * 4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint32_t *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (!heap || priv == MAP_FAILED || shared == MAP_FAILED) fail("alloc");
    for (uint32_t i = 0; i < NDATA; i++) gdata[i] = heap[i] = priv[i] = i * 2654435761u;
    uint32_t orig = sum32(gdata, NDATA);
    shared[0] = 1;

    int go[2], back[2];
    if (pipe(go) || pipe(back)) fail("pipe");
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) fail("fork");
    if (pid == 0) {
        char c;
        if (xread(go[0], &c, 1) != 1) _exit(91);
        /* parent has modified its copies by now: ours must be unchanged */
        uint32_t r[4];
        r[0] = sum32(gdata, NDATA) == orig;
        r[1] = sum32(heap, NDATA) == orig && sum32(priv, NDATA) == orig;
        for (uint32_t i = 0; i < NDATA; i++) { gdata[i] += 1; heap[i] ^= 0xffffffffu; priv[i] = i; }
        r[2] = sum32(gdata, NDATA) ^ sum32(heap, NDATA) ^ sum32(priv, NDATA);
        r[3] = shared[0];           /* parent set it to 2 before "go" */
        shared[1] = 0xc0ffee;
        xwrite(back[1], r, sizeof r);
        _exit(7);
    }
    for (uint32_t i = 0; i < NDATA; i++) { gdata[i] *= 3; heap[i] += 5; priv[i] = ~i; }
    shared[0] = 2;
    if (write(go[1], "g", 1) != 1) fail("go");
    uint32_t r[4];
    if (xread(back[0], r, sizeof r) != sizeof r) fail("cow-read");
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 7) fail("cow-wait");
    if (!r[0] || !r[1]) fail("cow-child-saw-parent-writes");
    if (r[3] != 2 || shared[1] != 0xc0ffee) fail("shared-mapping");
    /* parent's copies carry only its own modifications */
    for (uint32_t i = 0; i < NDATA; i++)
        if (gdata[i] != i * 2654435761u * 3 || heap[i] != i * 2654435761u + 5 || priv[i] != ~i)
            fail("cow-parent-copy");
    ck_u32(&ck, r[2]);
    ck_u32(&ck, sum32(gdata, NDATA) ^ sum32(heap, NDATA) ^ sum32(priv, NDATA));
    close(go[0]); close(go[1]); close(back[0]); close(back[1]);
    free(heap);
    munmap(priv, NDATA * 4);
    munmap(shared, 4096);
}

static void t_wait(void)
{
    static const int codes[] = { 0, 1, 42, 127, 255 };
    for (unsigned i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        fflush(stdout);
        pid_t p = fork();
        if (p == 0) _exit(codes[i]);
        int st;
        if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != codes[i])
            fail("exit-code-%d", codes[i]);
        ck_u32(&ck, (uint32_t)st);
    }
    /* killed by signals; no core files */
    static const int sigs[] = { SIGKILL, SIGTERM, SIGUSR2, SIGABRT };
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        fflush(stdout);
        pid_t p = fork();
        if (p == 0) {
            struct rlimit rl = { 0, 0 };
            setrlimit(RLIMIT_CORE, &rl);
            signal(sigs[i], SIG_DFL);
            raise(sigs[i]);
            _exit(99);
        }
        int st;
        if (waitpid(p, &st, 0) != p || !WIFSIGNALED(st) || WTERMSIG(st) != sigs[i])
            fail("signaled-%d", sigs[i]);
        ck_u32(&ck, (uint32_t)WTERMSIG(st));
    }
    /* WNOHANG on a child blocked in read, stop / continue, then exit */
    {
        int fds[2];
        if (pipe(fds)) fail("pipe");
        fflush(stdout);
        pid_t p = fork();
        if (p == 0) {
            char c;
            close(fds[1]);
            while (read(fds[0], &c, 1) < 0 && errno == EINTR) {}
            _exit(c);
        }
        close(fds[0]);
        int st;
        if (waitpid(p, &st, WNOHANG) != 0) fail("wnohang");
        if (kill(p, SIGSTOP)) fail("sigstop");
        if (waitpid(p, &st, WUNTRACED) != p || !WIFSTOPPED(st) || WSTOPSIG(st) != SIGSTOP)
            fail("wuntraced");
        if (kill(p, SIGCONT)) fail("sigcont");
        if (waitpid(p, &st, WCONTINUED) != p || !WIFCONTINUED(st)) fail("wcontinued");
        if (write(fds[1], "\x21", 1) != 1) fail("wake");
        if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0x21)
            fail("wake-exit");
        close(fds[1]);
        ck_u32(&ck, 0x21);
    }
    /* many children at once, reaped with wait() in any order */
    {
        uint32_t sum = 0;
        for (int i = 0; i < 16; i++) {
            fflush(stdout);
            pid_t p = fork();
            if (p < 0) fail("fork-many");
            if (p == 0) _exit(i * 3 + 1);
        }
        for (int i = 0; i < 16; i++) {
            int st;
            pid_t p = wait(&st);
            if (p <= 0 || !WIFEXITED(st)) fail("wait-many");
            sum += (uint32_t)WEXITSTATUS(st);
        }
        if (sum != 16 * 15 / 2 * 3 + 16) fail("wait-many-sum");
        if (wait(NULL) != -1 || errno != ECHILD) fail("echild");
        ck_u32(&ck, sum);
    }
}

static const char *self_path(const char *argv0)
{
    return access("/proc/self/exe", X_OK) == 0 ? "/proc/self/exe" : argv0;
}

/* exec'd image: argv = self exec-child <fd> <a> <b>; env SUITE_PROC_K */
static int exec_child(int argc, char **argv)
{
    if (argc < 5) return 2;
    int fd = atoi(argv[2]);
    uint32_t a = (uint32_t)strtoul(argv[3], NULL, 0), b = (uint32_t)strtoul(argv[4], NULL, 0);
    const char *k = getenv("SUITE_PROC_K");
    uint32_t r[3] = { a * b + (k ? (uint32_t)atoi(k) : 0), (uint32_t)getppid(), (uint32_t)argc };
    xwrite(fd, r, sizeof r);
    return (int)((a + b) & 0x7f);
}

static void t_exec(const char *argv0)
{
    const char *self = self_path(argv0);
    for (uint32_t i = 0; i < 5; i++) {
        int fds[2];
        if (pipe(fds)) fail("pipe");
        fflush(stdout);
        pid_t p = fork();
        if (p == 0) {
            char fdbuf[16], abuf[16], bbuf[16], kbuf[32];
            close(fds[0]);
            snprintf(fdbuf, sizeof fdbuf, "%d", fds[1]);
            snprintf(abuf, sizeof abuf, "%u", 1000 + i);
            snprintf(bbuf, sizeof bbuf, "0x%x", 77 * i + 3);
            snprintf(kbuf, sizeof kbuf, "SUITE_PROC_K=%u", i * 11);
            char *args[] = { (char *)self, "exec-child", fdbuf, abuf, bbuf, NULL };
            char *env[] = { kbuf, "PATH=/bin:/usr/bin", NULL };
            execve(self, args, env);
            _exit(126);
        }
        close(fds[1]);
        uint32_t r[3];
        if (xread(fds[0], r, sizeof r) != sizeof r) fail("exec-read-%u", i);
        close(fds[0]);
        int st;
        if (waitpid(p, &st, 0) != p || !WIFEXITED(st)) fail("exec-wait");
        uint32_t a = 1000 + i, b = 77 * i + 3;
        if (r[0] != a * b + i * 11 || r[1] != (uint32_t)getpid() || r[2] != 5 ||
            WEXITSTATUS(st) != (int)((a + b) & 0x7f))
            fail("exec-result-%u", i);
        ck_u32(&ck, r[0]); ck_u32(&ck, (uint32_t)WEXITSTATUS(st));
    }
    /* exec of a missing file fails with ENOENT and the process goes on */
    {
        fflush(stdout);
        pid_t p = fork();
        if (p == 0) {
            char *args[] = { "/nonexistent/suite-binary", NULL };
            execv(args[0], args);
            _exit(errno == ENOENT ? 5 : 6);
        }
        int st;
        if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 5) fail("exec-enoent");
    }
}

static void t_pipes(void)
{
    enum { SZ = 256 * 1024 };
    int down[2], up[2];
    if (pipe(down) || pipe(up)) fail("pipe");
    unsigned char *buf = malloc(SZ);
    for (int i = 0; i < SZ; i++) buf[i] = (unsigned char)(i * 131 + (i >> 9));
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        close(down[1]); close(up[0]);
        unsigned char *in = malloc(SZ);
        if (xread(down[0], in, SZ) != SZ) _exit(3);
        for (int i = 0; i < SZ; i++) in[i] = (unsigned char)(in[i] ^ (i & 0xff));
        xwrite(up[1], in, SZ);
        if (getppid() <= 1) _exit(4);
        _exit(0);
    }
    close(down[0]); close(up[1]);
    /* write in odd-sized chunks */
    for (int off = 0; off < SZ;) {
        int n = 4093 + off % 777;
        if (n > SZ - off) n = SZ - off;
        xwrite(down[1], buf + off, (size_t)n);
        off += n;
    }
    close(down[1]);
    unsigned char *back = malloc(SZ);
    if (xread(up[0], back, SZ) != SZ) fail("pipe-back");
    char extra;
    if (read(up[0], &extra, 1) != 0) fail("pipe-eof");
    close(up[0]);
    int st;
    if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0) fail("pipe-child");
    for (int i = 0; i < SZ; i++)
        if (back[i] != (unsigned char)(buf[i] ^ (i & 0xff))) fail("pipe-data-%d", i);
    ck_bytes(&ck, back, SZ);
    free(buf); free(back);
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "exec-child") == 0)
        return exec_child(argc, argv);
    suite_init();
    ck_init(&ck);
    t_cow();
    t_wait();
    t_exec(argv[0]);
    t_pipes();
    result_ck("proc", &ck);
    return 0;
}
