//! The guest state both sides exchange: registers, segments (with their descriptor caches),
//! control registers and the XSAVE image.

use crate::XsaveImage;

/// Segment register indices in [`GuestState::segs`] (the hardware `sreg` encoding).
pub mod seg {
    /// ES
    pub const ES: usize = 0;
    /// CS
    pub const CS: usize = 1;
    /// SS
    pub const SS: usize = 2;
    /// DS
    pub const DS: usize = 3;
    /// FS
    pub const FS: usize = 4;
    /// GS
    pub const GS: usize = 5;
    /// Names in index order, for messages.
    pub const NAMES: [&str; 6] = ["ES", "CS", "SS", "DS", "FS", "GS"];
}

/// General-purpose register indices in [`GuestState::gprs`] (the hardware encoding). The
/// 32-bit names index the same registers as RAX..RDI: outside long mode only their low
/// halves are the guest's.
pub mod gpr {
    /// EAX
    pub const EAX: usize = 0;
    /// ECX
    pub const ECX: usize = 1;
    /// EDX
    pub const EDX: usize = 2;
    /// EBX
    pub const EBX: usize = 3;
    /// ESP
    pub const ESP: usize = 4;
    /// EBP
    pub const EBP: usize = 5;
    /// ESI
    pub const ESI: usize = 6;
    /// EDI
    pub const EDI: usize = 7;
    /// R8 (long mode only, like R9..R15)
    pub const R8: usize = 8;
    /// R9
    pub const R9: usize = 9;
    /// R10
    pub const R10: usize = 10;
    /// R11
    pub const R11: usize = 11;
    /// R12
    pub const R12: usize = 12;
    /// R13
    pub const R13: usize = 13;
    /// R14
    pub const R14: usize = 14;
    /// R15
    pub const R15: usize = 15;
    /// Number of registers: 16 in long mode; outside it only EAX..EDI exist.
    pub const COUNT: usize = 16;
    /// Registers outside long mode (EAX..EDI).
    pub const LEGACY_COUNT: usize = 8;
}

/// [`Segment::flags`] bit set on exit when the segment register holds a selector that the
/// monitor did not install (the guest loaded a host GDT selector natively, e.g. 0x2b). The
/// selector is then reported as loaded, the descriptor fields are the ones installed at entry,
/// and the emulator must reload the descriptor from the guest's own tables.
pub const SEG_NOT_INSTALLED: u32 = 1;

/// One segment register: visible selector plus descriptor cache.
///
/// `attr` uses the VMX "access rights" packing of descriptor bytes 5 and 6: bits 0-3 type,
/// bit 4 S, bits 5-6 DPL, bit 7 P, bit 12 AVL, bit 13 L, bit 14 D/B, bit 15 G. `limit` is the
/// raw 20-bit descriptor limit (scaled by 4 KiB when G is set). `base` is 64 bits wide for
/// the FS and GS bases of long mode (IA32_FS_BASE/IA32_GS_BASE); a descriptor's base, all
/// there is outside long mode, fits in 32.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Guest-visible selector (TI=0 GDT selectors only in this version).
    pub selector: u16,
    /// Access rights, see the type documentation.
    pub attr: u16,
    /// Raw 20-bit limit.
    pub limit: u32,
    /// Base address.
    pub base: u64,
    /// Exit-only flags ([`SEG_NOT_INSTALLED`]); must be 0 on entry.
    pub flags: u32,
    /// Padding; must be zero.
    pub reserved: u32,
}

