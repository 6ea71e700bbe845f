//! The sandboxed executor's pure parts: what it decides, with no system call and no `unsafe`
//! (the monitor reaches the process only through its [`monitor::Host`]).
//! The binary (`src/bin/plex86-executor/`) holds the process itself: its jail, memory layout,
//! signal trampolines, budget timer and request loop. Everything in this package runs inside
//! the sandbox; it links only `plex86-protocol` and `guest-paging` of this workspace (checked
//! by `ci/check-crate-graph`).
//!
//! * [`shadow`]: the mirror of the guest's page tables in the executor's address space.
//! * [`frame`]: the kernel's signal-frame types and the guest entry frame (plain data).
//! * [`monitor`]: the monitor: entry frames, signal classification, exits and demand fills,
//!   over a [`monitor::Host`] the process provides.
//! * [`decode`]: names the instruction behind a #GP or a trap from its bytes.
//! * [`vector`]: the x86 exception vectors the kernel reports.
//! * [`seccomp`]: the system-call policy as data, its BPF program and an interpreter for tests.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

pub mod decode;
pub mod frame;
pub mod monitor;
pub mod seccomp;
pub mod shadow;
pub mod vector;
