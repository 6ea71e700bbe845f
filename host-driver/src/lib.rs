//! Runs a Bochs-emulated i386 guest's user-mode (CPL 3) code natively, in a sandboxed executor
//! process.
//!
//! The library spawns `plex86-executor` ([`Executor::spawn`]), hands it the guest-RAM memfd and
//! a shared control region, and then drives it with [`Executor::run`]: each run loads the full
//! user-visible [`GuestState`], applies [`MmuCommand`]s, runs the guest natively until an
//! instruction needs emulation (or the budget is spent), and returns an [`ExitRecord`], with
//! the state as it was *before* that instruction. See `docs/ARCHITECTURE.md`, section "Host driver".
//!
//! ```no_run
//! use host_driver::{Executor, ExecutorConfig, GuestRam, GuestState, MmuCommand};
//! use std::time::Duration;
//! let ram = GuestRam::new(16 << 20)?;
//! let mut exe = Executor::spawn(ExecutorConfig::new(ram.fd(), ram.size()))?;
//! let mut state = GuestState::default();
//! // ... set up segments, paging and code in `ram` ...
//! let exit = exe.run(&mut state, Duration::from_millis(1), &[MmuCommand::FlushAll])?;
//! println!("{:?} after {:?}", exit.reason, exit.native_time());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs, missing_debug_implementations)]

mod child;
mod driver;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod native;
pub use plex86_protocol as protocol;
pub mod stub;
mod sys;
mod validate;

pub use driver::{
    executor_next_to_module, BudgetClock, Executor, ExecutorConfig, MmuCommand, XsaveInfo,
    DEFAULT_SPIN, EXECUTOR_ENV, EXECUTOR_NAME,
};
pub use error::{DeathCause, DriverError};
pub use guest_paging as paging;
pub use guest_paging::Access;
pub use native::NativeExecutor;
pub use protocol::{CodeLog, EscapeKind, ExitReason, ExitRecord, SyscallInstruction};
pub use protocol::{GuestState, Segment, XsaveImage, SEG_NOT_INSTALLED};
pub use stub::StubExecutor;
pub use sys::GuestRam;
pub use validate::{validate_entry, validate_entry_for, CodeModes};
