//! Where guest GDT selectors live natively: mirrored into the executor's LDT.

/// Index of the executor's LDT where guest GDT index 0 would be mirrored: guest GDT index *i*
/// is installed at LDT index `LDT_MIRROR_BASE + i`. Placed high in a one-page LDT (512
/// entries, so the kernel's `write_ldt` copies a page, not a vmalloc'ed 64 KiB): guest LDT
/// selectors, which a native load resolves in the same LDT, find empty slots and fault unless
/// they name one of these 64 indices (docs/ARCHITECTURE.md, "Segments").
pub const LDT_MIRROR_BASE: u16 = 448;
/// Guest GDT indices that can be mirrored (`0..LDT_MIRROR_ENTRIES`); states using higher ones
/// are emulated.
pub const LDT_MIRROR_ENTRIES: u16 = 64;

/// The host's 64-bit user code selector (Linux's `__USER_CS`): 64-bit guest code runs on it.
pub const HOST_CS64: u16 = 0x33;
/// The host's 32-bit user code selector (`__USER32_CS`; the kernel's compat syscall frames
/// carry it).
pub const HOST_CS32: u16 = 0x23;
/// The host's user data selector (`__USER_DS`): 64-bit guest code's SS when the guest's is
/// 0x2b too.
pub const HOST_SS64: u16 = 0x2b;

/// The native selector installed for a guest GDT selector: the mirror's LDT index, TI = 1, the
/// guest's RPL; null selectors stay null. `guest`'s index must be below
/// [`LDT_MIRROR_ENTRIES`] (checked at entry).
pub fn native_selector(guest: u16) -> u16 {
    if guest & !3 == 0 {
        guest
    } else {
        ((LDT_MIRROR_BASE + (guest >> 3)) << 3) | 4 | (guest & 3)
    }
}

/// The guest GDT selector a native LDT selector mirrors, if it is a mirror selector.
pub fn guest_selector(native: u16) -> Option<u16> {
    let index = native >> 3;
    (native & 4 != 0 && (LDT_MIRROR_BASE..LDT_MIRROR_BASE + LDT_MIRROR_ENTRIES).contains(&index))
        .then(|| ((index - LDT_MIRROR_BASE) << 3) | (native & 3))
}
