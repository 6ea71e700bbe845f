//! A minimal classifier for the instruction behind a #GP in 32- or 64-bit code: just enough to name
//! the exit reason (privileged instruction, segment load / far transfer, RDTSC, CPUID, INT n). It is
//! no decoder: the emulator re-executes the instruction at EIP in every case. Also which
//! instruction raised a trap that shares its vector with another (INT3 and `INT 3`, INTO and
//! `INT 4`), and how far back its first byte is.

/// What a #GP-raising instruction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpKind {
    /// RDTSC (trapped by PR_SET_TSC).
    Rdtsc,
    /// RDTSCP (trapped by PR_SET_TSC).
    Rdtscp,
    /// CPUID (trapped by CPUID faulting, `arch_prctl(ARCH_SET_CPUID, 0)`).
    Cpuid,
    /// HLT/CLI/STI/IN/OUT/INS/OUTS, control/debug register moves, descriptor-table loads, …
    Privileged,
    /// A segment register load or a far control transfer (including IRET and far RET).
    SegmentLoad,
    /// INT n (the host's IDT gate for n is not reachable from CPL 3).
    SoftwareInterrupt(u8),
    /// Anything else (a genuine #GP, e.g. a segment limit violation).
    Other,
}

const MAX_PREFIXES: usize = 14;

fn is_prefix(b: u8) -> bool {
    matches!(
        b,
        0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3
    )
}

/// Classifies the instruction in `bytes` (fewer than 15 bytes when the rest is unreadable).
/// `error_code` is the #GP error code; `code64` says the code segment is a 64-bit one (REX
/// prefixes exist; the one-byte segment pushes and pops, LES/LDS and far immediates do not).
pub fn classify_gp(bytes: &[u8], error_code: u32, code64: bool) -> GpKind {
    let rex = |b: u8| code64 && b & 0xf0 == 0x40;
    let mut i = 0;
    while i < bytes.len() && i < MAX_PREFIXES && (is_prefix(bytes[i]) || rex(bytes[i])) {
        i += 1;
    }
    let Some(&op) = bytes.get(i) else {
        return GpKind::Other;
    };
    let modrm = bytes.get(i + 1).copied();
    let reg = modrm.map(|m| (m >> 3) & 7);
    match op {
        0xf4 | 0xfa | 0xfb | 0xe4..=0xe7 | 0xec..=0xef | 0x6c..=0x6f => GpKind::Privileged,
        0x8e => GpKind::SegmentLoad,
        0x07 | 0x17 | 0x1f if !code64 => GpKind::SegmentLoad,
        // LES/LDS (VEX prefixes only when ModRM.mod == 3, which would not #GP as LES/LDS;
        // always VEX in 64-bit code).
        0xc4 | 0xc5 if !code64 && modrm.is_some_and(|m| m >> 6 != 3) => GpKind::SegmentLoad,
        0xea | 0x9a if !code64 => GpKind::SegmentLoad,
        0xca | 0xcb | 0xcf => GpKind::SegmentLoad,
        0xff if matches!(reg, Some(3) | Some(5)) => GpKind::SegmentLoad,
        0xcd => {
            // Without the vector byte the error code cannot be matched (and 0 is no guess).
            let Some(&v) = bytes.get(i + 1) else {
                return GpKind::Other;
            };
            if error_code == (u32::from(v) << 3) | 2 {
                GpKind::SoftwareInterrupt(v)
            } else {
                GpKind::Other
            }
        }
        0x0f => {
            let Some(&op2) = bytes.get(i + 1) else {
                return GpKind::Other;
            };
            let modrm2 = bytes.get(i + 2).copied();
            let reg2 = modrm2.map(|m| (m >> 3) & 7);
            match op2 {
                0x31 => GpKind::Rdtsc,
                0xa2 => GpKind::Cpuid,
                0x01 if modrm2 == Some(0xf9) => GpKind::Rdtscp,
                // 0F 01 without its ModRM byte may be RDTSCP: no class from missing bytes.
                0x01 if modrm2.is_none() => GpKind::Other,
                0xa1 | 0xa9 | 0xb2 | 0xb4 | 0xb5 => GpKind::SegmentLoad,
                // LLDT, LTR; SLDT/STR/VERR/VERW do not fault.
                0x00 if matches!(reg2, Some(2) | Some(3)) => GpKind::Privileged,
                0x01 => GpKind::Privileged,
                0x06 | 0x07 | 0x08 | 0x09 | 0x20..=0x23 | 0x30 | 0x32 | 0x33 | 0x35 => {
                    GpKind::Privileged
                }
                _ => GpKind::Other,
            }
        }
        _ => GpKind::Other,
    }
}

