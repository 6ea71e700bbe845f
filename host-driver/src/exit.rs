//! Exits of a native run.

use crate::paging::Access;
use crate::protocol::{self, RawExit, RawReason};
use std::time::Duration;

/// Which system-call instruction caused a [`ExitReason::SystemCall`] exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyscallInstruction {
    /// SYSCALL (0F 05). The instruction clobbered ECX (and R11) before the host saw it: the
    /// reported ECX is not the pre-instruction value (see [`Exit::ecx_clobbered`]).
    Syscall,
    /// SYSENTER (0F 34), on hosts where it reaches the system-call path (Intel). On AMD it is
    /// #UD from compatibility mode and exits as [`ExitReason::InvalidOpcode`].
    Sysenter,
}

/// How guest code escaped compatibility mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EscapeKind {
    /// Guest code was found running in 64-bit mode (it reached the host's 64-bit code selector).
    LongMode,
    /// A 64-bit system call was made from an address below 4 GiB.
    HostSyscall,
}

/// Why a native run ended. The guest state is the one *before* the instruction named here,
/// unless stated otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitReason {
    /// A guest-visible page fault: the guest's page tables (re-walked at the fault) deny the
    /// access. `error_code` is the guest's #PF error code.
    PageFault {
        /// Faulting linear address (the guest's CR2).
        linear: u32,
        /// Access kind.
        access: Access,
        /// Guest #PF error code (P, W, U, RSVD, I/D).
        error_code: u32,
    },
    /// The guest's page tables allow the access but the page cannot be mirrored: it is not
    /// plain RAM (device memory, ROM), it is guest page 0 (below `mmap_min_addr`), or a paging
    /// structure lies outside RAM. The emulator performs the instruction.
    NeedsEmulation {
        /// Linear address.
        linear: u32,
        /// Access kind.
        access: Access,
    },
    /// General protection fault not otherwise classified (e.g. a segment limit violation).
    GeneralProtection {
        /// #GP error code.
        error_code: u32,
    },
    /// Invalid opcode (#UD), including SYSENTER on AMD hosts.
    InvalidOpcode,
    /// Divide error (#DE).
    DivideError,
    /// x87 floating-point exception (#MF), at the waiting x87 instruction.
    X87Exception,
    /// SIMD floating-point exception (#XM).
    SimdException,
    /// INT3.
    Breakpoint,
    /// INT n (including INT 0x80 and INT 3 written as CD 03).
    SoftwareInterrupt {
        /// n.
        vector: u8,
    },
    /// INTO with OF set.
    Overflow,
    /// A system-call instruction.
    SystemCall {
        /// Which one.
        instruction: SyscallInstruction,
    },
    /// RDTSC or RDTSCP (trapped with PR_SET_TSC).
    Rdtsc {
        /// RDTSCP rather than RDTSC.
        rdtscp: bool,
    },
    /// HLT, CLI, STI, IN, OUT, INS, OUTS or another privileged instruction.
    Privileged,
    /// A segment register load or a far control transfer (far JMP/CALL/RET, IRET): the emulator
    /// performs it with the guest's own descriptor tables.
    SegmentLoad,
    /// CPUID, on hosts with CPUID faulting: the emulator answers with the guest CPU model.
    Cpuid,
    /// A single-step trap. Unlike every other reason, the state is *after* an instruction:
    /// the one before EIP ran with EFLAGS.TF set (native code set TF with POPF; entries never
    /// have it), and TF is still set. Its #DB (DR6.BS) is pending: the emulator delivers it
    /// before it emulates anything.
    SingleStep,
    /// Another exception (#DB from ICEBP, #BR, #NP, #SS, #AC, …).
    OtherException {
        /// Vector.
        vector: u8,
        /// Error code, if the exception has one.
        error_code: Option<u32>,
    },
    /// The run's budget is spent (the state is at an instruction boundary).
    BudgetExpired,
    /// The run made the configured number of demand fills
    /// ([`crate::ExecutorConfig::max_fills_per_run`]); the state is at an instruction boundary
    /// and nothing needs emulation.
    FillLimit,
    /// The code-page write log is full; the write that would have been logged has not
    /// happened yet. Handle the logged pages and re-enter.
    CodeLogFull,
    /// Guest code escaped compatibility mode. The executor has been killed; the guest state is
    /// not meaningful. Spawn a new executor to continue.
    GuestEscape {
        /// How.
        kind: EscapeKind,
        /// The host instruction pointer where it was caught.
        address: u64,
        /// Diagnostic: (host signal << 16) | interrupted code selector.
        diagnostic: u32,
    },
}

