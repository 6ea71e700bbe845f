//! Names the instruction behind an exit, for the statistics only (which privileged
//! instruction, which segment load, …). Bochs re-executes the instruction in every case; this
//! never influences a run.
//!
//! The bytes are read from guest RAM through the guest's page tables (the host driver's
//! walker, without A/D updates) and decoded with iced-x86 in 32-bit (or 16-bit) mode.

use guest_paging::{self as paging, PagingRegs, PhysMemory};
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

/// Reads up to 15 instruction bytes at `cs.base + eip`, page by page through the guest's
/// tables; returns how many could be read.
fn fetch(mem: &dyn GuestMemory, gs: &GuestState, buf: &mut [u8; 15]) -> usize {
    let regs = PagingRegs::new(gs.cr0, gs.cr3, gs.cr4, gs.efer);
    let lin = gs.segs[1].base.wrapping_add(gs.eip);
    paging::read_linear(&Phys(mem), &regs, lin, buf, |pa, b| mem.read(pa, b))
}

/// Decodes the instruction at the guest's CS:EIP. `None` when its bytes cannot be read or do
/// not decode.
pub fn instruction_at(mem: &dyn GuestMemory, gs: &GuestState) -> Option<InsnKey> {
    let mut buf = [0u8; 15];
    let n = fetch(mem, gs, &mut buf);
    if n == 0 {
        return None;
    }
    let bitness = if gs.segs[1].attr & (1 << 14) != 0 {
        32
    } else {
        16
    };
    let mut d = Decoder::with_ip(bitness, &buf[..n], u64::from(gs.eip), DecoderOptions::NONE);
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
        gs.eip = lin;
        instruction_at(mem, gs).map(|k| k.label())
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
        gs.eip = 0x40_0ffe;
        assert_eq!(
            instruction_at(&mem, &gs).map(|k| k.label()).as_deref(),
            Some("mov")
        );
        // Second page unmapped: the instruction is truncated and does not decode.
        mem.w32(0x2004, 0);
        assert_eq!(instruction_at(&mem, &gs), None);
    }

    #[test]
    fn unreadable_code_gives_none() {
        let (mem, mut gs) = setup();
        gs.eip = 0x80_0000; // no page table
        assert_eq!(instruction_at(&mem, &gs), None);
        gs.cr3 = 0x0100_0000; // tables outside RAM
        assert_eq!(instruction_at(&mem, &gs), None);
    }

    #[test]
    fn cs_base_is_applied() {
        let (mem, mut gs) = setup();
        mem.put(0x10100, &[0xfb]);
        gs.segs[1].base = 0x40_0000;
        gs.eip = 0x100;
        assert_eq!(
            instruction_at(&mem, &gs).map(|k| k.label()).as_deref(),
            Some("sti")
        );
    }
}
