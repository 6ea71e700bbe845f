//! Errors of the library.

use std::fmt;

/// How the executor process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeathCause {
    /// Killed by the seccomp filter (a system call outside the allowlist).
    SeccompViolation,
    /// Killed by another signal.
    Signal(i32),
    /// Exited with a code (see [`crate::protocol::exit_code`]).
    ExitCode(i32),
    /// Killed by the library after a protocol violation or a guest escape.
    KilledByLibrary,
}

impl fmt::Display for DeathCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeathCause::SeccompViolation => write!(f, "seccomp violation (killed by SIGSYS)"),
            DeathCause::Signal(s) => write!(f, "killed by signal {s} ({})", describe_signal(*s)),
            DeathCause::ExitCode(c) => {
                write!(
                    f,
                    "exit code {c} ({})",
                    crate::protocol::exit_code::describe(*c)
                )
            }
            DeathCause::KilledByLibrary => write!(f, "killed by the library"),
        }
    }
}

/// What a fatal signal to the executor usually means.
fn describe_signal(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => {
            "SIGKILL: sent by another process, or by the kernel's out-of-memory killer"
        }
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE => {
            "a fault in the executor's own code: a bug"
        }
        libc::SIGABRT => "SIGABRT: the executor aborted",
        libc::SIGTERM | libc::SIGINT | libc::SIGHUP | libc::SIGQUIT => "sent by another process",
        libc::SIGXCPU | libc::SIGXFSZ => "a resource limit was exceeded",
        _ => "an unexpected signal",
    }
}

/// Errors of [`crate::Executor`].
#[derive(Debug)]
pub enum DriverError {
    /// The configuration is invalid.
    InvalidConfig(String),
    /// The executor binary was not found.
    ExecutorNotFound(String),
    /// An operating-system call of the library failed.
    Io(std::io::Error),
    /// The executor binary could not be started, or ended before it was ready.
    CannotStart(String),
    /// The executor failed during setup.
    SetupFailed {
        /// The executor's failure code.
        code: i32,
        /// The executor's message.
        message: String,
    },
    /// The executor process died.
    ExecutorDied(DeathCause),
    /// The executor wrote something invalid into the control region; it has been killed.
    CorruptedSharedMemory(String),
    /// The guest state cannot be run natively by this version; emulate instead.
    UnsupportedState(String),
    /// A 64-bit state whose page tables map pages where the stub executor's region S lies
    /// (at `base`): native code would reach S's pages, not the guest's; emulate instead.
    StubRegionMapped {
        /// Where S is.
        base: u64,
    },
    /// The executor did not answer within its deadline (stopped, starved or stuck); it has
    /// been killed.
    ExecutorUnresponsive(std::time::Duration),
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::InvalidConfig(m) => write!(f, "invalid executor configuration: {m}"),
            DriverError::ExecutorNotFound(m) => write!(f, "executor binary not found: {m}"),
            DriverError::Io(e) => write!(f, "host system call failed: {e}"),
            DriverError::CannotStart(m) => write!(f, "cannot start the executor: {m}"),
            DriverError::SetupFailed { code, message } => {
                write!(f, "executor setup failed (code {code}): {message}")
            }
            DriverError::ExecutorDied(c) => write!(f, "executor died: {c}"),
            DriverError::CorruptedSharedMemory(m) => {
                write!(f, "corrupted shared memory ({m}); executor killed")
            }
            DriverError::UnsupportedState(m) => write!(f, "unsupported guest state: {m}"),
            DriverError::StubRegionMapped { base } => write!(
                f,
                "the guest's page tables map pages where the stub's region is ({base:#x}): \
                 native code would reach the stub's pages instead of the guest's, so it runs \
                 emulated (stub_base= moves the region)"
            ),
            DriverError::ExecutorUnresponsive(d) => write!(
                f,
                "executor did not answer within {:.1} s (stopped or stuck); executor killed",
                d.as_secs_f64()
            ),
        }
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DriverError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for DriverError {
    fn from(e: std::io::Error) -> Self {
        DriverError::Io(e)
    }
}