impl ExitReason {
    /// A one-line description, e.g. for logs. Guest escapes get a clear message.
    pub fn describe(&self) -> String {
        match self {
            ExitReason::GuestEscape { kind: EscapeKind::LongMode, address, .. } => format!(
                "guest escape: guest code reached 64-bit mode (host RIP {address:#x}); executor killed"
            ),
            ExitReason::GuestEscape { kind: EscapeKind::HostSyscall, address, .. } => format!(
                "guest escape: 64-bit host system call from guest address {address:#x}; executor killed"
            ),
            other => format!("{other:?}"),
        }
    }
}

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
    let reason = RawReason::from_u32(raw.reason)
        .ok_or_else(|| format!("unknown exit reason {}", raw.reason))?;
    let vector_u8 = || u8::try_from(raw.vector).map_err(|_| format!("vector {}", raw.vector));
    let access = || {
        crate::protocol::access::decode(raw.access)
            .ok_or_else(|| format!("access kind {}", raw.access))
    };
    Ok(match reason {
        RawReason::PageFault => {
            if raw.error_code & !0x1f != 0 || raw.error_code & 4 == 0 {
                return Err(format!("page-fault error code {:#x}", raw.error_code));
            }
            ExitReason::PageFault {
                linear: raw.linear,
                access: access()?,
                error_code: raw.error_code,
            }
        }
        RawReason::NeedsEmulation => ExitReason::NeedsEmulation {
            linear: raw.linear,
            access: access()?,
        },
        RawReason::GeneralProtection => ExitReason::GeneralProtection {
            error_code: raw.error_code & 0xffff,
        },
        RawReason::InvalidOpcode => ExitReason::InvalidOpcode,
        RawReason::DivideError => ExitReason::DivideError,
        RawReason::X87Exception => ExitReason::X87Exception,
        RawReason::SimdException => ExitReason::SimdException,
        RawReason::Breakpoint => ExitReason::Breakpoint,
        RawReason::SoftwareInterrupt => ExitReason::SoftwareInterrupt {
            vector: vector_u8()?,
        },
        RawReason::Overflow => ExitReason::Overflow,
        RawReason::SystemCall => ExitReason::SystemCall {
            instruction: match raw.vector {
                0 => SyscallInstruction::Syscall,
                1 => SyscallInstruction::Sysenter,
                v => return Err(format!("system-call kind {v}")),
            },
        },
        RawReason::Rdtsc => ExitReason::Rdtsc {
            rdtscp: match raw.vector {
                0 => false,
                1 => true,
                v => return Err(format!("rdtsc kind {v}")),
            },
        },
        RawReason::Privileged => ExitReason::Privileged,
        RawReason::SegmentLoad => ExitReason::SegmentLoad,
        RawReason::Cpuid => ExitReason::Cpuid,
        RawReason::OtherException => {
            let v = vector_u8()?;
            if v >= 32 {
                return Err(format!("exception vector {v}"));
            }
            ExitReason::OtherException {
                vector: v,
                error_code: (raw.flags & protocol::EXIT_HAS_ERROR_CODE != 0)
                    .then_some(raw.error_code),
            }
        }
        RawReason::BudgetExpired => ExitReason::BudgetExpired,
        RawReason::CodeLogFull => ExitReason::CodeLogFull,
        RawReason::FillLimit => ExitReason::FillLimit,
        RawReason::SingleStep => ExitReason::SingleStep,
        RawReason::GuestEscape => ExitReason::GuestEscape {
            kind: match raw.vector {
                protocol::escape::LONG_MODE => EscapeKind::LongMode,
                protocol::escape::HOST_SYSCALL => EscapeKind::HostSyscall,
                v => return Err(format!("escape kind {v}")),
            },
            address: raw.detail,
            diagnostic: raw.error_code,
        },
    })
}
