//! The exit record: on the wire ([`RawExit`], [`RawReason`], flags) and decoded ([`ExitReason`]).

use crate::wire::wire_enum;
use crate::MAX_CODE_PAGES;

mod reason;
mod record;
pub use reason::{EscapeKind, ExitReason, SyscallInstruction};
pub use record::{CodeLog, CodeLogFull, ExitRecord};

wire_enum! {
    /// [`RawExit::reason`] values: the wire codes of [`ExitReason`]'s variants.
    pub enum RawReason ("exit reason") {
        /// Guest-visible page fault: `linear`, `access`, `error_code`.
        PageFault = 1,
        /// An access the executor cannot mirror (device memory, ROM, page 0): `linear`, `access`.
        NeedsEmulation = 2,
        /// #GP not otherwise classified: `error_code`.
        GeneralProtection = 3,
        /// #UD.
        InvalidOpcode = 4,
        /// #DE.
        DivideError = 5,
        /// #MF.
        X87Exception = 6,
        /// #XM.
        SimdException = 7,
        /// INT3.
        Breakpoint = 8,
        /// INT n: `vector`.
        SoftwareInterrupt = 9,
        /// INTO.
        Overflow = 10,
        /// SYSCALL (`vector` = 0) or SYSENTER (`vector` = 1).
        SystemCall = 11,
        /// RDTSC (`vector` = 0) or RDTSCP (`vector` = 1).
        Rdtsc = 12,
        /// HLT/CLI/STI/IN/OUT or another privileged instruction.
        Privileged = 13,
        /// Segment register load or far control transfer.
        SegmentLoad = 14,
        /// Any other exception: `vector`, `error_code` (flag bit 0: error code valid).
        OtherException = 15,
        /// The budget is spent.
        BudgetExpired = 16,
        /// The code-page log is full (the faulting write has not happened yet).
        CodeLogFull = 17,
        /// Guest code escaped compatibility mode: `vector` = escape kind, `detail` = address.
        GuestEscape = 18,
        /// The run made [`crate::LibArea::max_fills`] demand fills (the last faulting access is mirrored
        /// now and has not happened yet).
        FillLimit = 19,
        /// A single-step trap: the instruction before `eip` ran with EFLAGS.TF set (native code
        /// set it with POPF). The state is *after* that instruction, TF set; its #DB is pending.
        SingleStep = 20,
        /// CPUID, trapped with CPUID faulting (`ExecArea::cpuid_faulting`).
        Cpuid = 21,    }
}

/// [`RawExit::flags`] bit: `error_code` is valid (OtherException).
pub const EXIT_HAS_ERROR_CODE: u32 = 1;
/// [`RawExit::flags`] bit: ECX was clobbered by the instruction and is not the pre-instruction
/// value (SYSCALL).
pub const EXIT_ECX_CLOBBERED: u32 = 2;

/// [`RawExit::flags`] bit: EIP and ECX are not the pre-instruction values: the host kernel's
/// compat fast-syscall path (SYSCALL on AMD, SYSENTER on Intel) replaced them before the
/// executor could see them. EIP is reported as 0. If the guest stack at ESP was not mapped,
/// the kernel did not even make (or trap) the call and EAX holds -EFAULT.
pub const EXIT_EIP_LOST: u32 = 4;

/// Escape kinds in [`RawExit::vector`] for [`RawReason::GuestEscape`].
pub mod escape {
    /// Guest code was found running in 64-bit mode (CS 0x33 or RIP above 4 GiB).
    pub const LONG_MODE: u32 = 1;
    /// A 64-bit system call was made from an address below 4 GiB.
    pub const HOST_SYSCALL: u32 = 2;
    /// The stub's process was tampered with (the stub executor's library side only).
    pub const STUB_TAMPERED: u32 = 3;
}

/// Access kinds in [`RawExit::access`].
pub mod access {
    /// Data read.
    pub const READ: u32 = 0;
    /// Data write.
    pub const WRITE: u32 = 1;
    /// Instruction fetch.
    pub const FETCH: u32 = 2;

    use guest_paging::Access;

    /// The wire value of an access kind.
    pub fn encode(a: Access) -> u32 {
        match a {
            Access::Read => READ,
            Access::Write => WRITE,
            Access::Fetch => FETCH,
        }
    }
    /// The access kind of a wire value; `None` for anything else.
    pub fn decode(v: u32) -> Option<Access> {
        match v {
            READ => Some(Access::Read),
            WRITE => Some(Access::Write),
            FETCH => Some(Access::Fetch),
            _ => None,
        }
    }
}

/// The exit record written by the executor.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawExit {
    /// A [`RawReason`] value.
    pub reason: u32,
    /// Vector / sub-kind (see [`RawReason`]).
    pub vector: u32,
    /// Error code where the reason has one.
    pub error_code: u32,
    /// Access kind for memory exits ([`access`]).
    pub access: u32,
    /// Linear address for memory exits (64 bits: long mode).
    pub linear: u64,
    /// Extra detail (escape address).
    pub detail: u64,
    /// Native time used by the run, in nanoseconds.
    pub native_ns: u64,
    /// The part of `native_ns` spent on demand fills (at most `native_ns`): the executor's
    /// measured handler time plus, per fill, its signal delivery and return as calibrated at
    /// start-up.
    pub fill_ns: u64,
    /// Number of valid entries in `code_pages`.
    pub n_code_pages: u32,
    /// Pages mirrored on demand during the run (host #PF → walk → mmap); informational.
    pub demand_fills: u32,
    /// `EXIT_*` flags.
    pub flags: u32,
    /// Padding; zero.
    pub reserved: u32,
    /// Guest-physical addresses of write-protected pages written natively during the run.
    pub code_pages: [u64; MAX_CODE_PAGES],
}

impl RawExit {
    /// An all-zero record.
    pub const ZERO: RawExit = RawExit {
        reason: 0,
        vector: 0,
        error_code: 0,
        access: 0,
        linear: 0,
        detail: 0,
        native_ns: 0,
        fill_ns: 0,
        n_code_pages: 0,
        demand_fills: 0,
        flags: 0,
        reserved: 0,
        code_pages: [0; MAX_CODE_PAGES],
    };
}
