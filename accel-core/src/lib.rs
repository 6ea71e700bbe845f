//! plex86-accel: the library that a Bochs built with `--enable-plex86-accel` loads
//! (`libplex86_accel.so`). It implements the C ABI of `bochs-ffi/include/plex86_accel.h`
//! (its version: `PLEX86_ACCEL_ABI_VERSION`) on top of the host driver, which runs the guest's
//! user-mode code natively in a sandboxed executor process.
//!
//! Layout:
//!
//! * [`ffi`] — the exported `extern "C"` functions: pointer and size validation, a registry
//!   of live handles, `catch_unwind` around everything; nothing else.
//! * [`AccelOps`] — the one interface the C ABI drives, implemented by [`Accelerator`] (the
//!   real thing, over a [`Backend`]) and [`NullAccel`] (declines every entry: for testing the
//!   Bochs patches without an executor; chosen with `PLEX86_ACCEL_BACKEND=null`).
//! * [`Backend`]s: one executor process ([`SpawnedBackend`]: `executor`, `stub`) or, by
//!   default, [`ByMode`]: 32-bit code on today's executor, 64-bit code on the stub executor.
//! * [`state`] — Bochs state ⇄ driver state, including the host-layout XSAVE image.
//! * [`policy`] — the entry policy (pure).
//! * [`mmu`] — the MMU command queue built from Bochs's notifications.
//! * [`exits`] — the header's exit and decline reasons: the driver exit → header code map and
//!   the names the statistics use.
//! * [`stats`], [`cpuid`], [`decode`], [`log`] — statistics, the CPUID/XCR0 comparison, naming
//!   the instruction behind an exit, and the logger.
//!
//! `unsafe` lives only in `ffi.rs`, `ffi/config.rs` and `sys.rs` (see `ci/unsafe-modules`).

#![warn(missing_docs, missing_debug_implementations)]

mod accel;
mod backend;
mod by_mode;
pub mod cpuid;
pub mod decode;
pub mod exits;
pub mod ffi;
pub mod log;
pub mod mmu;
mod null;
pub mod policy;
mod prealloc;
pub mod state;
pub mod stats;
mod sys;

pub use accel::{normalize_ram_map, Accelerator, Config, MAX_RAM_RANGES};
pub use backend::{
    default_executor_location, Backend, ExecutorBackend, Spawnable, SpawnedBackend, Start,
    StubBackend, Which,
};
pub use by_mode::{AutoBackend, ByMode, StartStub};
pub use exits::exit_code;
pub use host_driver::EXECUTOR_NAME;
pub use null::NullAccel;

/// Bochs's CPU state (`plex86_accel_cpu_state`).
pub type CpuState = bochs_ffi::raw::plex86_accel_cpu_state;

/// What `plex86_accel_run` did (the safe form of `plex86_accel_exit`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome<'a> {
    /// Nothing ran and nothing changed.
    Declined {
        /// `PLEX86_ACCEL_DECLINE_*`.
        reason: u32,
        /// Ticks to emulate before asking again (0: any time; [`policy::NEVER_TICKS`]: never).
        retry_after_ticks: u64,
    },
    /// The guest ran natively; the state is the one before the instruction at RIP.
    Ran {
        /// `PLEX86_ACCEL_EXIT_*`.
        reason: u32,
        /// Guest ticks to charge (at least 1).
        ticks: u64,
        /// Segment registers whose descriptor cache Bochs must reload.
        seg_reload: u32,
        /// Physical pages Bochs holds decoded code for that native code wrote.
        code_pages: &'a [u64],
        /// The run's executor held nothing but the guest process's pages (the stub): a state
        /// Bochs cannot vouch for makes it raise #GP(0), not stop.
        contained: bool,
    },
    /// The accelerator failed and disabled itself.
    Failed {
        /// Why.
        message: String,
        /// The guest state may have changed (Bochs must stop).
        lost_native_progress: bool,
    },
}

/// The accelerator interface the C ABI drives (one guest CPU, one thread).
///
/// Reference sides: Bochs is the reference for all guest state on entry and between runs;
/// after a `Ran` outcome the accelerator is the reference for the GPRs, RIP, RFLAGS, the
/// selectors in `seg_reload` and the transferred FPU/vector state (see [`state`]); the guest
/// page tables in RAM are the reference for the native mirror, kept coherent by the
/// notifications.
pub trait AccelOps: Send {
    /// Runs natively from `state` for at most `budget_ticks`, or declines.
    fn run(&mut self, state: &mut CpuState, budget_ticks: u64, user_insns: u64) -> RunOutcome<'_>;
    /// Bochs declined an entry at its hook (`PLEX86_ACCEL_DECLINE_*`), for the statistics.
    fn note_declined(&mut self, reason: u32);
    /// Bochs flushed its TLB: everything (`include_global`) or the non-global entries.
    fn flush_tlb(&mut self, include_global: bool);
    /// INVLPG of `linear` (64-bit in long mode).
    fn invlpg(&mut self, linear: u64);
    /// Bochs holds decoded code from this physical page.
    fn protect_code_page(&mut self, physical: u64);
    /// The plain-RAM ranges changed (`[start, end)` pairs as Bochs gave them).
    fn memory_map_changed(&mut self, ranges: &[(u64, u64)]);
    /// Logs the statistics and writes the JSON file (idempotent; also run on drop).
    fn finish(&mut self);
    /// After a panic inside `run`: whether native code may have run meanwhile.
    fn native_progress_uncertain(&self) -> bool;
    /// Disables native runs (after a library bug); later runs decline with DISABLED.
    fn disable(&mut self, why: &str);
    /// The logger.
    fn log(&self) -> &log::Logger;
    /// Whether native user code reads the host's CPUID, so that Bochs must answer CPL 3 CPUID
    /// with the host's values (`plex86_accel_native_cpuid_is_hosts`).
    fn native_cpuid_is_hosts(&self) -> bool;
}
