//! Names the instruction behind an exit, for the statistics only (which privileged
//! instruction, which segment load, …). Bochs re-executes the instruction in every case; this
//! never influences a run.
//!
//! The bytes are read from guest RAM through the guest's page tables (guest-paging's walkers,
//! without A/D updates) and decoded with iced-x86 in the code's bitness: 16 or 32 by CS.D in
//! protected and compatibility mode, 64 in 64-bit mode (through the 4-level walker, RIP as
//! the linear address: CS's base is ignored there). [`CodeAt`] says where and how: from the
//! driver's (32-bit) state after a run, or from Bochs's ABI state in any mode.

use crate::CpuState;
use bochs_ffi::raw;
use guest_paging::{self as paging, LongRegs, PagingRegs, PhysMemory};
use host_driver::protocol::seg;
use host_driver::GuestState;
use iced_x86::{Code, Decoder, DecoderOptions, Mnemonic, Register};

/// Guest-physical memory readable by the decoder.
pub trait GuestMemory {
    /// Copies `buf.len()` bytes from guest-physical `pa`; false when out of range.
    fn read(&self, pa: u64, buf: &mut [u8]) -> bool;
}

/// The walker's view of a [`GuestMemory`]: reads only (no A/D updates are ever requested).
struct Phys<'a, M: GuestMemory + ?Sized>(&'a M);

impl<M: GuestMemory + ?Sized> PhysMemory for Phys<'_, M> {
    fn read_u32(&self, pa: u64) -> Option<u32> {
        let mut b = [0; 4];
        self.0.read(pa, &mut b).then(|| u32::from_le_bytes(b))
    }
    fn read_u64(&self, pa: u64) -> Option<u64> {
        let mut b = [0; 8];
        self.0.read(pa, &mut b).then(|| u64::from_le_bytes(b))
    }
    fn cmpxchg_u32(&self, _: u64, _: u32, _: u32) -> Option<bool> {
        None
    }
    fn cmpxchg_u64(&self, _: u64, _: u64, _: u64) -> Option<bool> {
        None
    }
}

/// What the statistics remember of an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InsnKey {
    /// Mnemonic.
    pub mnemonic: Mnemonic,
    /// The segment register it loads (MOV/POP Sreg), else `Register::None`.
    pub segment: Register,
    /// A far JMP/CALL.
    pub far: bool,
}

impl InsnKey {
    /// A short label: "hlt", "mov ds", "pop es", "jmp far", "lss".
    pub fn label(&self) -> String {
        let mut s = format!("{:?}", self.mnemonic).to_lowercase();
        if self.segment != Register::None {
            s.push(' ');
            s.push_str(&format!("{:?}", self.segment).to_lowercase());
        }
        if self.far {
            s.push_str(" far");
        }
        s
    }
}

/// MAXPHYADDR the decoder's 4-level walks assume (the ABI state does not carry the model's):
/// the widest, so that no entry of a valid table looks reserved. Naming only.
pub const DECODE_MAXPHYADDR: u8 = 52;

/// CS access rights (VMX packing): D/B and L.
const ATTR_D: u16 = 1 << 14;

/// The paging structures the code is fetched through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodePaging {
    /// 2-level or PAE paging (32-bit protected mode).
    Legacy(PagingRegs),
    /// 4-level paging (long mode, 64-bit or compatibility).
    Long(LongRegs),
}

/// Where the instruction behind an exit is and how to decode it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeAt {
    /// The page tables.
    pub paging: CodePaging,
    /// The linear address of the first byte.
    pub linear: u64,
    /// The instruction pointer (the decoder's IP).
    pub ip: u64,
    /// 16, 32 or 64.
    pub bitness: u32,
}

