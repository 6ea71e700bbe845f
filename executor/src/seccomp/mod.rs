//! The executor's seccomp policy, as data ([`POLICY`]), compiled to a classic BPF program
//! ([`build_filter`]) and checked by a small BPF interpreter ([`evaluate`]) in unit tests.
//!
//! Program outline:
//! 1. arch I386 (int 0x80, SYSCALL/SYSENTER from compatibility mode): `RET_TRAP`. The system
//!    call never runs on the host; the SIGSYS becomes a guest exit.
//! 2. arch other than X86_64: kill the process.
//! 3. instruction pointer below 4 GiB + [`SYSCALL_IP_SLACK`] (only guest code lives below 4 GiB,
//!    and the kernel reports the address *after* the instruction, which for one that starts
//!    below 4 GiB can be up to 4 GiB + 14): `RET_TRAP`, reported as a guest escape.
//! 4. x32 numbers: kill.
//! 5. the allowlist, with argument checks where a rule has them: allow.
//! 6. anything else: kill the process (the library reports "seccomp violation").
//!
//! `policy.rs` holds the data (the allowlist and the constants the filter decides by), `bpf.rs`
//! the compiler and the interpreter, `tests.rs` the decision tables.

mod bpf;
mod policy;
pub mod stub;
#[cfg(test)]
mod tests;

pub use bpf::{build_filter, evaluate, SeccompData, SockFilter};
pub use policy::{
    ArgCheck, Rule, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, POLICY, RET_ALLOW, RET_KILL_PROCESS,
    RET_TRAP, SYSCALL_IP_SLACK,
};
