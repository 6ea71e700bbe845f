//! The monitor's pure parts: what an executor decides, with no system call and no `unsafe`
//! (the monitor reaches its process only through its [`monitor::Host`]). Both sides link it:
//! the sandboxed executor (`plex86-executor`), which runs the monitor inside the sandbox, and
//! the library (`host-driver`), whose stub driver runs the same logic outside it (the stub
//! executor, docs/plans/issue14-gate.md). It links only `plex86-protocol` and `guest-paging`
//! of this workspace (checked by `ci/check-crate-graph`).
//!
//! * [`shadow`]: the mirror of the guest's page tables in the executor's address space.
//! * [`frame`]: the kernel's signal-frame types and the guest entry frame (plain data).
//! * [`monitor`]: the monitor: entry frames, signal classification, exits and demand fills,
//!   over a [`monitor::Host`] the process provides.
//! * [`decode`]: names the instruction behind a #GP or a trap from its bytes.
//! * [`vector`]: the x86 exception vectors the kernel reports.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

pub mod decode;
pub mod frame;
pub mod monitor;
pub mod shadow;
pub mod vector;