/// An instruction that raises a trap: the host reports the state after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapInsn {
    /// INT3 (CC).
    Int3,
    /// INTO (CE).
    Into,
    /// INT n (CD n).
    IntN(u8),
}

impl TrapInsn {
    /// Its length: how far the reported EIP is past its first byte.
    pub fn rewind(self) -> u32 {
        match self {
            TrapInsn::Int3 | TrapInsn::Into => 1,
            TrapInsn::IntN(_) => 2,
        }
    }
}

/// The instruction behind a #BP (`vector` 3) or #OF (`vector` 4) trap, from the two code bytes
/// that end at the reported EIP (`None` when unreadable). The last byte decides it (CC or CE
/// is the one-byte form, 03 or 04 after CD the two-byte one), so an opcode byte as the end of
/// the instruction before (`mov al, 0xcd; into`) cannot mislead it. Unreadable bytes give the
/// one-byte form. Prefixes are not looked at: they change nothing for these instructions.
pub fn trap_insn(vector: u8, before: Option<[u8; 2]>) -> TrapInsn {
    let one_byte = if vector == 4 {
        TrapInsn::Into
    } else {
        TrapInsn::Int3
    };
    match before {
        Some([0xcd, v]) if v == vector => TrapInsn::IntN(v),
        _ => one_byte,
    }
}

/// Where the host reports RIP for the #DB of ICEBP (F1). x86 makes it a trap (RIP after the
/// F1, as on the Intel KVM guest the project measured), but on a PVM guest RIP was at the F1
/// itself. The executor measures it once at start (docs/ARCHITECTURE.md, "Entry and exit").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcebpRip {
    /// RIP after the F1 byte.
    After,
    /// RIP at the F1 byte.
    At,
}

