//! Executor exit codes (process exit status), one per fatal cause.

/// The control region or the file descriptors were not as expected.
pub const BAD_SETUP_ARGS: i32 = 10;
/// The parent changed before PR_SET_PDEATHSIG took effect.
pub const PARENT_GONE: i32 = 11;
/// Something of the executor lies below 4 GiB.
pub const LOW_MAPPING: i32 = 12;
/// A setup system call failed.
pub const SETUP_SYSCALL: i32 = 13;
/// The executor panicked.
pub const PANIC: i32 = 14;
/// The library sent an invalid request.
pub const BAD_REQUEST: i32 = 15;
/// The host CPU or kernel lacks a required feature.
pub const UNSUPPORTED_HOST: i32 = 16;
/// Seccomp self-test mode: the forbidden call returned (the filter failed).
pub const SELFTEST_SURVIVED: i32 = 17;
/// Exiting after a guest escape (the executor is not trusted any more).
pub const GUEST_ESCAPED: i32 = 18;

/// Describes an exit code.
pub fn describe(code: i32) -> &'static str {
    match code {
        0 => "normal shutdown",
        BAD_SETUP_ARGS => "bad control region or file descriptors",
        PARENT_GONE => "parent process went away",
        LOW_MAPPING => "executor memory found below 4 GiB",
        SETUP_SYSCALL => "a setup system call failed",
        PANIC => "executor panicked",
        BAD_REQUEST => "invalid request from the library",
        UNSUPPORTED_HOST => "host lacks a required CPU or kernel feature",
        SELFTEST_SURVIVED => "seccomp self-test: forbidden call was not stopped",
        GUEST_ESCAPED => "guest escape",
        _ => "unknown exit code",
    }
}
