/*
 * bench-forkexec: fork + exec of the tiny static suite-true program N
 * times, one after another.  suite-true is looked up next to this
 * program (/proc/self/exe, falling back to argv[0]) unless given as
 * argv[2]; argv[1] overrides N.  Result: the number of children that
 * exited with status 0.
 */
#define _GNU_SOURCE
#include "common.h"
#include <libgen.h>
#include <limits.h>
#include <time.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
    suite_init();
    long n = argc > 1 ? atol(argv[1]) : 400;
    char path[PATH_MAX];
    if (argc > 2) {
        snprintf(path, sizeof path, "%s", argv[2]);
    } else {
        char self[PATH_MAX];
        ssize_t l = readlink("/proc/self/exe", self, sizeof self - 1);
        if (l > 0) self[l] = 0;
        else snprintf(self, sizeof self, "%s", argv[0]);
        snprintf(path, sizeof path, "%s/suite-true", dirname(self));
    }
    if (access(path, X_OK)) fail("no-suite-true");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long ok = 0;
    for (long i = 0; i < n; i++) {
        pid_t p = fork();
        if (p < 0) fail("fork");
        if (p == 0) {
            char *args[] = { path, NULL };
            char *env[] = { NULL };
            execve(path, args, env);
            _exit(127);
        }
        int st;
        if (waitpid(p, &st, 0) == p && WIFEXITED(st) && WEXITSTATUS(st) == 0) ok++;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double el = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    info("%ld fork+exec in %.3fs, %.0f us each", n, el, el * 1e6 / (double)n);
    if (ok != n) fail("children-ok-%ld-of-%ld", ok, n);
    result("children%ld", ok);
    return 0;
}
