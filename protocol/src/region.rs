//! The two writer areas of the control region and what the library sends in a request.

use crate::wire::wire_enum;
use crate::{GuestState, RawExit, MAX_COMMANDS, MAX_RAM_RANGES, MSG_LEN};

/// A plain-RAM range `[start, end)` of guest-physical memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RamRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

wire_enum! {
    /// [`RawCommand::kind`] values.
    pub enum CommandKind ("command kind") {
        /// Drop every mirrored page.
        FlushAll = 1,
        /// Drop every mirrored page that is not global.
        FlushNonGlobal = 2,
        /// Drop the mirrored page of one linear address.
        InvalidatePage = 3,
        /// Write-protect every mirror of one guest-physical page.
        WriteProtectPhys = 4,
    }
}

/// One MMU command in the request.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawCommand {
    /// One of [`cmd`].
    pub kind: u32,
    /// Padding.
    pub pad: u32,
    /// Linear or physical address argument.
    pub addr: u64,
}

wire_enum! {
    /// [`LibArea::req_kind`] values.
    pub enum Request ("request kind") {
        /// Apply the commands, then enter the guest.
        Run = 1,
        /// Apply the commands only.
        Commands = 2,
        /// Exit the executor.
        Shutdown = 3,
    }
}

/// The library-written part of the region. Read-only in the executor.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
#[allow(missing_debug_implementations)]
pub struct LibArea {
    /// [`crate::MAGIC`].
    pub magic: u64,
    /// [`crate::VERSION`].
    pub version: u32,
    /// Process id of the library (the executor's parent), checked after PR_SET_PDEATHSIG.
    pub library_pid: u32,
    /// Size of the guest-RAM memfd.
    pub ram_size: u64,
    /// Number of valid entries in `ram_ranges`.
    pub n_ram_ranges: u32,
    /// Clock for the budget timer: 0 = CLOCK_MONOTONIC, 1 = the executor thread's CPU time.
    pub budget_clock: u32,
    /// Plain-RAM ranges: only pages inside them are mirrored.
    pub ram_ranges: [RamRange; MAX_RAM_RANGES],
    /// Request sequence number and futex word: bumped after a request is written.
    pub req_seq: u32,
    /// One of [`req`].
    pub req_kind: u32,
    /// Budget of host nanoseconds for a run.
    pub budget_ns: u64,
    /// Number of valid entries in `commands`.
    pub n_commands: u32,
    /// Spin iterations before sleeping on the futex (0 = sleep at once).
    pub spin: u32,
    /// Demand fills after which a run ends with [`crate::RawReason::FillLimit`] (0 = no limit).
    pub max_fills: u32,
    /// Padding; zero.
    pub pad0: u32,
    /// MMU commands applied before the entry.
    pub commands: [RawCommand; MAX_COMMANDS],
    /// The native selectors to install ([`crate::native_selector`]), and per-segment
    /// state are derived by the executor from this state.
    pub state: GuestState,
}

wire_enum! {
    /// [`ExecArea::status`] values.
    pub enum Status ("status") {
        /// The executor is starting.
        Starting = 0,
        /// Setup finished; waiting for requests.
        Ready = 1,
        /// A run ended; `exit` and `state` are valid.
        Exited = 2,
        /// A command-only request was applied.
        CommandsDone = 3,
        /// Setup failed; `fail_code` and `msg` say why and the executor exits.
        Failed = 4,
    }
}

/// The executor-written part of the region. Untrusted by the library.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
#[allow(missing_debug_implementations)]
pub struct ExecArea {
    /// Response sequence number and futex word: set to the request's `req_seq` when done
    /// (to 1 when setup finished or failed).
    pub resp_seq: u32,
    /// One of [`status`].
    pub status: u32,
    /// Bytes of the XSAVE image that the executor transfers (from the host signal frame).
    pub xsave_size: u32,
    /// Failure code when `status` is FAILED (also the process exit code).
    pub fail_code: u32,
    /// XSAVE components the host saves in signal frames (the most a guest XCR0 may enable).
    pub xsave_features: u64,
    /// Set to 1 by the executor while it sleeps on `LibArea::req_seq` (the library skips the
    /// futex wake otherwise).
    pub exec_sleeping: u32,
    /// Length of `msg`.
    pub msg_len: u32,
    /// 1 when native CPUID faults (`arch_prctl(ARCH_SET_CPUID, 0)` took effect) and exits as
    /// [`crate::RawReason::Cpuid`]; 0 when the host has no CPUID faulting and native code reads the
    /// host's CPUID. Set at setup.
    pub cpuid_faulting: u32,
    /// UTF-8 failure message.
    pub msg: [u8; MSG_LEN],
    /// The exit record of the last run.
    pub exit: RawExit,
    /// The guest state at the exit (before the instruction that needs emulation).
    pub state: GuestState,
}
