//! x86 exception vectors, as the kernel reports them in `sigcontext.trapno` (hence `u64`).

/// #DE, divide error.
pub const DE: u64 = 0;
/// #DB, debug (single step, ICEBP, debug registers).
pub const DB: u64 = 1;
/// #BP, breakpoint (INT3, and `INT 3` when its gate allows CPL 3).
pub const BP: u64 = 3;
/// #OF, overflow (INTO, and `INT 4` likewise).
pub const OF: u64 = 4;
/// #TS, invalid TSS.
pub const TS: u64 = 10;
/// #NP, segment not present.
pub const NP: u64 = 11;
/// #GP, general protection.
pub const GP: u64 = 13;
/// #PF, page fault.
pub const PF: u64 = 14;
/// #MF, x87 floating-point error.
pub const MF: u64 = 16;
/// #XM, SIMD floating-point exception.
pub const XM: u64 = 19;
