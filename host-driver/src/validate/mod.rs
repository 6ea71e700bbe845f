//! Validation of what crosses the process boundary: the entry state the library hands the
//! executor, and everything the executor reports back after a run.

mod entry;
mod exit;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests64;
#[cfg(test)]
mod tests_compat;

pub use entry::{validate_entry, validate_entry_for, CodeModes};
pub use exit::RunContext;
pub(crate) use exit::{check_exit, check_reason_against_state, validate_exit_state};

use crate::protocol::{gpr, GuestState};

// RFLAGS bits, for the rules of both directions. Bits 63:22 are reserved in every mode.
const EFL_RESERVED_ZERO: u64 = (1 << 3) | (1 << 5) | (1 << 15) | 0xffff_ffff_ffc0_0000;
const EFL_TF: u64 = 1 << 8;
const EFL_IF: u64 = 1 << 9;
const EFL_IOPL: u64 = 3 << 12;
const EFL_NT: u64 = 1 << 14;
const EFL_RF: u64 = 1 << 16;
const EFL_VM: u64 = 1 << 17;
const EFL_VIF: u64 = 1 << 19;
const EFL_VIP: u64 = 1 << 20;

/// The 32-bit names of RAX..RDI, for messages about 32-bit states.
const LEGACY_GPR_NAMES: [&str; 8] = ["EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI"];

/// Which of EAX..EDI, EIP and EFLAGS has a non-zero upper half: 32-bit code has none, so in a
/// state outside 64-bit mode one is a translation bug (entry) or a lie (exit).
fn upper_half_in_32_bit_state(st: &GuestState) -> Option<String> {
    if let Some(i) = (0..gpr::LEGACY_COUNT).find(|&i| st.gprs[i] >> 32 != 0) {
        return Some(format!(
            "{} {:#x} has an upper half outside 64-bit mode",
            LEGACY_GPR_NAMES[i], st.gprs[i]
        ));
    }
    if st.rip >> 32 != 0 {
        return Some(format!(
            "EIP {:#x} has an upper half outside 64-bit mode",
            st.rip
        ));
    }
    if st.rflags >> 32 != 0 {
        return Some(format!(
            "EFLAGS {:#x} has an upper half outside 64-bit mode",
            st.rflags
        ));
    }
    None
}