impl IcebpRip {
    /// How far the reported EIP is past the F1.
    pub fn rewind(self) -> u32 {
        match self {
            IcebpRip::After => 1,
            IcebpRip::At => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trap_instructions_by_their_last_byte() {
        use TrapInsn::*;
        let cases: &[(u8, Option<[u8; 2]>, TrapInsn)] = &[
            (3, Some([0x90, 0xcc]), Int3),
            (3, Some([0xcd, 0xcc]), Int3), // the CD is another instruction's last byte
            (3, Some([0xcd, 0x03]), IntN(3)),
            (3, None, Int3),
            (4, Some([0x90, 0xce]), Into),
            (4, Some([0xcd, 0xce]), Into), // mov al, 0xcd; into
            (4, Some([0xcd, 0x04]), IntN(4)),
            (4, Some([0xcd, 0x03]), Into), // not what raises vector 4
            (4, None, Into),
        ];
        for &(vector, before, want) in cases {
            assert_eq!(trap_insn(vector, before), want, "{vector} {before:02x?}");
        }
        assert_eq!((Int3.rewind(), Into.rewind(), IntN(4).rewind()), (1, 1, 2));
    }

    #[test]
    fn icebp_rewind_follows_the_host() {
        // Where the F1 is, relative to the reported EIP: one byte back, or right there.
        assert_eq!(IcebpRip::After.rewind(), 1);
        assert_eq!(IcebpRip::At.rewind(), 0);
    }

    #[test]
    fn classifies_table() {
        let cases: &[(&[u8], u32, GpKind)] = &[
            (&[0xf4], 0, GpKind::Privileged),
            (&[0xfa], 0, GpKind::Privileged),
            (&[0xfb], 0, GpKind::Privileged),
            (&[0xe6, 0x80], 0, GpKind::Privileged),
            (&[0xec], 0, GpKind::Privileged),
            (&[0x66, 0xef], 0, GpKind::Privileged),
            (&[0xf3, 0x6c], 0, GpKind::Privileged),
            (&[0x0f, 0x31], 0, GpKind::Rdtsc),
            (&[0x0f, 0xa2], 0, GpKind::Cpuid),
            (&[0x0f, 0x01, 0xf9], 0, GpKind::Rdtscp),
            (&[0x0f, 0x01, 0x10], 0, GpKind::Privileged), // lgdt [eax]
            (&[0x0f, 0x22, 0xd8], 0, GpKind::Privileged), // mov cr3, eax
            (&[0x0f, 0x30], 0, GpKind::Privileged),
            (&[0x0f, 0x00, 0xd0], 0, GpKind::Privileged), // lldt ax
            (&[0x8e, 0xd8], 0x28, GpKind::SegmentLoad),   // mov ds, ax
            (&[0x66, 0x8e, 0xd8], 0x28, GpKind::SegmentLoad),
            (&[0x1f], 0x28, GpKind::SegmentLoad),
            (&[0x0f, 0xa1], 0x28, GpKind::SegmentLoad),
            (&[0x0f, 0xb2, 0x00], 0x28, GpKind::SegmentLoad), // lss
            (&[0xc5, 0x00], 0x28, GpKind::SegmentLoad),       // lds eax, [eax]
            (&[0xea, 0, 0, 0, 0, 0x33, 0], 0x30, GpKind::SegmentLoad),
            (&[0xff, 0x18], 0x30, GpKind::SegmentLoad), // call far [eax]
            (&[0xff, 0x28], 0x30, GpKind::SegmentLoad), // jmp far [eax]
            (&[0xff, 0x10], 0, GpKind::Other),          // call [eax]
            (&[0xcb], 0, GpKind::SegmentLoad),
            (&[0xcf], 0, GpKind::SegmentLoad),
            (&[0xcd, 0x21], 0x10a, GpKind::SoftwareInterrupt(0x21)),
            (&[0xcd, 0x21], 0, GpKind::Other),
            (&[0x8b, 0x00], 0, GpKind::Other),
            (&[], 0, GpKind::Other),
            (&[0x66; 20], 0, GpKind::Other),
            // Truncated (the next page is unreadable): no class that the missing bytes decide.
            (&[0xcd], 2, GpKind::Other),
            (&[0x0f, 0x01], 0, GpKind::Other),
        ];
        for (bytes, ec, want) in cases {
            assert_eq!(classify_gp(bytes, *ec, false), *want, "bytes {bytes:02x?}");
        }
    }

    #[test]
    fn classifies_64_bit_code() {
        let cases: &[(&[u8], u32, GpKind)] = &[
            (&[0x48, 0xcf], 0, GpKind::SegmentLoad),          // iretq
            (&[0x48, 0xcb], 0, GpKind::SegmentLoad),          // retfq
            (&[0x41, 0x8e, 0xd8], 0x28, GpKind::SegmentLoad), // mov ds, r8w
            (&[0x48, 0xff, 0x28], 0x30, GpKind::SegmentLoad), // jmp far [rax] (m16:64)
            (&[0x0f, 0x01, 0xf8], 0, GpKind::Privileged),     // swapgs
            (&[0x48, 0x0f, 0x07], 0, GpKind::Privileged),     // sysretq
            (&[0x0f, 0x22, 0xd8], 0, GpKind::Privileged),     // mov cr3, rax
            (&[0x66, 0x40, 0xef], 0, GpKind::Privileged),     // out dx, ax with a stray REX
            (&[0x48, 0x0f, 0x31], 0, GpKind::Rdtsc),
            (&[0xcd, 0x80], 0x402, GpKind::SoftwareInterrupt(0x80)),
            // Invalid in 64-bit code (#UD, never a #GP): no class.
            (&[0x1f], 0x28, GpKind::Other),
            (&[0x07], 0x28, GpKind::Other),
            (&[0xea, 0, 0, 0, 0, 0x33, 0], 0x30, GpKind::Other),
            (&[0xc5, 0x00], 0x28, GpKind::Other), // a VEX prefix here
            (&[0x48, 0x0f, 0x31], 0, GpKind::Rdtsc),
        ];
        for (bytes, ec, want) in cases {
            assert_eq!(classify_gp(bytes, *ec, true), *want, "bytes {bytes:02x?}");
        }
        assert_eq!(
            classify_gp(&[0x40, 0xcf], 0, false),
            GpKind::Other,
            "inc eax"
        );
    }
}
