//! The sandboxed executor's own pure part: its system-call policy ([`seccomp`]), as data, a
//! BPF compiler and an interpreter for tests. What the executor decides at run time (the
//! monitor) lives in `plex86-monitor`, which the library's stub driver shares. The binary
//! (`src/bin/plex86-executor/`) holds the process itself: its jail, memory layout, signal
//! trampolines, budget timer and request loop. Everything in this package runs inside the
//! sandbox; it links only `plex86-monitor`, `plex86-protocol` and `guest-paging` of this
//! workspace (checked by `ci/check-crate-graph`).
//!
//! * [`seccomp`]: the system-call policy as data, its BPF program and an interpreter for tests.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

pub mod seccomp;
