//! The exit-instruction decoders.
//!
//! * `plex86_monitor::decode::classify_gp` (the executor names the instruction behind a #GP)
//!   against iced-x86, in 32- and in 64-bit code: whenever iced decodes the bytes as a valid instruction of a class the
//!   classifier names (RDTSC/RDTSCP, CPUID, INT n with its #GP error code, segment loads and far
//!   transfers, privileged instructions), the classifier must give that class, and it must not
//!   give a class iced contradicts. A class named from a truncated buffer must not depend on
//!   the bytes that were missing: every extension of the buffer gets the same class.
//! * `plex86_accel::decode::instruction_at` (names the instruction at CS:EIP for the
//!   statistics) against a reference fetch: the bytes at CS.base + EIP are read one by one
//!   through the reference walker of [`crate::walker`] (stopping at the first byte that is not
//!   mapped or not in RAM) and decoded with iced in the code segment's mode. The code page and
//!   the next one are mapped by input-chosen entries, so instructions that cross into a
//!   missing, non-RAM or non-executable page are cases.

use crate::walker::{
    background_ram, map_linear, place_cr3, reference_walk, regs_from_mode, write_n, EntrySpec,
};
use crate::{Outcome, Reader, Writer};
use host_driver::{Access, GuestState, Segment};
use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use plex86_accel::decode::{instruction_at, CodeAt, GuestMemory, InsnKey};
use plex86_monitor::decode::{classify_gp, GpKind};

/// The longest x86 instruction.
const MAX_INSN: usize = 15;

fn decode(bitness: u32, bytes: &[u8]) -> Option<Instruction> {
    let insn = Decoder::new(bitness, bytes, DecoderOptions::NONE).decode();
    (!insn.is_invalid()).then_some(insn)
}

fn is_sreg(r: Register) -> bool {
    (Register::ES..=Register::GS).contains(&r)
}

fn is_far_transfer(code: Code) -> bool {
    matches!(
        code,
        Code::Jmp_ptr1616
            | Code::Jmp_ptr1632
            | Code::Jmp_m1616
            | Code::Jmp_m1632
            | Code::Call_ptr1616
            | Code::Call_ptr1632
            | Code::Call_m1616
            | Code::Call_m1632
            | Code::Jmp_m1664
            | Code::Call_m1664
    )
}

/// What the classifier should say of a valid instruction, by iced's decoding; `None` for
/// instructions in none of its classes.
fn expected_class(insn: &Instruction, error_code: u32) -> Option<GpKind> {
    use Mnemonic as M;
    let m = insn.mnemonic();
    let touches_cr_dr = |r: Register| {
        (Register::CR0..=Register::CR15).contains(&r)
            || (Register::DR0..=Register::DR15).contains(&r)
    };
    Some(match m {
        M::Rdtsc => GpKind::Rdtsc,
        M::Rdtscp => GpKind::Rdtscp,
        M::Cpuid => GpKind::Cpuid,
        M::Int if insn.op0_kind() == OpKind::Immediate8 => {
            let v = insn.immediate8();
            if error_code == (u32::from(v) << 3) | 2 {
                GpKind::SoftwareInterrupt(v)
            } else {
                GpKind::Other
            }
        }
        M::Mov | M::Pop if is_sreg(insn.op0_register()) => GpKind::SegmentLoad,
        M::Lds | M::Les | M::Lfs | M::Lgs | M::Lss => GpKind::SegmentLoad,
        M::Retf | M::Iret | M::Iretd | M::Iretq => GpKind::SegmentLoad,
        M::Jmp | M::Call if is_far_transfer(insn.code()) => GpKind::SegmentLoad,
        M::Hlt | M::Cli | M::Sti | M::In | M::Out => GpKind::Privileged,
        M::Insb | M::Insw | M::Insd | M::Outsb | M::Outsw | M::Outsd => GpKind::Privileged,
        M::Lgdt | M::Lidt | M::Lmsw | M::Invlpg | M::Lldt | M::Ltr => GpKind::Privileged,
        M::Clts
        | M::Invd
        | M::Wbinvd
        | M::Wbnoinvd
        | M::Wrmsr
        | M::Rdmsr
        | M::Rdpmc
        | M::Sysexit
        | M::Sysexitq
        | M::Sysret
        | M::Sysretq
        | M::Swapgs => GpKind::Privileged,
        M::Mov if touches_cr_dr(insn.op0_register()) || touches_cr_dr(insn.op1_register()) => {
            GpKind::Privileged
        }
        _ => return None,
    })
}

