/*
 * suite-run: runs the guest workload suite and prints the suite protocol.
 *
 *   suite-run [--bin DIR] [--manifest FILE] [--only a,b,c]
 *             [--kind correctness|benchmark|all] [--timeout SECONDS] [--list]
 *
 * Used both as the guest's test driver (PID 1's child, output on the
 * serial console) and natively on the host.  Defaults: --bin is the
 * directory this program lives in, --manifest is "programs" in that
 * directory or its parent.  Each selected program is run in manifest
 * order with fork/exec in its own process group, stdin /dev/null, stdout
 * and stderr captured through one pipe and re-printed line by line:
 *
 *   @@SUITE START
 *   @@BEGIN <name>
 *   ...the program's output lines, verbatim...
 *   @@END <name> status=<exit code, or 128+signal, 124 on timeout> guest_ns=<ns>
 *   @@SUITE DONE programs=<n> failed=<n>
 *
 * guest_ns is CLOCK_MONOTONIC from just before fork to the child's reaping.
 * Every line goes out with a single write(2) (no buffering), because the
 * host timestamps serial-console lines as they arrive.  A program counts
 * as failed if its status is not 0, it printed no "result:" line, or its
 * result starts with "FAIL".  Exit status: 0 if nothing failed, 1 if
 * something did, 2 on usage or manifest errors.
 *
 * Static, freestanding apart from libc; i386 (built by tests/guest/Makefile)
 * but portable.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#define MAXPROGS 256
#define MAXARGS 32
#define MAXLINE 8192

struct prog {
    char *name;
    int benchmark;
    char *args[MAXARGS];
    int nargs;
};

static struct prog progs[MAXPROGS];
static int nprogs;
static int sigchld_pipe[2] = { -1, -1 };

static void out_write(const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(1, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;          /* console gone: nothing useful to do */
        s += w;
        n -= (size_t)w;
    }
}

__attribute__((format(printf, 1, 2)))
static void out_line(const char *fmt, ...)
{
    char buf[MAXLINE + 64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n > sizeof buf - 2) n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    out_write(buf, (size_t)n);
}

__attribute__((noreturn, format(printf, 1, 2)))
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("suite-run: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_sigchld(int sig)
{
    (void)sig;
    int e = errno;
    if (write(sigchld_pipe[1], "c", 1) < 0) { /* pipe full: already signalled */ }
    errno = e;
}

static void load_manifest(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) die("cannot open manifest %s: %s", path, strerror(errno));
    char line[4096];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *save = NULL, *tok[MAXARGS + 3];
        int nt = 0;
        for (char *t = strtok_r(line, " \t\r\n", &save); t; t = strtok_r(NULL, " \t\r\n", &save)) {
            if (nt == MAXARGS + 3) die("%s:%d: too many arguments", path, lineno);
            tok[nt++] = t;
        }
        if (nt == 0) continue;
        if (nt < 3) die("%s:%d: expected <name> <correctness|benchmark> <static|dynamic> [args]",
                        path, lineno);
        if (nprogs == MAXPROGS) die("%s: too many programs", path);
        struct prog *p = &progs[nprogs];
        p->name = strdup(tok[0]);
        if (strcmp(tok[1], "correctness") == 0) p->benchmark = 0;
        else if (strcmp(tok[1], "benchmark") == 0) p->benchmark = 1;
        else die("%s:%d: kind must be correctness or benchmark, not %s", path, lineno, tok[1]);
        if (strcmp(tok[2], "static") && strcmp(tok[2], "dynamic"))
            die("%s:%d: link must be static or dynamic, not %s", path, lineno, tok[2]);
        if (strchr(p->name, '/')) die("%s:%d: bad program name %s", path, lineno, p->name);
        for (int i = 0; i < nprogs; i++)
            if (strcmp(progs[i].name, p->name) == 0) die("%s:%d: duplicate %s", path, lineno, p->name);
        p->nargs = nt - 3;
        for (int i = 3; i < nt; i++) p->args[i - 3] = strdup(tok[i]);
        nprogs++;
    }
    fclose(f);
}

static int in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *s = list; *s;) {
        const char *comma = strchr(s, ',');
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        if (len == n && strncmp(s, name, n) == 0) return 1;
        s += len + (comma ? 1 : 0);
    }
    return 0;
}

