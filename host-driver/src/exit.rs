//! Exits of a native run.

use crate::protocol::RawExit;
pub use crate::protocol::{EscapeKind, ExitReason, SyscallInstruction};
use std::time::Duration;

/// The result of a native run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit<'a> {
    /// Why the run ended.
    pub reason: ExitReason,
    /// Native (host) time used by the run, including the entry and the exit.
    pub native_time: Duration,
    /// Guest-physical addresses (page aligned) of write-protected pages that guest code wrote
    /// during the run; each is now mapped writable and no longer write-protected.
    pub code_pages_written: &'a [u64],
    /// The reported ECX is not the pre-instruction value (clobbered by SYSCALL).
    pub ecx_clobbered: bool,
    /// EIP (reported as 0) and ECX are lost: the host kernel's compat fast-syscall path
    /// (SYSCALL on AMD hosts, SYSENTER on Intel hosts) discards them before any trap. The
    /// emulator cannot resume exactly; guests must not execute these instructions natively
    /// (see docs/ARCHITECTURE.md).
    pub eip_lost: bool,
    /// Pages the executor mirrored on demand during the run.
    pub demand_fills: u32,
    /// The part of `native_time` those fills took, as the executor measured it (its handler
    /// time plus a calibrated signal round trip per fill): host work, not guest work.
    pub fill_time: Duration,
}

/// Decodes and validates the reason fields of a raw exit. `Err` names the bad field.
pub(crate) fn decode_reason(raw: &RawExit) -> Result<ExitReason, String> {
    ExitReason::decode(raw)
}