fn check_classifier(error_code: u32, bytes: &[u8], code64: bool) {
    let bytes = &bytes[..bytes.len().min(MAX_INSN)];
    let got = classify_gp(bytes, error_code, code64);
    let bitness = if code64 { 64 } else { 32 };
    let ctx = format!("bytes {bytes:02x?} error code {error_code:#x}, {bitness}-bit");
    if let Some(insn) = decode(bitness, bytes) {
        let len = insn.len();
        match expected_class(&insn, error_code) {
            Some(want) => assert_eq!(
                got,
                want,
                "classify_gp disagrees with iced's {:?} ({ctx})",
                insn.code()
            ),
            None => {
                // A valid instruction of no class: the classifier names none either, except
                // for the whole 0F 01 group, which it calls privileged as a block.
                let rex = |b: u8| code64 && b & 0xf0 == 0x40;
                let group_0f01 = bytes
                    .iter()
                    .position(|&b| {
                        !matches!(
                            b,
                            0x26 | 0x2e
                                | 0x36
                                | 0x3e
                                | 0x64
                                | 0x65
                                | 0x66
                                | 0x67
                                | 0xf0
                                | 0xf2
                                | 0xf3
                        ) && !rex(b)
                    })
                    .is_some_and(|i| bytes[i..].starts_with(&[0x0f, 0x01]));
                assert!(
                    got == GpKind::Other || (group_0f01 && got == GpKind::Privileged),
                    "classify_gp says {got:?} for iced's {:?} ({len} bytes) ({ctx})",
                    insn.code()
                );
            }
        }
    }
    // A class named from a prefix of the bytes must not depend on the bytes after it.
    for k in 0..bytes.len() {
        let partial = classify_gp(&bytes[..k], error_code, code64);
        if partial != GpKind::Other {
            assert_eq!(
                partial, got,
                "classify_gp named {partial:?} from the first {k} bytes, {got:?} from all ({ctx})"
            );
        }
    }
}

/// Guest RAM for `instruction_at`.
struct Mem(Vec<u8>);

impl GuestMemory for Mem {
    fn read(&self, pa: u64, buf: &mut [u8]) -> bool {
        let Ok(start) = usize::try_from(pa) else {
            return false;
        };
        match start
            .checked_add(buf.len())
            .and_then(|end| self.0.get(start..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

/// An `instruction_at` case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchCase {
    /// See [`regs_from_mode`].
    pub mode: u8,
    /// CR3 and where it points (see [`place_cr3`]).
    pub cr3: u32,
    /// Where CR3 points.
    pub cr3_place: u8,
    /// CS base.
    pub cs_base: u32,
    /// Bit 0: CS is a 32-bit segment (D set).
    pub cs_flags: u8,
    /// EIP.
    pub eip: u32,
    /// Entries mapping the page of CS.base + EIP.
    pub first: [EntrySpec; 3],
    /// Entries mapping the next page.
    pub second: [EntrySpec; 3],
    /// The instruction bytes, written where CS.base + EIP maps (as far as it does).
    pub code: [u8; MAX_INSN],
    /// RAM background, repeated.
    pub background: Vec<u8>,
}

impl FetchCase {
    fn parse(r: &mut Reader<'_>) -> Self {
        let mode = r.u8();
        let cr3 = r.u32();
        let cr3_place = r.u8();
        let cs_base = r.u32();
        let cs_flags = r.u8();
        let eip = r.u32();
        let mut spec = || EntrySpec {
            raw: r.u64(),
            place: r.u8(),
        };
        let first = [spec(), spec(), spec()];
        let second = [spec(), spec(), spec()];
        let mut code = [0u8; MAX_INSN];
        for b in code.iter_mut() {
            *b = r.u8();
        }
        FetchCase {
            mode,
            cr3,
            cr3_place,
            cs_base,
            cs_flags,
            eip,
            first,
            second,
            code,
            background: r.rest().to_vec(),
        }
    }
    fn write(&self, w: &mut Writer) {
        w.u8(self.mode)
            .u32(self.cr3)
            .u8(self.cr3_place)
            .u32(self.cs_base)
            .u8(self.cs_flags)
            .u32(self.eip);
        for e in self.first.iter().chain(&self.second) {
            w.u64(e.raw).u8(e.place);
        }
        w.bytes(&self.code).bytes(&self.background);
    }
}

/// A decoder case: the classifier or the fetch-and-decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecoderCase {
    /// `classify_gp(bytes, error_code, code64)`.
    Classify {
        /// The #GP error code.
        error_code: u32,
        /// 64-bit code.
        code64: bool,
        /// The instruction bytes (up to 15 are used).
        bytes: Vec<u8>,
    },
    /// `instruction_at`.
    Fetch(Box<FetchCase>),
}

impl DecoderCase {
    /// Decodes a case from fuzz input (first byte even: classifier, in 64-bit code when its
    /// bit 1 is set; odd: fetch).
    pub fn parse(data: &[u8]) -> Self {
        let mut r = Reader::new(data);
        let first = r.u8();
        if first & 1 == 0 {
            let error_code = r.u32();
            DecoderCase::Classify {
                error_code,
                code64: first & 2 != 0,
                bytes: r.rest().to_vec(),
            }
        } else {
            DecoderCase::Fetch(Box::new(FetchCase::parse(&mut r)))
        }
    }
    /// Encodes the case as fuzz input.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            DecoderCase::Classify {
                error_code,
                code64,
                bytes,
            } => {
                w.u8(if *code64 { 2 } else { 0 })
                    .u32(*error_code)
                    .bytes(bytes);
            }
            DecoderCase::Fetch(c) => {
                w.u8(1);
                c.write(&mut w);
            }
        }
        w.0
    }
}

