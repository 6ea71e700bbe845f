//! Why a native run ended, as both sides see it, and its encoding in [`RawExit`]: the
//! executor encodes, the library decodes and validates.

use super::{access, escape, RawExit, RawReason, EXIT_HAS_ERROR_CODE};
use guest_paging::Access;

/// Which system-call instruction caused a [`ExitReason::SystemCall`] exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyscallInstruction {
    /// SYSCALL (0F 05). The instruction clobbered ECX (and R11) before the host saw it: the
    /// reported ECX is not the pre-instruction value (see the exit's `ecx_clobbered`).
    Syscall,
    /// SYSENTER (0F 34), on hosts where it reaches the system-call path (Intel). On AMD it is
    /// #UD from compatibility mode and exits as [`ExitReason::InvalidOpcode`].
    Sysenter,
}

/// How guest code escaped compatibility mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EscapeKind {
    /// Guest code was found running in a code mode other than its entry's: 32-bit code in
    /// 64-bit mode (it reached the host's 64-bit code selector), or 64-bit code outside it (a
    /// far transfer to another host selector).
    LongMode,
    /// A 64-bit system call was made from an address below 4 GiB.
    HostSyscall,
    /// The stub executor's process was tampered with during the run (its library side
    /// reports this kind, never the monitor): it published a protocol word no honest stub
    /// writes, or its filter killed it for a call the stub's own code never makes. Guest code
    /// reaches S's pages where its tables map nothing (docs/ARCHITECTURE.md, "What leaks").
    StubTampered,
}

/// Why a native run ended. The guest state is the one *before* the instruction named here,
/// unless stated otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitReason {
    /// A guest-visible page fault: the guest's page tables (re-walked at the fault) deny the
    /// access. `error_code` is the guest's #PF error code.
    PageFault {
        /// Faulting linear address (the guest's CR2; 64 bits in long mode).
        linear: u64,
        /// Access kind.
        access: Access,
        /// Guest #PF error code (P, W, U, RSVD, I/D).
        error_code: u32,
    },
    /// The guest's page tables allow the access but the page cannot be mirrored: it is not
    /// plain RAM (device memory, ROM), it is guest page 0 (below `mmap_min_addr`), or a paging
    /// structure lies outside RAM. The emulator performs the instruction.
    NeedsEmulation {
        /// Linear address (64 bits in long mode).
        linear: u64,
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
    /// (`host_driver::ExecutorConfig::max_fills_per_run`); the state is at an instruction boundary
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
            ExitReason::GuestEscape { kind: EscapeKind::StubTampered, .. } => {
                "guest escape: the stub's process was tampered with (a protocol word no honest stub writes, or a call its filter kills); executor killed".to_string()
            }
            other => format!("{other:?}"),
        }
    }
}

impl ExitReason {
    /// Decodes and validates the reason fields of a raw exit. `Err` names the bad field.
    pub fn decode(raw: &RawExit) -> Result<ExitReason, String> {
        let reason = RawReason::from_u32(raw.reason)
            .ok_or_else(|| format!("unknown exit reason {}", raw.reason))?;
        let vector_u8 = || u8::try_from(raw.vector).map_err(|_| format!("vector {}", raw.vector));
        let access =
            || access::decode(raw.access).ok_or_else(|| format!("access kind {}", raw.access));
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
                    error_code: (raw.flags & EXIT_HAS_ERROR_CODE != 0).then_some(raw.error_code),
                }
            }
            RawReason::BudgetExpired => ExitReason::BudgetExpired,
            RawReason::CodeLogFull => ExitReason::CodeLogFull,
            RawReason::FillLimit => ExitReason::FillLimit,
            RawReason::SingleStep => ExitReason::SingleStep,
            RawReason::GuestEscape => ExitReason::GuestEscape {
                kind: match raw.vector {
                    escape::LONG_MODE => EscapeKind::LongMode,
                    escape::HOST_SYSCALL => EscapeKind::HostSyscall,
                    escape::STUB_TAMPERED => EscapeKind::StubTampered,
                    v => return Err(format!("escape kind {v}")),
                },
                address: raw.detail,
                diagnostic: raw.error_code,
            },
        })
    }
}

