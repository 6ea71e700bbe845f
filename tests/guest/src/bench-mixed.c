/*
 * bench-mixed: a small "real" workload of child processes.
 *
 * Writes a deterministic 16 MiB file (text-like with some noise, so that
 * gzip has real work) into $TMPDIR (or the current directory), then runs
 *     busybox gzip -c  < FILE > FILE.gz
 *     busybox sha256sum FILE FILE.gz
 *     busybox gzip -dc < FILE.gz | busybox sha256sum     (round trip)
 * as child processes and deletes both files.  busybox is $BUSYBOX, or
 * "busybox" from PATH.  Result: the SHA-256 of the input and of the gzip
 * output (gzip -c from a pipe stores no name and no time stamp, so the
 * output is a function of the busybox build only).
 * argv[1] overrides the size in MiB.
 */
#define _GNU_SOURCE
#include "common.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>

static char busybox[PATH_MAX];
static char file[PATH_MAX - 16], gz[PATH_MAX];

static void cleanup(void)
{
    if (file[0]) unlink(file);
    if (gz[0]) unlink(gz);
}

static void find_busybox(void)
{
    const char *e = getenv("BUSYBOX");
    if (e && *e) {
        snprintf(busybox, sizeof busybox, "%s", e);
        if (access(busybox, X_OK)) fail("BUSYBOX-not-executable");
        return;
    }
    const char *path = getenv("PATH");
    if (!path) path = "/bin:/usr/bin";
    while (*path) {
        const char *colon = strchr(path, ':');
        size_t n = colon ? (size_t)(colon - path) : strlen(path);
        snprintf(busybox, sizeof busybox, "%.*s/busybox", (int)n, path);
        if (n && access(busybox, X_OK) == 0) return;
        path += n + (colon ? 1 : 0);
    }
    fail("no-busybox-set-BUSYBOX");
}

/* Runs busybox argv with stdin/stdout redirected to the given fds
 * (-1: inherit).  Returns the pid. */
static pid_t spawn(char *const argv[], int in, int out, int close_fd)
{
    fflush(stdout);
    pid_t p = fork();
    if (p < 0) fail("fork");
    if (p == 0) {
        if (in >= 0) { dup2(in, 0); close(in); }
        if (out >= 0) { dup2(out, 1); close(out); }
        if (close_fd >= 0) close(close_fd);
        execv(busybox, argv);
        _exit(127);
    }
    return p;
}

static void wait_ok(pid_t p, const char *what)
{
    int st;
    while (waitpid(p, &st, 0) < 0)
        if (errno != EINTR) fail("waitpid-%s", what);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        cleanup();
        fail("%s-status-%d", what, st);
    }
}

/* Runs argv with stdin from `in` and returns its stdout (NUL-terminated). */
static char *capture(char *const argv[], int in, const char *what)
{
    int fds[2];
    if (pipe(fds)) fail("pipe");
    pid_t p = spawn(argv, in, fds[1], fds[0]);
    close(fds[1]);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 >= cap) buf = realloc(buf, cap *= 2);
        ssize_t r = read(fds[0], buf + len, cap - len - 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        len += (size_t)r;
    }
    buf[len] = 0;
    close(fds[0]);
    wait_ok(p, what);
    return buf;
}

static int is_hex64(const char *s)
{
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return s[64] == ' ' || s[64] == '\n' || s[64] == 0;
}

static void write_input(size_t size)
{
    static const char *words[] = {
        "the", "guest", "kernel", "page", "table", "fault", "signal", "thread", "pipe",
        "accelerator", "bochs", "native", "instruction", "register", "interrupt", "cache",
        "memory", "process", "schedule", "vector", "x87", "segment", "descriptor", "trap",
    };
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) fail("create-%d", errno);
    enum { CH = 1 << 16 };
    char *buf = malloc(CH);
    uint32_t s = 0x12345678u;
    size_t done = 0;
    while (done < size) {
        size_t n = 0;
        while (n < CH) {
            s = s * 1664525u + 1013904223u;
            uint32_t r = s >> 8;
            if ((r & 31) == 0) {                /* noise: 8 random bytes */
                for (int k = 0; k < 8 && n < CH; k++) {
                    s = s * 1664525u + 1013904223u;
                    buf[n++] = (char)(s >> 24);
                }
            } else {
                const char *w = words[r % (sizeof words / sizeof words[0])];
                while (*w && n < CH) buf[n++] = *w++;
                if (n < CH) buf[n++] = (r & 0x300) == 0x300 ? '\n' : ' ';
            }
        }
        size_t todo = size - done < CH ? size - done : CH;
        if (write(fd, buf, todo) != (ssize_t)todo) fail("write");
        done += todo;
    }
    free(buf);
    if (close(fd)) fail("close");
}

int main(int argc, char **argv)
{
    suite_init();
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 16;
    find_busybox();
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = ".";
    snprintf(file, sizeof file, "%s/bench-mixed.%d.dat", dir, (int)getpid());
    snprintf(gz, sizeof gz, "%s.gz", file);
    write_input(mib << 20);

    int in = open(file, O_RDONLY);
    int out = open(gz, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0) { cleanup(); fail("open"); }
    char *gzip_argv[] = { "busybox", "gzip", "-c", NULL };
    pid_t p = spawn(gzip_argv, in, out, -1);
    close(in);
    close(out);
    wait_ok(p, "gzip");

    char *sha_argv[] = { "busybox", "sha256sum", file, gz, NULL };
    char *sums = capture(sha_argv, -1, "sha256sum");
    char *nl = strchr(sums, '\n');
    if (!is_hex64(sums) || !nl || !is_hex64(nl + 1)) { cleanup(); fail("sha256sum-output"); }
    char h_in[65], h_gz[65];
    memcpy(h_in, sums, 64); h_in[64] = 0;
    memcpy(h_gz, nl + 1, 64); h_gz[64] = 0;

    /* round trip: gzip -dc < FILE.gz | sha256sum */
    int gin = open(gz, O_RDONLY);
    int fds[2];
    if (gin < 0 || pipe(fds)) { cleanup(); fail("open-gz"); }
    char *gunzip_argv[] = { "busybox", "gzip", "-dc", NULL };
    pid_t d = spawn(gunzip_argv, gin, fds[1], fds[0]);
    close(gin);
    close(fds[1]);
    char *sha_stdin_argv[] = { "busybox", "sha256sum", NULL };
    char *rt = capture(sha_stdin_argv, fds[0], "sha256sum-stdin");
    close(fds[0]);
    wait_ok(d, "gunzip");
    if (!is_hex64(rt) || memcmp(rt, h_in, 64)) { cleanup(); fail("roundtrip"); }

    struct stat st;
    if (stat(gz, &st) == 0) info("input %zu MiB, gzip output %lld bytes", mib, (long long)st.st_size);
    cleanup();
    result("%s-%s", h_in, h_gz);
    return 0;
}
