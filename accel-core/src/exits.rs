//! The header's exit and decline reasons: how a driver exit maps to `PLEX86_ACCEL_EXIT_*`,
//! and the names the statistics give both enums. The tables are keyed by the header's own
//! constants, so a renumbering in `plex86_accel.h` moves the names with it.

use bochs_ffi::raw;
use host_driver::{ExitReason, ExitRecord, SyscallInstruction};

/// Slots of `enum plex86_accel_exit_reason`.
pub const EXIT_REASONS: usize = raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_REASONS as usize;
/// Slots of `enum plex86_accel_decline_reason`.
pub const DECLINE_REASONS: usize =
    raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_REASONS as usize;

/// Every `PLEX86_ACCEL_EXIT_*` with its name in the statistics, in code order.
#[rustfmt::skip]
pub const EXITS: [(u32, &str); EXIT_REASONS] = [
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PAGE_FAULT, "page_fault"),
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_NEEDS_EMULATION, "needs_emulation"),
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_GENERAL_PROTECTION, "general_protection"),
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_INVALID_OPCODE, "invalid_opcode"),
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_DIVIDE_ERROR, "divide_error"),
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_X87_EXCEPTION, "x87_exception"),
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_SIMD_EXCEPTION, "simd_exception"),
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_BREAKPOINT, "breakpoint"),
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_SYSTEM_CALL, "system_call"),
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_RDTSC, "rdtsc"),
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED, "privileged"),
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_SEGMENT_LOAD, "segment_load"),
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_OTHER_EXCEPTION, "other_exception"),
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_BUDGET_EXPIRED, "budget_expired"),
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_CODE_LOG_FULL, "code_log_full"),
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_FILL_LIMIT, "fill_limit"),
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_SINGLE_STEP, "single_step"),
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_CPUID, "cpuid"),
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_CONTAINED_ESCAPE, "contained_escape"),
    (raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_SYSENTER, "sysenter"),
];

/// Every `PLEX86_ACCEL_DECLINE_*` with its name in the statistics, in code order (the header
/// leaves codes unused between the library's and Bochs's reasons).
#[rustfmt::skip]
pub const DECLINES: [(u32, &str); 19] = [
    (raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_NONE, "none"),
    (raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_SHORT_BURST, "short_burst"),
    (raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_UNSUPPORTED_STATE, "unsupported_state"),
    (raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_NO_BUDGET, "no_budget"),
    (raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_DISABLED, "disabled"),
    (raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_BACKOFF, "backoff"),
    (raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_LONG_MODE_64, "long_mode_64"),
    (raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_LONG_MODE_COMPAT, "long_mode_compat"),
    (raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_NOT_USER_MODE, "not_user_mode"),
    (raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_EVENT_PENDING, "event_pending"),
    (raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_DEBUG, "debug"),
    (raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_FPU_UNUSABLE, "fpu_unusable"),
    (raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_EFLAGS, "eflags"),
    (raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_A20_OR_SMM, "a20_or_smm"),
    (raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_LA57, "la57"),
    (raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_LAM, "lam"),
    (raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_USER_CET, "user_cet"),
    (raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_UINTR, "uintr"),
    (raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_PKE, "pke"),
];

/// Names of the exit reasons, indexed by `PLEX86_ACCEL_EXIT_*`.
pub const EXIT_NAMES: [&str; EXIT_REASONS] = {
    let mut names = [""; EXIT_REASONS];
    let mut i = 0;
    while i < EXITS.len() {
        names[EXITS[i].0 as usize] = EXITS[i].1;
        i += 1;
    }
    names
};

/// Names of the decline reasons, indexed by `PLEX86_ACCEL_DECLINE_*` (`None`: unused code).
const DECLINE_NAMES: [Option<&str>; DECLINE_REASONS] = {
    let mut names = [None; DECLINE_REASONS];
    let mut i = 0;
    while i < DECLINES.len() {
        names[DECLINES[i].0 as usize] = Some(DECLINES[i].1);
        i += 1;
    }
    names
};

/// Name of a decline reason (`PLEX86_ACCEL_DECLINE_*`), `None` for unused slots.
pub fn decline_name(reason: usize) -> Option<&'static str> {
    DECLINE_NAMES.get(reason).copied().flatten()
}

/// The header's exit reason for a driver exit (`None` for a guest escape).
pub fn exit_code(reason: &ExitReason) -> Option<u32> {
    use ExitReason as R;
    Some(match reason {
        R::PageFault { .. } => raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PAGE_FAULT,
        R::NeedsEmulation { .. } => raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_NEEDS_EMULATION,
        R::GeneralProtection { .. } => {
            raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_GENERAL_PROTECTION
        }
        R::InvalidOpcode => raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_INVALID_OPCODE,
        R::DivideError => raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_DIVIDE_ERROR,
        R::X87Exception => raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_X87_EXCEPTION,
        R::SimdException => raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_SIMD_EXCEPTION,
        R::SoftwareInterrupt { vector: 0x80 } | R::SystemCall { .. } => {
            raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_SYSTEM_CALL
        }
        R::Breakpoint | R::Overflow | R::SoftwareInterrupt { .. } => {
            raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_BREAKPOINT
        }
        R::Rdtsc { .. } => raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_RDTSC,
        R::Privileged => raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED,
        R::SegmentLoad => raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_SEGMENT_LOAD,
        R::OtherException { .. } => raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_OTHER_EXCEPTION,
        R::BudgetExpired => raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_BUDGET_EXPIRED,
        R::CodeLogFull => raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_CODE_LOG_FULL,
        R::FillLimit => raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_FILL_LIMIT,
        R::SingleStep => raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_SINGLE_STEP,
        R::Cpuid => raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_CPUID,
        R::GuestEscape { .. } => return None,
    })
}

/// The header's exit reason for a run's exit record: [`exit_code`], but a guest escape the
/// executor contained (the stub's: a fresh process, the state for a #GP(0)) is
/// `PLEX86_ACCEL_EXIT_CONTAINED_ESCAPE`. `None`: an escape that ends the VM.
pub fn record_exit_code(rec: &ExitRecord) -> Option<u32> {
    match rec.reason {
        ExitReason::GuestEscape { .. } if rec.escape_contained => {
            Some(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_CONTAINED_ESCAPE)
        }
        ExitReason::SystemCall {
            instruction: SyscallInstruction::Sysenter,
        } if sysenter_without_eip(rec) => {
            Some(raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_SYSENTER)
        }
        ref r => exit_code(r),
    }
}

/// A SYSENTER whose EIP the host kernel discarded but whose registers are whole (the stub's,
/// of compatibility-mode code: ECX intact): Bochs carries it out without fetching it
/// (`PLEX86_ACCEL_EXIT_SYSENTER`). With ECX lost too it cannot be resumed.
pub fn sysenter_without_eip(rec: &ExitRecord) -> bool {
    rec.eip_lost
        && !rec.ecx_clobbered
        && rec.reason
            == ExitReason::SystemCall {
                instruction: SyscallInstruction::Sysenter,
            }
}

/// Whether the statistics name the instruction behind this exit.
pub(crate) fn worth_decoding(reason: u32) -> bool {
    reason == raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_PRIVILEGED
        || reason == raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_SEGMENT_LOAD
        || reason == raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_GENERAL_PROTECTION
        || reason == raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_INVALID_OPCODE
}

#[cfg(test)]
mod tests;