impl ExitReason {
    /// The linear address of a memory exit ([`ExitReason::PageFault`],
    /// [`ExitReason::NeedsEmulation`]).
    pub fn linear(&self) -> Option<u64> {
        match *self {
            ExitReason::PageFault { linear, .. } | ExitReason::NeedsEmulation { linear, .. } => {
                Some(linear)
            }
            _ => None,
        }
    }

    /// Whether the library kills the executor after this exit (a guest escape: the process
    /// can no longer be trusted).
    pub fn ends_executor(&self) -> bool {
        matches!(self, ExitReason::GuestEscape { .. })
    }

    /// The wire code of this reason.
    pub fn raw(&self) -> RawReason {
        match self {
            ExitReason::PageFault { .. } => RawReason::PageFault,
            ExitReason::NeedsEmulation { .. } => RawReason::NeedsEmulation,
            ExitReason::GeneralProtection { .. } => RawReason::GeneralProtection,
            ExitReason::InvalidOpcode => RawReason::InvalidOpcode,
            ExitReason::DivideError => RawReason::DivideError,
            ExitReason::X87Exception => RawReason::X87Exception,
            ExitReason::SimdException => RawReason::SimdException,
            ExitReason::Breakpoint => RawReason::Breakpoint,
            ExitReason::SoftwareInterrupt { .. } => RawReason::SoftwareInterrupt,
            ExitReason::Overflow => RawReason::Overflow,
            ExitReason::SystemCall { .. } => RawReason::SystemCall,
            ExitReason::Rdtsc { .. } => RawReason::Rdtsc,
            ExitReason::Privileged => RawReason::Privileged,
            ExitReason::SegmentLoad => RawReason::SegmentLoad,
            ExitReason::Cpuid => RawReason::Cpuid,
            ExitReason::SingleStep => RawReason::SingleStep,
            ExitReason::OtherException { .. } => RawReason::OtherException,
            ExitReason::BudgetExpired => RawReason::BudgetExpired,
            ExitReason::FillLimit => RawReason::FillLimit,
            ExitReason::CodeLogFull => RawReason::CodeLogFull,
            ExitReason::GuestEscape { .. } => RawReason::GuestEscape,
        }
    }

