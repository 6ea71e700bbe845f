# Shared by the real-* workload scripts (sourced; busybox sh in the guest, the same shell and
# files in the native oracle's chroot). Each script prints suite-run's protocol lines: info:
# lines, exactly one "result: <token>", exit 0; "result: FAIL-<what>" and exit 1 on a failure.
set -u
W=/workloads
fail() { echo "info: $*" >&2; echo "result: FAIL-$1"; exit 1; }
# scratch NAME: a fresh directory under $TMPDIR to work in (removed by finish)
scratch() {
    T=${TMPDIR:-/tmp}/$1.$$
    rm -rf "$T" && mkdir -p "$T" && cd "$T" || fail scratch "cannot make $T"
}
# digest FILE...: the first 16 hex digits of the SHA-256 of the files' concatenation
digest() { cat "$@" | sha256sum | cut -c1-16; }
finish() { cd / && rm -rf "$T"; }