impl Segment {
    /// A flat 4 GiB 32-bit segment with the given selector and type (DPL 3, present, S=1).
    pub const fn flat(selector: u16, seg_type: u8) -> Self {
        Segment {
            selector,
            attr: (seg_type as u16 & 0xf) | 0x10 | (3 << 5) | 0x80 | (1 << 14) | (1 << 15),
            limit: 0xfffff,
            base: 0,
            flags: 0,
            reserved: 0,
        }
    }
    /// A flat execute/read code segment (type 0xB).
    pub const fn flat_code(selector: u16) -> Self {
        Self::flat(selector, 0xb)
    }
    /// A 64-bit code segment (type 0xB, L=1, D/B=0): long mode's user CS.
    pub const fn flat_code64(selector: u16) -> Self {
        let mut s = Self::flat(selector, 0xb);
        s.attr = (s.attr & !(1 << 14)) | (1 << 13);
        s
    }
    /// A flat read/write data segment (type 0x3).
    pub const fn flat_data(selector: u16) -> Self {
        Self::flat(selector, 0x3)
    }
    /// A null segment register value (selector 0..3, unusable).
    pub const fn null(selector: u16) -> Self {
        Segment {
            selector,
            attr: 0,
            limit: 0,
            base: 0,
            flags: 0,
            reserved: 0,
        }
    }
    /// True when the selector is a null selector (index 0, TI 0).
    pub const fn is_null(&self) -> bool {
        self.selector & !3 == 0
    }
    /// Descriptor type (bits 0-3 of `attr`).
    pub const fn seg_type(&self) -> u8 {
        (self.attr & 0xf) as u8
    }
    /// S bit (code/data rather than system).
    pub const fn s(&self) -> bool {
        self.attr & 0x10 != 0
    }
    /// Descriptor privilege level.
    pub const fn dpl(&self) -> u8 {
        ((self.attr >> 5) & 3) as u8
    }
    /// Present bit.
    pub const fn present(&self) -> bool {
        self.attr & 0x80 != 0
    }
    /// AVL bit.
    pub const fn avl(&self) -> bool {
        self.attr & (1 << 12) != 0
    }
    /// L bit (64-bit code).
    pub const fn long(&self) -> bool {
        self.attr & (1 << 13) != 0
    }
    /// D/B bit.
    pub const fn db(&self) -> bool {
        self.attr & (1 << 14) != 0
    }
    /// Granularity bit.
    pub const fn g(&self) -> bool {
        self.attr & (1 << 15) != 0
    }
    /// True for a code segment.
    pub const fn is_code(&self) -> bool {
        self.seg_type() & 0x8 != 0
    }
}

/// The guest's user-visible CPU state, in plain C layout, as both processes exchange it (accel-core
/// converts Bochs's own layout to and from it).
///
/// One state for both widths: the registers are 64 bits wide, and which of their bits are the
/// guest's follows from the mode ([`GuestState::long_mode`], [`GuestState::code64`]): outside
/// long mode only EAX..EDI, EIP, EFLAGS and 32-bit bases exist, and the upper halves and
/// R8..R15 must be zero (the entry rules refuse anything else).
///
/// Selectors in `segs` are the guest's own values; the translation to the host LDT happens
/// inside the driver. `rflags` must describe CPL 3 code with IF=1, IOPL=0 and TF/NT/RF/VM/VIF/
/// VIP clear, or the entry is refused as unsupported.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestState {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15 (see [`gpr`]).
    pub gprs: [u64; gpr::COUNT],
    /// Instruction pointer (offset in CS; linear in 64-bit code).
    pub rip: u64,
    /// RFLAGS (bits 63:22 reserved, zero).
    pub rflags: u64,
    /// ES, CS, SS, DS, FS, GS (see [`seg`]).
    pub segs: [Segment; 6],
    /// CR0 (PE, PG, WP, AM are read).
    pub cr0: u64,
    /// CR2 (carried through unchanged; page-fault exits report the address separately).
    pub cr2: u64,
    /// CR3: page-directory (PAE: PDPT; long mode: PML4) base.
    pub cr3: u64,
    /// CR4 (PSE, PAE, PGE are read).
    pub cr4: u64,
    /// EFER (NXE and LMA are read).
    pub efer: u64,
    /// The guest's XCR0: components of `xsave` that the guest has enabled (bit 0 always).
    pub xcr0: u64,
    /// Padding up to the 64-byte aligned image; must be zero.
    pub reserved: [u64; 6],
    /// x87/SSE/AVX/AVX-512 state, standard XSAVE format.
    pub xsave: XsaveImage,
}

/// EFER.LMA: long mode is active.
pub const EFER_LMA: u64 = 1 << 10;

impl GuestState {
    /// Long mode is active (EFER.LMA): 64-bit or compatibility mode.
    pub const fn long_mode(&self) -> bool {
        self.efer & EFER_LMA != 0
    }

    /// The code runs in 64-bit mode: long mode and a CS with L set. Only then are all 64 bits
    /// of the registers, R8..R15 and the vector registers beyond 7 the code's own.
    pub const fn code64(&self) -> bool {
        self.long_mode() && self.segs[seg::CS].long()
    }

    /// The registers of the 32-bit walker (2-level and PAE paging): outside long mode CR0,
    /// CR3 and CR4 fit in 32 bits (CR3's upper half is zero there), so the low halves are the
    /// whole registers. Long mode walks 4 levels with `guest_paging::LongRegs` instead.
    pub const fn legacy_paging_regs(&self) -> guest_paging::PagingRegs {
        guest_paging::PagingRegs::new(self.cr0 as u32, self.cr3 as u32, self.cr4 as u32, self.efer)
    }
}

impl Default for GuestState {
    fn default() -> Self {
        GuestState {
            gprs: [0; gpr::COUNT],
            rip: 0,
            rflags: 0x202,
            segs: [Segment::default(); 6],
            cr0: 0x8000_0011,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            xcr0: 0x3,
            reserved: [0; 6],
            xsave: XsaveImage::initial(),
        }
    }
}