    /// Writes this reason into `raw`: the reason code and the fields it uses (`vector`,
    /// `error_code`, `linear`, `access`, `detail`, the `EXIT_HAS_ERROR_CODE` flag); the other
    /// fields and flags are left as they are. [`ExitReason::decode`] reads back the same value.
    pub fn encode_into(&self, raw: &mut RawExit) {
        raw.reason = self.raw() as u32;
        raw.flags &= !EXIT_HAS_ERROR_CODE;
        match *self {
            ExitReason::PageFault {
                linear,
                access: a,
                error_code,
            } => {
                raw.linear = linear;
                raw.access = access::encode(a);
                raw.error_code = error_code;
            }
            ExitReason::NeedsEmulation { linear, access: a } => {
                raw.linear = linear;
                raw.access = access::encode(a);
            }
            ExitReason::GeneralProtection { error_code } => raw.error_code = error_code,
            ExitReason::SoftwareInterrupt { vector } => raw.vector = u32::from(vector),
            ExitReason::SystemCall { instruction } => {
                raw.vector = match instruction {
                    SyscallInstruction::Syscall => 0,
                    SyscallInstruction::Sysenter => 1,
                }
            }
            ExitReason::Rdtsc { rdtscp } => raw.vector = u32::from(rdtscp),
            ExitReason::OtherException { vector, error_code } => {
                raw.vector = u32::from(vector);
                if let Some(e) = error_code {
                    raw.error_code = e;
                    raw.flags |= EXIT_HAS_ERROR_CODE;
                }
            }
            ExitReason::GuestEscape {
                kind,
                address,
                diagnostic,
            } => {
                raw.vector = match kind {
                    EscapeKind::LongMode => escape::LONG_MODE,
                    EscapeKind::HostSyscall => escape::HOST_SYSCALL,
                    EscapeKind::StubTampered => escape::STUB_TAMPERED,
                };
                raw.detail = address;
                raw.error_code = diagnostic;
            }
            ExitReason::InvalidOpcode
            | ExitReason::DivideError
            | ExitReason::X87Exception
            | ExitReason::SimdException
            | ExitReason::Breakpoint
            | ExitReason::Overflow
            | ExitReason::Privileged
            | ExitReason::SegmentLoad
            | ExitReason::Cpuid
            | ExitReason::SingleStep
            | ExitReason::BudgetExpired
            | ExitReason::FillLimit
            | ExitReason::CodeLogFull => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EXIT_ECX_CLOBBERED;

    /// One value of every variant (the match has no wildcard: a new variant must be added here).
    fn samples() -> Vec<ExitReason> {
        use ExitReason::*;
        let all = [
            PageFault {
                linear: 0x0804_8123,
                access: Access::Write,
                error_code: 7,
            },
            NeedsEmulation {
                linear: 0x7fff_f7a0_0000,
                access: Access::Fetch,
            },
            GeneralProtection { error_code: 0x1234 },
            InvalidOpcode,
            DivideError,
            X87Exception,
            SimdException,
            Breakpoint,
            SoftwareInterrupt { vector: 0x80 },
            Overflow,
            SystemCall {
                instruction: SyscallInstruction::Sysenter,
            },
            Rdtsc { rdtscp: true },
            Privileged,
            SegmentLoad,
            Cpuid,
            SingleStep,
            OtherException {
                vector: 12,
                error_code: Some(0x18),
            },
            BudgetExpired,
            FillLimit,
            CodeLogFull,
            GuestEscape {
                kind: EscapeKind::HostSyscall,
                address: 0x7fff_0000_1000,
                diagnostic: 0x1f_0023,
            },
        ];
        for r in &all {
            match r {
                PageFault { .. }
                | NeedsEmulation { .. }
                | GeneralProtection { .. }
                | InvalidOpcode
                | DivideError
                | X87Exception
                | SimdException
                | Breakpoint
                | SoftwareInterrupt { .. }
                | Overflow
                | SystemCall { .. }
                | Rdtsc { .. }
                | Privileged
                | SegmentLoad
                | Cpuid
                | SingleStep
                | OtherException { .. }
                | BudgetExpired
                | FillLimit
                | CodeLogFull
                | GuestEscape { .. } => {}
            }
        }
        let mut v = all.to_vec();
        v.extend([
            PageFault {
                linear: 0,
                access: Access::Read,
                error_code: 4,
            },
            PageFault {
                linear: 0xffff_8000_0000_1000,
                access: Access::Fetch,
                error_code: 0x15,
            },
            NeedsEmulation {
                linear: 0xa0000,
                access: Access::Read,
            },
            SystemCall {
                instruction: SyscallInstruction::Syscall,
            },
            Rdtsc { rdtscp: false },
            OtherException {
                vector: 1,
                error_code: None,
            },
            GuestEscape {
                kind: EscapeKind::LongMode,
                address: 0x1_0000_0000,
                diagnostic: 0,
            },
            GuestEscape {
                kind: EscapeKind::StubTampered,
                address: 0,
                diagnostic: 0,
            },
        ]);
        v
    }

    #[test]
    fn exit_codec_round_trips() {
        let samples = samples();
        let mut codes: Vec<u32> = samples.iter().map(|r| r.raw() as u32).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(
            codes.len(),
            RawReason::ALL.len(),
            "every wire reason has a sample"
        );
        for r in samples {
            // Over a record whose unused fields hold junk and whose other flags are set.
            let mut raw = RawExit::ZERO;
            raw.flags = EXIT_ECX_CLOBBERED | EXIT_HAS_ERROR_CODE;
            r.encode_into(&mut raw);
            assert_eq!(ExitReason::decode(&raw), Ok(r), "{raw:?}");
            assert_eq!(raw.flags & EXIT_ECX_CLOBBERED, EXIT_ECX_CLOBBERED);
        }
    }

    #[test]
    fn bad_reason_fields_are_named() {
        let mut raw = RawExit::ZERO;
        assert_eq!(
            ExitReason::decode(&raw),
            Err("unknown exit reason 0".into())
        );
        ExitReason::SystemCall {
            instruction: SyscallInstruction::Syscall,
        }
        .encode_into(&mut raw);
        raw.vector = 2;
        assert_eq!(ExitReason::decode(&raw), Err("system-call kind 2".into()));
        ExitReason::PageFault {
            linear: 0,
            access: Access::Read,
            error_code: 4,
        }
        .encode_into(&mut raw);
        raw.access = 3;
        assert_eq!(ExitReason::decode(&raw), Err("access kind 3".into()));
    }
}