impl CodeAt {
    /// The instruction at CS:RIP of a driver state, in its mode, as [`CodeAt::of_cpu`] finds
    /// it in Bochs's (64-bit code at linear RIP through the 4-level tables, compatibility
    /// mode at the 32-bit CS.base + EIP through them, protected mode through 2-level or PAE
    /// tables).
    pub fn of_guest(gs: &GuestState) -> Self {
        let cs = &gs.segs[seg::CS];
        let eip = gs.rip as u32;
        let lin32 = u64::from((cs.base as u32).wrapping_add(eip));
        let legacy_bits = if cs.attr & ATTR_D != 0 { 32 } else { 16 };
        let long = LongRegs::new(gs.cr3, gs.cr4, gs.efer, DECODE_MAXPHYADDR);
        if gs.code64() {
            CodeAt {
                paging: CodePaging::Long(long),
                linear: gs.rip,
                ip: gs.rip,
                bitness: 64,
            }
        } else if gs.long_mode() {
            CodeAt {
                paging: CodePaging::Long(long),
                linear: lin32,
                ip: u64::from(eip),
                bitness: legacy_bits,
            }
        } else {
            CodeAt {
                paging: CodePaging::Legacy(gs.legacy_paging_regs()),
                linear: lin32,
                ip: u64::from(eip),
                bitness: legacy_bits,
            }
        }
    }

    /// The instruction at CS:RIP of Bochs's state, in its mode: 64-bit mode decodes with
    /// bitness 64 at linear RIP through the 4-level tables; compatibility mode with CS.D's
    /// bitness at the 32-bit CS.base + EIP through the same tables; protected mode as
    /// [`CodeAt::of_guest`].
    pub fn of_cpu(cpu: &CpuState) -> Self {
        let cs = &cpu.seg[raw::plex86_accel_seg_index_PLEX86_ACCEL_SEG_CS as usize];
        let legacy_bits = if cs.attr & ATTR_D != 0 { 32 } else { 16 };
        let long = LongRegs::new(cpu.cr3, cpu.cr4, cpu.efer, DECODE_MAXPHYADDR);
        let eip = cpu.rip as u32;
        let lin32 = u64::from((cs.base as u32).wrapping_add(eip));
        match cpu.mode {
            raw::plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_64 => CodeAt {
                paging: CodePaging::Long(long),
                linear: cpu.rip,
                ip: cpu.rip,
                bitness: 64,
            },
            raw::plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_COMPAT => CodeAt {
                paging: CodePaging::Long(long),
                linear: lin32,
                ip: u64::from(eip),
                bitness: legacy_bits,
            },
            _ => CodeAt {
                paging: CodePaging::Legacy(PagingRegs::new(
                    cpu.cr0 as u32,
                    cpu.cr3 as u32,
                    cpu.cr4 as u32,
                    cpu.efer,
                )),
                linear: lin32,
                ip: u64::from(eip),
                bitness: legacy_bits,
            },
        }
    }
}

/// Reads up to 15 instruction bytes at `at.linear`, page by page through the guest's tables;
/// returns how many could be read.
fn fetch(mem: &dyn GuestMemory, at: &CodeAt, buf: &mut [u8; 15]) -> usize {
    let read = |pa, b: &mut [u8]| mem.read(pa, b);
    match &at.paging {
        CodePaging::Legacy(regs) => {
            paging::read_linear(&Phys(mem), regs, at.linear as u32, buf, read)
        }
        CodePaging::Long(regs) => paging::read_linear64(&Phys(mem), regs, at.linear, buf, read),
    }
}