/// The key `instruction_at` should give for `bytes` (what could be read at CS:EIP).
fn expected_key(bytes: &[u8], bitness: u32, eip: u32) -> Option<InsnKey> {
    if bytes.is_empty() {
        return None;
    }
    let insn = Decoder::with_ip(bitness, bytes, u64::from(eip), DecoderOptions::NONE).decode();
    if insn.is_invalid() {
        return None;
    }
    let op0 = insn.op0_register();
    Some(InsnKey {
        mnemonic: insn.mnemonic(),
        segment: if is_sreg(op0) { op0 } else { Register::None },
        far: is_far_transfer(insn.code()),
    })
}

fn check_fetch(case: &FetchCase) {
    let regs = regs_from_mode(case.mode, place_cr3(case.cr3, case.cr3_place));
    let mut mem = background_ram(&case.background);
    let lin = case.cs_base.wrapping_add(case.eip);
    map_linear(&mut mem, &regs, lin, &case.first);
    map_linear(
        &mut mem,
        &regs,
        (lin & !0xfff).wrapping_add(0x1000),
        &case.second,
    );
    // Place the code bytes where they map (a later byte may overwrite an earlier one when
    // both pages map to the same physical page).
    for (i, &b) in case.code.iter().enumerate() {
        let a = lin.wrapping_add(i as u32);
        if let Ok(t) = reference_walk(&mem, &regs, a, Access::Fetch, false).result {
            write_n(&mut mem, t.phys_page + u64::from(a & 0xfff), &[b]);
        }
    }
    // The reference fetch: byte by byte through the reference walker.
    let mut fetched = Vec::with_capacity(MAX_INSN);
    for i in 0..MAX_INSN as u32 {
        let a = lin.wrapping_add(i);
        let Ok(t) = reference_walk(&mem, &regs, a, Access::Fetch, false).result else {
            break;
        };
        let Some(&b) = usize::try_from(t.phys_page + u64::from(a & 0xfff))
            .ok()
            .and_then(|pa| mem.get(pa))
        else {
            break;
        };
        fetched.push(b);
    }
    let mut gs = GuestState {
        cr0: u64::from(regs.cr0),
        cr3: u64::from(regs.cr3),
        cr4: u64::from(regs.cr4),
        efer: regs.efer,
        rip: u64::from(case.eip),
        ..GuestState::default()
    };
    let mut cs = Segment::flat_code(0x73);
    cs.base = u64::from(case.cs_base);
    if case.cs_flags & 1 == 0 {
        cs.attr &= !(1 << 14);
    }
    gs.segs[1] = cs;
    let bitness = if case.cs_flags & 1 != 0 { 32 } else { 16 };
    let want = expected_key(&fetched, bitness, case.eip);
    let before = mem.clone();
    let m = Mem(mem);
    let got = instruction_at(&m, &CodeAt::of_guest(&gs));
    assert_eq!(
        got, want,
        "instruction_at disagrees with the reference fetch of {fetched:02x?} \
         ({regs:x?} CS base {:#x} EIP {:#x}, {bitness}-bit)",
        case.cs_base, case.eip
    );
    assert!(m.0 == before, "instruction_at changed guest memory");
}

/// The fuzz target: see the module documentation. Every input is a case.
pub fn check(data: &[u8]) -> Outcome {
    match DecoderCase::parse(data) {
        DecoderCase::Classify {
            error_code,
            code64,
            bytes,
        } => check_classifier(error_code, &bytes, code64),
        DecoderCase::Fetch(c) => check_fetch(&c),
    }
    Outcome::Checked
}
