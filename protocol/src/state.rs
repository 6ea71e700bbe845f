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

/// General-purpose register indices in [`GuestState::gprs`] (the hardware encoding).
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
/// raw 20-bit descriptor limit (scaled by 4 KiB when G is set).
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
    pub base: u32,
    /// Exit-only flags ([`SEG_NOT_INSTALLED`]); must be 0 on entry.
    pub flags: u32,
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
        }
    }
    /// A flat execute/read code segment (type 0xB).
    pub const fn flat_code(selector: u16) -> Self {
        Self::flat(selector, 0xb)
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
/// Selectors in `segs` are the guest's own values; the translation to the host LDT happens
/// inside the driver. `eflags` must describe CPL 3 code with IF=1, IOPL=0 and TF/NT/RF/VM/VIF/
/// VIP clear, or the entry is refused as unsupported.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestState {
    /// EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI (see [`gpr`]).
    pub gprs: [u32; 8],
    /// Instruction pointer (offset in CS).
    pub eip: u32,
    /// EFLAGS.
    pub eflags: u32,
    /// ES, CS, SS, DS, FS, GS (see [`seg`]).
    pub segs: [Segment; 6],
    /// CR0 (PE, PG, WP, AM are read).
    pub cr0: u32,
    /// CR2 (carried through unchanged; page-fault exits report the address separately).
    pub cr2: u32,
    /// CR3: page-directory (or PDPT in PAE mode) base.
    pub cr3: u32,
    /// CR4 (PSE, PAE, PGE are read).
    pub cr4: u32,
    /// EFER (NXE is read).
    pub efer: u64,
    /// The guest's XCR0: components of `xsave` that the guest has enabled (bit 0 always).
    pub xcr0: u64,
    /// Padding; must be zero.
    pub reserved: [u64; 3],
    /// x87/SSE/AVX/AVX-512 state, standard XSAVE format.
    pub xsave: XsaveImage,
}

impl Default for GuestState {
    fn default() -> Self {
        GuestState {
            gprs: [0; 8],
            eip: 0,
            eflags: 0x202,
            segs: [Segment::default(); 6],
            cr0: 0x8000_0011,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            xcr0: 0x3,
            reserved: [0; 3],
            xsave: XsaveImage::initial(),
        }
    }
}