/// Decodes the instruction at `at`. `None` when its bytes cannot be read or do not decode.
pub fn instruction_at(mem: &dyn GuestMemory, at: &CodeAt) -> Option<InsnKey> {
    let mut buf = [0u8; 15];
    let n = fetch(mem, at, &mut buf);
    if n == 0 {
        return None;
    }
    let mut d = Decoder::with_ip(at.bitness, &buf[..n], at.ip, DecoderOptions::NONE);
    let insn = d.decode();
    if insn.is_invalid() {
        return None;
    }
    let op0 = insn.op0_register();
    // (Register::is_segment_register and Instruction::is_jmp_far need iced's `instr_info`.)
    let segment = if (Register::ES..=Register::GS).contains(&op0) {
        op0
    } else {
        Register::None
    };
    let far = matches!(
        insn.code(),
        Code::Jmp_ptr1616
            | Code::Jmp_ptr1632
            | Code::Jmp_m1616
            | Code::Jmp_m1632
            | Code::Jmp_m1664
            | Code::Call_ptr1616
            | Code::Call_ptr1632
            | Code::Call_m1616
            | Code::Call_m1632
            | Code::Call_m1664
    );
    Some(InsnKey {
        mnemonic: insn.mnemonic(),
        segment,
        far,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use host_driver::Segment;

    /// A flat byte array as guest RAM.
    pub struct VecMem(pub std::cell::RefCell<Vec<u8>>);

    impl GuestMemory for VecMem {
        fn read(&self, pa: u64, buf: &mut [u8]) -> bool {
            let m = self.0.borrow();
            let Some(end) = (pa as usize).checked_add(buf.len()) else {
                return false;
            };
            match m.get(pa as usize..end) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }

    impl VecMem {
        pub(crate) fn w32(&self, pa: u64, v: u32) {
            self.0.borrow_mut()[pa as usize..pa as usize + 4].copy_from_slice(&v.to_le_bytes());
        }
        pub(crate) fn put(&self, pa: u64, b: &[u8]) {
            self.0.borrow_mut()[pa as usize..pa as usize + b.len()].copy_from_slice(b);
        }
    }

    /// 2-level paging: CR3 at 0x1000, one page table at 0x2000 mapping linear 0x400000.. to
    /// physical 0x10000.. (16 user pages); code at the end of the first page spills into the
    /// second, which maps to a non-contiguous physical page.
    pub(crate) fn setup() -> (VecMem, GuestState) {
        let mem = VecMem(std::cell::RefCell::new(vec![0; 0x40000]));
        mem.w32(0x1000 + 4, 0x2000 | 7); // PDE 1: 0x400000
        mem.w32(0x2000, 0x10000 | 7);
        mem.w32(0x2004, 0x30000 | 7);
        let mut gs = GuestState {
            cr0: 0x8000_0011,
            cr3: 0x1000,
            ..GuestState::default()
        };
        gs.segs[1] = Segment::flat_code(0x73);
        (mem, gs)
    }

    fn at(mem: &VecMem, gs: &mut GuestState, lin: u32, bytes: &[u8]) -> Option<String> {
        let phys = if lin < 0x40_1000 {
            0x10000 + u64::from(lin & 0xfff)
        } else {
            0x30000 + u64::from(lin & 0xfff)
        };
        mem.put(phys, bytes);
        gs.rip = u64::from(lin);
        instruction_at(mem, &CodeAt::of_guest(gs)).map(|k| k.label())
    }

    #[test]
    fn names_privileged_and_segment_instructions() {
        let (mem, mut gs) = setup();
        assert_eq!(
            at(&mem, &mut gs, 0x40_0000, &[0xf4]).as_deref(),
            Some("hlt")
        );
        assert_eq!(
            at(&mem, &mut gs, 0x40_0010, &[0xfa]).as_deref(),
            Some("cli")
        );
        assert_eq!(
            at(&mem, &mut gs, 0x40_0020, &[0xe6, 0x80]).as_deref(),
            Some("out")
        );
        assert_eq!(
            at(&mem, &mut gs, 0x40_0030, &[0x8e, 0xd8]).as_deref(),
            Some("mov ds")
        );
        assert_eq!(
            at(&mem, &mut gs, 0x40_0040, &[0x07]).as_deref(),
            Some("pop es")
        );
        assert_eq!(
            at(&mem, &mut gs, 0x40_0050, &[0x0f, 0xa9]).as_deref(),
            Some("pop gs")
        );
        assert_eq!(
            at(&mem, &mut gs, 0x40_0060, &[0xea, 0, 0, 0, 0, 0x33, 0]).as_deref(),
            Some("jmp far")
        );
        assert_eq!(
            at(&mem, &mut gs, 0x40_0070, &[0xff, 0x18]).as_deref(),
            Some("call far")
        );
        assert_eq!(
            at(&mem, &mut gs, 0x40_0080, &[0x0f, 0xb2, 0x00]).as_deref(),
            Some("lss")
        );
        assert_eq!(
            at(&mem, &mut gs, 0x40_0090, &[0xcf]).as_deref(),
            Some("iretd")
        );
        assert_eq!(
            at(&mem, &mut gs, 0x40_00a0, &[0x0f, 0x0b]).as_deref(),
            Some("ud2")
        );
    }

    #[test]
    fn instruction_crossing_a_page_boundary() {
        let (mem, mut gs) = setup();
        // mov eax, 0x12345678 split as B8 78 | 56 34 12 across linear 0x400ffe/0x401000.
        mem.put(0x10ffe, &[0xb8, 0x78]);
        mem.put(0x30000, &[0x56, 0x34, 0x12]);
        gs.rip = 0x40_0ffe;
        assert_eq!(
            instruction_at(&mem, &CodeAt::of_guest(&gs))
                .map(|k| k.label())
                .as_deref(),
            Some("mov")
        );
        // Second page unmapped: the instruction is truncated and does not decode.
        mem.w32(0x2004, 0);
        assert_eq!(instruction_at(&mem, &CodeAt::of_guest(&gs)), None);
    }

    #[test]
    fn unreadable_code_gives_none() {
        let (mem, mut gs) = setup();
        gs.rip = 0x80_0000; // no page table
        assert_eq!(instruction_at(&mem, &CodeAt::of_guest(&gs)), None);
        gs.cr3 = 0x0100_0000; // tables outside RAM
        assert_eq!(instruction_at(&mem, &CodeAt::of_guest(&gs)), None);
    }

    #[test]
    fn cs_base_is_applied() {
        let (mem, mut gs) = setup();
        mem.put(0x10100, &[0xfb]);
        gs.segs[1].base = 0x40_0000;
        gs.rip = 0x100;
        assert_eq!(
            instruction_at(&mem, &CodeAt::of_guest(&gs))
                .map(|k| k.label())
                .as_deref(),
            Some("sti")
        );
    }

    /// 4-level tables: PML4 at 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000, mapping the 4 KiB
    /// page at `lin` (user, executable) to physical 0x10000.
    fn long_setup(lin: u64) -> (VecMem, CpuState) {
        let mem = VecMem(std::cell::RefCell::new(vec![0; 0x40000]));
        let idx = |shift: u32| (lin >> shift) & 511;
        let w64 = |pa: u64, v: u64| mem.put(pa, &v.to_le_bytes());
        w64(0x1000 + 8 * idx(39), 0x2000 | 7);
        w64(0x2000 + 8 * idx(30), 0x3000 | 7);
        w64(0x3000 + 8 * idx(21), 0x4000 | 7);
        w64(0x4000 + 8 * idx(12), 0x10000 | 7);
        let mut cpu = test_support::guest_state::sample_state();
        cpu.mode = raw::plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_64;
        cpu.cr0 = 0x8005_0033;
        cpu.cr3 = 0x1000;
        cpu.cr4 = 0x20 | 1 << 18;
        cpu.efer = 0xd01; // SCE LME LMA NXE
                          // CS: 64-bit code (L=1, D=0), base ignored
        cpu.seg[1].attr = 0xb | 0x10 | 3 << 5 | 0x80 | 1 << 13 | 1 << 15;
        cpu.seg[1].base = 0x1234_0000;
        cpu.rip = lin;
        (mem, cpu)
    }

    #[test]
    fn decodes_64_bit_code_with_bitness_64() {
        let lin = 0x7f12_3456_7000u64; // above 4 GiB
        let (mem, mut cpu) = long_setup(lin);
        let name = |mem: &VecMem, cpu: &CpuState, bytes: &[u8]| {
            mem.put(0x10000 + (cpu.rip & 0xfff), bytes);
            instruction_at(mem, &CodeAt::of_cpu(cpu)).map(|k| k.label())
        };
        let at = CodeAt::of_cpu(&cpu);
        assert_eq!(
            (at.bitness, at.linear, at.ip),
            (64, lin, lin),
            "CS.base ignored"
        );
        // 48 CF: IRETQ in 64-bit code (DEC EAX; IRETD in 32-bit code)
        assert_eq!(name(&mem, &cpu, &[0x48, 0xcf]).as_deref(), Some("iretq"));
        // 41 8E D8: MOV DS, R8W (a REX prefix, INC ECX in 32-bit code)
        cpu.rip = lin + 0x10;
        assert_eq!(
            name(&mem, &cpu, &[0x41, 0x8e, 0xd8]).as_deref(),
            Some("mov ds")
        );
        cpu.rip = lin + 0x20;
        assert_eq!(name(&mem, &cpu, &[0x0f, 0x05]).as_deref(), Some("syscall"));
        cpu.rip = lin + 0x30;
        assert_eq!(name(&mem, &cpu, &[0xf4]).as_deref(), Some("hlt"));
        // far JMP ptr16:32 and PUSH ES do not exist in 64-bit mode
        cpu.rip = lin + 0x40;
        assert_eq!(name(&mem, &cpu, &[0xea, 0, 0, 0, 0, 0x33, 0]), None);
        cpu.rip = lin + 0x50;
        assert_eq!(name(&mem, &cpu, &[0x06]), None);
        // FF 2C 24: JMP FAR [RSP] (m16:32 without REX.W)
        cpu.rip = lin + 0x60;
        assert_eq!(
            name(&mem, &cpu, &[0xff, 0x2c, 0x24]).as_deref(),
            Some("jmp far")
        );
        // unmapped and non-canonical RIPs read nothing
        cpu.rip = lin + 0x1000;
        assert_eq!(instruction_at(&mem, &CodeAt::of_cpu(&cpu)), None);
        cpu.rip = 0x8000_0000_0000_0000;
        assert_eq!(instruction_at(&mem, &CodeAt::of_cpu(&cpu)), None);
    }

    #[test]
    fn compatibility_mode_decodes_32_bit_code_through_4_level_tables() {
        let (mem, mut cpu) = long_setup(0x40_0000);
        cpu.mode = raw::plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_COMPAT;
        cpu.seg[1].attr = 0xb | 0x10 | 3 << 5 | 0x80 | 1 << 14 | 1 << 15; // D=1, L=0
        cpu.seg[1].base = 0;
        cpu.rip = 0xffff_ffff_0040_0000; // only EIP counts
        let at = CodeAt::of_cpu(&cpu);
        assert_eq!((at.bitness, at.linear, at.ip), (32, 0x40_0000, 0x40_0000));
        assert!(matches!(at.paging, CodePaging::Long(_)));
        mem.put(0x10000, &[0x48, 0xcf]);
        assert_eq!(
            instruction_at(&mem, &at).map(|k| k.label()).as_deref(),
            Some("dec"),
            "48 is DEC EAX in 32-bit code"
        );
    }

    /// The driver's state, translated from Bochs's, finds the instruction where Bochs's does,
    /// in 64-bit and in compatibility mode.
    #[test]
    fn long_mode_from_the_abi_state_is_the_drivers() {
        let (_mem, mut cpu) = long_setup(0x7f12_3456_7000);
        let mut gs = GuestState::default();
        let xs = test_support::guest_state::layouts::AMD;
        crate::state::to_guest(&cpu, &xs, &mut gs);
        assert_eq!(CodeAt::of_guest(&gs), CodeAt::of_cpu(&cpu));
        assert_eq!(CodeAt::of_guest(&gs).bitness, 64);
        cpu.mode = raw::plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_COMPAT;
        cpu.seg[1].attr = 0xb | 0x10 | 3 << 5 | 0x80 | 1 << 14 | 1 << 15; // D=1, L=0
        cpu.rip = 0x40_0000;
        crate::state::to_guest(&cpu, &xs, &mut gs);
        assert_eq!(CodeAt::of_guest(&gs), CodeAt::of_cpu(&cpu));
        assert_eq!(CodeAt::of_guest(&gs).bitness, 32);
    }

    #[test]
    fn protected_mode_from_the_abi_state_is_the_drivers() {
        let (mem, mut gs) = setup();
        let mut cpu = test_support::guest_state::sample_state();
        cpu.cr0 = gs.cr0;
        cpu.cr3 = gs.cr3;
        cpu.cr4 = 0;
        cpu.efer = 0;
        cpu.rip = 0x40_0010;
        gs.rip = 0x40_0010;
        gs.segs[1].base = 0;
        cpu.seg[1].base = 0;
        cpu.seg[1].attr = gs.segs[1].attr;
        assert_eq!(CodeAt::of_cpu(&cpu), CodeAt::of_guest(&gs));
        mem.put(0x10010, &[0x48, 0xcf]);
        assert_eq!(
            instruction_at(&mem, &CodeAt::of_cpu(&cpu))
                .map(|k| k.label())
                .as_deref(),
            Some("dec")
        );
    }
}
