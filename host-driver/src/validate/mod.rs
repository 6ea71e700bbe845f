//! Validation of what crosses the process boundary: the entry state the library hands the
//! executor, and everything the executor reports back after a run.

mod entry;
mod exit;
#[cfg(test)]
mod tests;

pub use entry::validate_entry;
pub use exit::RunContext;
pub(crate) use exit::{check_exit, validate_exit_state};

// EFLAGS bits, for the rules of both directions.
const EFL_RESERVED_ZERO: u32 = (1 << 3) | (1 << 5) | (1 << 15) | 0xffc0_0000;
const EFL_TF: u32 = 1 << 8;
const EFL_IF: u32 = 1 << 9;
const EFL_IOPL: u32 = 3 << 12;
const EFL_NT: u32 = 1 << 14;
const EFL_RF: u32 = 1 << 16;
const EFL_VM: u32 = 1 << 17;
const EFL_VIF: u32 = 1 << 19;
const EFL_VIP: u32 = 1 << 20;