/* Splits the collected output into lines and prints them. */
struct linebuf { char buf[MAXLINE]; size_t len; int result_seen, result_fail; };

static void emit_line(struct linebuf *lb, const char *s, size_t n)
{
    if (n >= 8 && memcmp(s, "result: ", 8) == 0) {
        lb->result_seen++;
        if (n >= 12 && memcmp(s + 8, "FAIL", 4) == 0) lb->result_fail = 1;
    }
    char tmp[MAXLINE + 1];
    memcpy(tmp, s, n);
    tmp[n] = '\n';
    out_write(tmp, n + 1);
}

static void feed(struct linebuf *lb, const char *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = data[i];
        if (c == '\n') {
            emit_line(lb, lb->buf, lb->len);
            lb->len = 0;
        } else {
            if (lb->len == sizeof lb->buf) {       /* overlong line: split it */
                emit_line(lb, lb->buf, lb->len);
                lb->len = 0;
            }
            lb->buf[lb->len++] = c;
        }
    }
}

/* Runs one program; returns its status and stores the elapsed time. */
static int run_one(const char *bindir, const struct prog *p, int timeout_s,
                   uint64_t *elapsed_ns, struct linebuf *lb)
{
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", bindir, p->name) >= sizeof path)
        die("path too long: %s/%s", bindir, p->name);
    int fds[2];
    if (pipe(fds)) die("pipe: %s", strerror(errno));
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);

    uint64_t t0 = now_ns();
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        setpgid(0, 0);
        signal(SIGCHLD, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0 && nul != 0) { dup2(nul, 0); close(nul); }
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        if (fds[1] > 2) close(fds[1]);
        close(sigchld_pipe[0]);
        close(sigchld_pipe[1]);
        char *argv[MAXARGS + 2];
        argv[0] = path;
        for (int i = 0; i < p->nargs; i++) argv[i + 1] = p->args[i];
        argv[p->nargs + 1] = NULL;
        execv(path, argv);
        char msg[PATH_MAX + 128];
        int n = snprintf(msg, sizeof msg, "suite-run: cannot execute %s: %s\n", path, strerror(errno));
        if (write(1, msg, (size_t)n) < 0) { /* nothing to do */ }
        _exit(127);
    }
    setpgid(pid, pid);   /* also in the parent: no race with kill(-pid) */
    close(fds[1]);

    int out_fd = fds[0], reaped = 0, timed_out = 0, status = 0;
    uint64_t deadline = t0 + (uint64_t)timeout_s * 1000000000u, drain_deadline = 0;
    char buf[4096];
    while (!reaped || out_fd >= 0) {
        struct pollfd pf[2];
        int np = 0;
        pf[np].fd = sigchld_pipe[0]; pf[np].events = POLLIN; np++;
        if (out_fd >= 0) { pf[np].fd = out_fd; pf[np].events = POLLIN; np++; }
        uint64_t now = now_ns();
        uint64_t until = timed_out ? drain_deadline : deadline;
        int ms = until > now ? (int)((until - now) / 1000000u) + 1 : 0;
        if (ms > 1000) ms = 1000;
        int r = poll(pf, (nfds_t)np, ms);
        if (r < 0 && errno != EINTR) die("poll: %s", strerror(errno));
        if (r > 0 && (pf[0].revents & POLLIN)) {
            while (read(sigchld_pipe[0], buf, sizeof buf) > 0) {}
        }
        if (r > 0 && out_fd >= 0 && (pf[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t n = read(out_fd, buf, sizeof buf);
            if (n > 0) feed(lb, buf, (size_t)n);
            else if (n == 0 || errno != EINTR) { close(out_fd); out_fd = -1; }
        }
        if (!reaped) {
            int st;
            pid_t w = waitpid(pid, &st, WNOHANG);
            if (w == pid) {
                reaped = 1;
                *elapsed_ns = now_ns() - t0;
                if (!timed_out) status = WIFEXITED(st) ? WEXITSTATUS(st)
                                       : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 255;
                /* leftovers of the program's process group would keep the
                 * pipe open: they go too */
                kill(-pid, SIGKILL);
                if (!timed_out) drain_deadline = now_ns() + 10 * 1000000000ull;
            }
        }
        now = now_ns();
        if (!timed_out && !reaped && now >= deadline) {
            timed_out = 1;
            status = 124;
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            drain_deadline = now + 10 * 1000000000ull;
        }
        if (out_fd >= 0 && drain_deadline && now >= drain_deadline) {
            close(out_fd);      /* something keeps the pipe open: give up on it */
            out_fd = -1;
        }
    }
    if (lb->len) {                                 /* unterminated last line */
        emit_line(lb, lb->buf, lb->len);
        lb->len = 0;
    }
    return status;
}

static void usage(void)
{
    fputs("usage: suite-run [--bin DIR] [--manifest FILE] [--only a,b,c]\n"
          "                 [--kind correctness|benchmark|all] [--timeout SECONDS] [--list]\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *bindir = NULL, *manifest = NULL, *only = NULL, *kind = "all";
    int timeout_s = 600, list = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--list")) { list = 1; continue; }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) usage();
        if (i + 1 >= argc) usage();
        if (!strcmp(a, "--bin")) bindir = argv[++i];
        else if (!strcmp(a, "--manifest")) manifest = argv[++i];
        else if (!strcmp(a, "--only")) only = argv[++i];
        else if (!strcmp(a, "--kind")) kind = argv[++i];
        else if (!strcmp(a, "--timeout")) timeout_s = atoi(argv[++i]);
        else usage();
    }
    if (strcmp(kind, "all") && strcmp(kind, "correctness") && strcmp(kind, "benchmark"))
        die("--kind must be correctness, benchmark or all");
    if (timeout_s <= 0) die("--timeout must be a positive number of seconds");

    char selfdir[PATH_MAX], mbuf[PATH_MAX + 16];
    ssize_t l = readlink("/proc/self/exe", selfdir, sizeof selfdir - 1);
    if (l > 0) selfdir[l] = 0;
    else snprintf(selfdir, sizeof selfdir, "%s", argv[0]);
    char *slash = strrchr(selfdir, '/');
    if (slash) *slash = 0; else snprintf(selfdir, sizeof selfdir, ".");
    if (!bindir) bindir = selfdir;
    if (!manifest) {
        snprintf(mbuf, sizeof mbuf, "%s/programs", bindir);
        if (access(mbuf, R_OK)) snprintf(mbuf, sizeof mbuf, "%s/../programs", bindir);
        manifest = mbuf;
    }
    load_manifest(manifest);
    if (only)
        for (const char *s = only; *s;) {
            const char *comma = strchr(s, ',');
            size_t len = comma ? (size_t)(comma - s) : strlen(s);
            int found = 0;
            for (int i = 0; i < nprogs; i++)
                if (strlen(progs[i].name) == len && !strncmp(progs[i].name, s, len)) found = 1;
            if (len && !found) die("--only: no program %.*s in %s", (int)len, s, manifest);
            s += len + (comma ? 1 : 0);
        }

    int sel[MAXPROGS], nsel = 0;
    for (int i = 0; i < nprogs; i++) {
        if (only && !in_list(only, progs[i].name)) continue;
        if (!strcmp(kind, "correctness") && progs[i].benchmark) continue;
        if (!strcmp(kind, "benchmark") && !progs[i].benchmark) continue;
        sel[nsel++] = i;
    }
    if (list) {
        for (int i = 0; i < nsel; i++)
            out_line("%s %s", progs[sel[i]].name, progs[sel[i]].benchmark ? "benchmark" : "correctness");
        return 0;
    }

    if (pipe(sigchld_pipe)) die("pipe: %s", strerror(errno));
    for (int k = 0; k < 2; k++) {
        fcntl(sigchld_pipe[k], F_SETFL, O_NONBLOCK);
        fcntl(sigchld_pipe[k], F_SETFD, FD_CLOEXEC);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigchld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int failed = 0;
    out_line("@@SUITE START");
    for (int k = 0; k < nsel; k++) {
        const struct prog *p = &progs[sel[k]];
        static struct linebuf lb;
        memset(&lb, 0, sizeof lb);
        out_line("@@BEGIN %s", p->name);
        uint64_t ns = 0;
        int status = run_one(bindir, p, timeout_s, &ns, &lb);
        if (status != 0 || lb.result_seen != 1 || lb.result_fail) failed++;
        out_line("@@END %s status=%d guest_ns=%llu", p->name, status, (unsigned long long)ns);
    }
    out_line("@@SUITE DONE programs=%d failed=%d", nsel, failed);
    return failed ? 1 : 0;
}
