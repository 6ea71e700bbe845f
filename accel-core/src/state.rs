//! State translation between Bochs's `plex86_accel_cpu_state` and [`host_driver::GuestState`].
//!
//! Reference sides (QEMU's accel-cpu-ops wording):
//!
//! * **Entry ([`to_guest`]): Bochs is the reference** for everything. The XSAVE image is built
//!   in the *host's* standard layout ([`XsaveInfo`] offsets: AVX, opmask and ZMM_Hi256 sit at
//!   different offsets on AMD and Intel hosts).
//! * **Exit ([`from_guest`]): the executor is the reference** for the GPRs, EIP, EFLAGS, the
//!   selectors it flags [`SEG_NOT_INSTALLED`] (reported in the returned reload mask) and the
//!   FPU/vector components that were transferred (the guest's effective XCR0). Bochs stays the
//!   reference for the control registers, CR2, the descriptor caches and every component that
//!   was not transferred: [`from_guest`] leaves those fields of the Bochs state untouched.
//!
//! ABI 6 carries long mode (16 64-bit GPRs, RIP, RFLAGS, 64-bit segment bases and control
//! registers, ZMM0-31); the driver's [`GuestState`] is still 32-bit. [`to_guest`] is only
//! called for a 32-bit protected-mode state (the library declines long mode before: see
//! [`crate::policy::mode_decline`]) and takes the low halves, which is what the guest has in
//! that mode; [`from_guest`] writes back only those low halves and keeps every bit the driver
//! does not carry (the upper halves, R8-R15, ZMM8-31, the upper 32 bits of the bases), so that
//! the 32-bit path converts exactly as in ABI 5. The XSAVE builders take the number of vector
//! registers of the mode ([`LEGACY_VECTOR_REGS`], [`LONG_VECTOR_REGS`]) for the 64-bit path.
//!
//! x87 details: Bochs keeps the registers in *physical* order (R0..R7) with a full tag word;
//! FXSAVE keeps them in *stack* order (ST(i) = R[(TOP+i) & 7]) with an abridged tag (bit i set
//! when physical register i is not empty). On the way back the full tag is recomputed from the
//! values as Bochs's `FPU_tagof` does (valid 00, zero 01, special 10, empty 11), which is what
//! an FXSAVE/FXRSTOR pair does on hardware too.

use bochs_ffi::raw::{
    plex86_accel_cpu_state as CpuState, plex86_accel_fpu_state as FpuState,
    plex86_accel_segment as BxSegment,
};
use host_driver::{GuestState, Segment, XsaveImage, XsaveInfo, SEG_NOT_INSTALLED};

/// CR4.OSXSAVE: the guest's XCR0 is only in force when it is set.
pub const CR4_OSXSAVE: u64 = 1 << 18;

/// Vector registers outside 64-bit mode: XMM/YMM/ZMM 0-7.
pub const LEGACY_VECTOR_REGS: usize = 8;
/// Vector registers in 64-bit mode: ZMM 0-31 (16-31 only with AVX-512's Hi16_ZMM).
pub const LONG_VECTOR_REGS: usize = 32;

/// The low 32 bits of a register.
const LOW32: u64 = 0xffff_ffff;

/// `wide` with its low 32 bits replaced by `low`.
fn merge_low32(wide: u64, low: u32) -> u64 {
    (wide & !LOW32) | u64::from(low)
}

use plex86_protocol::xsave::{fx, header};
pub use plex86_protocol::xsave::{xfeature, FCW_INIT};

/// MXCSR_MASK written into the image (Bochs does not carry one; the executor keeps the
/// entry's value and the kernel ignores it on sigreturn). 0xFFFF: every MXCSR bit incl. DAZ.
pub const MXCSR_MASK: u32 = 0xffff;

/// x87 register tags of the full tag word.
pub mod tag {
    /// A valid (normal) number.
    pub const VALID: u16 = 0;
    /// +0 or -0.
    pub const ZERO: u16 = 1;
    /// NaN, infinity, denormal, pseudo-denormal or unnormal.
    pub const SPECIAL: u16 = 2;
    /// Empty register.
    pub const EMPTY: u16 = 3;
}

/// The XSAVE components that carry guest state in a native run: x87 and SSE always (the XMM
/// registers and MXCSR exist whether or not the guest enabled them in XCR0), plus the guest's
/// XCR0 when CR4.OSXSAVE is set. This is the XCR0 handed to the executor.
pub fn effective_xcr0(cpu: &CpuState) -> u64 {
    let enabled = if cpu.cr4 & CR4_OSXSAVE != 0 {
        cpu.xcr0
    } else {
        0
    };
    xfeature::X87 | xfeature::SSE | enabled
}

/// The abridged (FXSAVE) tag: bit i set when physical register i is not empty.
pub fn abridged_tag(ftw: u16) -> u8 {
    (0..8).fold(0u8, |acc, i| {
        if (ftw >> (2 * i)) & 3 != tag::EMPTY {
            acc | (1 << i)
        } else {
            acc
        }
    })
}

/// Classifies an 80-bit register value (significand in bytes 0-7, sign/exponent in 8-9) as
/// Bochs's `FPU_tagof` does.
pub fn classify(reg: &[u8]) -> u16 {
    let frac = u64::from_le_bytes(reg[0..8].try_into().expect("8 bytes"));
    let exp = u16::from_le_bytes([reg[8], reg[9]]) & 0x7fff;
    if exp == 0 {
        if frac == 0 {
            tag::ZERO
        } else {
            tag::SPECIAL // denormal or pseudo-denormal
        }
    } else if exp == 0x7fff || frac & (1 << 63) == 0 {
        tag::SPECIAL // infinity, NaN, unsupported (pseudo-NaN/-infinity), unnormal
    } else {
        tag::VALID
    }
}

/// The full tag word from an abridged tag and the registers in *stack* order.
pub fn full_tag(abridged: u8, stack_regs: &[[u8; 10]; 8], top: u32) -> u16 {
    let mut ftw = 0u16;
    for phys in 0..8u32 {
        let t = if abridged & (1 << phys) == 0 {
            tag::EMPTY
        } else {
            classify(&stack_regs[(phys.wrapping_sub(top) & 7) as usize])
        };
        ftw |= t << (2 * phys);
    }
    ftw
}

fn top_of(fsw: u16) -> u32 {
    u32::from((fsw >> 11) & 7)
}

fn put(img: &mut XsaveImage, off: usize, bytes: &[u8]) {
    img.0[off..off + bytes.len()].copy_from_slice(bytes);
}

fn get<const N: usize>(img: &XsaveImage, off: usize) -> [u8; N] {
    img.0[off..off + N].try_into().expect("in range")
}

fn get_u16(img: &XsaveImage, off: usize) -> u16 {
    u16::from_le_bytes(get(img, off))
}

fn get_u32(img: &XsaveImage, off: usize) -> u32 {
    u32::from_le_bytes(get(img, off))
}

/// The host offset of component `bit`, when it is present and fits in the transferred image.
fn component(xs: &XsaveInfo, bit: usize, need: usize) -> Option<usize> {
    let (off, size) = xs.components[bit];
    let (off, size) = (off as usize, size as usize);
    (off >= header::END
        && size >= need
        && off + need <= (xs.size as usize).min(plex86_protocol::XSAVE_AREA_SIZE))
    .then_some(off)
}

/// One Bochs segment register as the driver's segment: `valid == 0` is a null (unusable)
/// register with the same selector.
pub fn segment_to_guest(s: &BxSegment) -> Segment {
    if s.valid == 0 {
        Segment::null(s.selector)
    } else {
        Segment {
            selector: s.selector,
            attr: s.attr,
            limit: s.limit,
            base: s.base as u32, // 32-bit mode: the cache holds a 32-bit base
            flags: 0,
        }
    }
}

/// Builds the host-layout XSAVE image of `fpu` for the components in `xcr0` (the effective
/// XCR0) that the host transfers, with the vector registers of 32-bit mode (ZMM0-7). Every
/// byte of `img` is written.
pub fn build_xsave(fpu: &FpuState, xcr0: u64, xs: &XsaveInfo, img: &mut XsaveImage) {
    build_xsave_regs(fpu, xcr0, xs, img, LEGACY_VECTOR_REGS);
}

/// [`build_xsave`] with `regs` vector registers ([`LEGACY_VECTOR_REGS`] or
/// [`LONG_VECTOR_REGS`]): XMM/YMM/ZMM_Hi256 of registers below 16, Hi16_ZMM of 16 and up.
pub fn build_xsave_regs(
    fpu: &FpuState,
    xcr0: u64,
    xs: &XsaveInfo,
    img: &mut XsaveImage,
    regs: usize,
) {
    let regs = regs.min(LONG_VECTOR_REGS);
    let low = regs.min(16);
    img.0.fill(0);
    put(img, fx::FCW, &fpu.fcw.to_le_bytes());
    put(img, fx::FSW, &fpu.fsw.to_le_bytes());
    img.0[fx::FTW] = abridged_tag(fpu.ftw);
    put(img, fx::FOP, &fpu.fop.to_le_bytes());
    put(img, fx::FIP, &fpu.fip.to_le_bytes());
    put(img, fx::FCS, &fpu.fcs.to_le_bytes());
    put(img, fx::FDP, &fpu.fdp.to_le_bytes());
    put(img, fx::FDS, &fpu.fds.to_le_bytes());
    put(img, fx::MXCSR, &fpu.mxcsr.to_le_bytes());
    put(img, fx::MXCSR_MASK, &MXCSR_MASK.to_le_bytes());
    let top = top_of(fpu.fsw);
    for i in 0..8u32 {
        let phys = ((top + i) & 7) as usize;
        put(img, fx::ST + 16 * i as usize, &fpu.st[phys][..10]);
    }
    for (i, z) in fpu.zmm[..low].iter().enumerate() {
        put(img, fx::XMM + 16 * i, &z[..16]);
    }
    let mut bv = xcr0 & xs.features & xfeature::TRANSFERRED;
    if bv & xfeature::AVX != 0 {
        match component(xs, 2, 16 * low) {
            Some(off) => fpu.zmm[..low]
                .iter()
                .enumerate()
                .for_each(|(i, z)| put(img, off + 16 * i, &z[16..32])),
            None => bv &= !xfeature::AVX,
        }
    }
    if bv & xfeature::OPMASK != 0 {
        match component(xs, 5, 8 * 8) {
            Some(off) => fpu
                .opmask
                .iter()
                .enumerate()
                .for_each(|(i, k)| put(img, off + 8 * i, &k.to_le_bytes())),
            None => bv &= !xfeature::OPMASK,
        }
    }
    if bv & xfeature::ZMM_HI256 != 0 {
        match component(xs, 6, 32 * low) {
            Some(off) => fpu.zmm[..low]
                .iter()
                .enumerate()
                .for_each(|(i, z)| put(img, off + 32 * i, &z[32..64])),
            None => bv &= !xfeature::ZMM_HI256,
        }
    }
    // Hi16_ZMM (ZMM16..31) exists only in 64-bit code: outside it its area stays zero (the
    // initial value, whatever XSTATE_BV says).
    if bv & xfeature::HI16_ZMM != 0 && regs > 16 {
        match component(xs, 7, 64 * (regs - 16)) {
            Some(off) => fpu.zmm[16..regs]
                .iter()
                .enumerate()
                .for_each(|(i, z)| put(img, off + 64 * i, z)),
            None => bv &= !xfeature::HI16_ZMM,
        }
    }
    img.set_u64_at(header::XSTATE_BV, bv);
}

/// Reads the host-layout image back into `fpu`, for the components in `xcr0` (the effective
/// XCR0 of the run). A component whose XSTATE_BV bit is clear gets its initial values;
/// components outside `xcr0` are left as they are (they were not transferred). Only the vector
/// registers of 32-bit mode (ZMM0-7) are read; the others are left as they are.
pub fn read_xsave(img: &XsaveImage, xcr0: u64, xs: &XsaveInfo, fpu: &mut FpuState) {
    read_xsave_regs(img, xcr0, xs, fpu, LEGACY_VECTOR_REGS);
}

/// [`read_xsave`] of `regs` vector registers ([`LEGACY_VECTOR_REGS`] or
/// [`LONG_VECTOR_REGS`]); registers from `regs` up are left as they are.
pub fn read_xsave_regs(
    img: &XsaveImage,
    xcr0: u64,
    xs: &XsaveInfo,
    fpu: &mut FpuState,
    regs: usize,
) {
    let regs = regs.min(LONG_VECTOR_REGS);
    let low = regs.min(16);
    let bv = img.xstate_bv() & xcr0;
    if xcr0 & xfeature::X87 != 0 {
        if bv & xfeature::X87 != 0 {
            fpu.fcw = get_u16(img, fx::FCW);
            fpu.fsw = get_u16(img, fx::FSW);
            fpu.fop = get_u16(img, fx::FOP);
            fpu.fip = get_u32(img, fx::FIP);
            fpu.fcs = get_u16(img, fx::FCS);
            fpu.fdp = get_u32(img, fx::FDP);
            fpu.fds = get_u16(img, fx::FDS);
            let top = top_of(fpu.fsw);
            let stack: [[u8; 10]; 8] = std::array::from_fn(|i| get(img, fx::ST + 16 * i));
            fpu.ftw = full_tag(img.0[fx::FTW], &stack, top);
            for (i, r) in stack.iter().enumerate() {
                let phys = (top as usize + i) & 7;
                fpu.st[phys] = [0; 16];
                fpu.st[phys][..10].copy_from_slice(r);
            }
        } else {
            fpu.fcw = FCW_INIT;
            fpu.fsw = 0;
            fpu.ftw = 0xffff;
            fpu.fop = 0;
            fpu.fip = 0;
            fpu.fcs = 0;
            fpu.fdp = 0;
            fpu.fds = 0;
            fpu.st = [[0; 16]; 8];
        }
    }
    if xcr0 & (xfeature::SSE | xfeature::AVX) != 0 {
        // XRSTOR loads MXCSR whenever SSE or AVX is requested, whatever XSTATE_BV says.
        fpu.mxcsr = get_u32(img, fx::MXCSR);
    }
    if xcr0 & xfeature::SSE != 0 {
        for (i, z) in fpu.zmm[..low].iter_mut().enumerate() {
            z[..16].copy_from_slice(&if bv & xfeature::SSE != 0 {
                get::<16>(img, fx::XMM + 16 * i)
            } else {
                [0; 16]
            });
        }
    }
    if xcr0 & xfeature::AVX != 0 {
        let off = component(xs, 2, 16 * low).filter(|_| bv & xfeature::AVX != 0);
        for (i, z) in fpu.zmm[..low].iter_mut().enumerate() {
            z[16..32].copy_from_slice(&off.map_or([0; 16], |o| get::<16>(img, o + 16 * i)));
        }
    }
    if xcr0 & xfeature::OPMASK != 0 {
        let off = component(xs, 5, 8 * 8).filter(|_| bv & xfeature::OPMASK != 0);
        for (i, k) in fpu.opmask.iter_mut().enumerate() {
            *k = off.map_or(0, |o| u64::from_le_bytes(get(img, o + 8 * i)));
        }
    }
    if xcr0 & xfeature::ZMM_HI256 != 0 {
        let off = component(xs, 6, 32 * low).filter(|_| bv & xfeature::ZMM_HI256 != 0);
        for (i, z) in fpu.zmm[..low].iter_mut().enumerate() {
            z[32..64].copy_from_slice(&off.map_or([0; 32], |o| get::<32>(img, o + 32 * i)));
        }
    }
    if xcr0 & xfeature::HI16_ZMM != 0 && regs > 16 {
        let off = component(xs, 7, 64 * (regs - 16)).filter(|_| bv & xfeature::HI16_ZMM != 0);
        for (i, z) in fpu.zmm[16..regs].iter_mut().enumerate() {
            *z = off.map_or([0; 64], |o| get::<64>(img, o + 64 * i));
        }
    }
}

const EFLAGS_RF: u32 = 1 << 16;

/// Bochs state → driver state (entry), for a 32-bit protected-mode state (the driver's state
/// is 32-bit: the low halves of the registers, EAX..EDI, 32-bit bases and control registers,
/// ZMM0-7). Every field of `out` is written.
pub fn to_guest(cpu: &CpuState, xs: &XsaveInfo, out: &mut GuestState) {
    for (d, &s) in out.gprs.iter_mut().zip(&cpu.gpr[..8]) {
        *d = s as u32;
    }
    out.eip = cpu.rip as u32;
    // RF (set by every IRET back from a fault) only suppresses instruction breakpoints for the
    // next instruction, and Bochs enters only with no breakpoint armed in DR7; PUSHF and fault
    // frames never store the RF of a completed instruction. Clearing it is therefore exact, and
    // the host driver requires it clear.
    out.eflags = cpu.rflags as u32 & !EFLAGS_RF;
    for (d, s) in out.segs.iter_mut().zip(&cpu.seg) {
        *d = segment_to_guest(s);
    }
    out.cr0 = cpu.cr0 as u32;
    out.cr2 = cpu.cr2 as u32;
    out.cr3 = cpu.cr3 as u32;
    out.cr4 = cpu.cr4 as u32;
    out.efer = cpu.efer;
    out.xcr0 = effective_xcr0(cpu);
    out.reserved = [0; 3];
    build_xsave(&cpu.fpu, out.xcr0, xs, &mut out.xsave);
}

/// Driver state → Bochs state (exit): writes what the executor is the reference for (see the
/// module documentation) and returns the `seg_reload` mask (bit i: segment register i holds a
/// selector the monitor did not install; its new selector is in `cpu.seg[i].selector` and its
/// descriptor cache must be reloaded by Bochs). Only the low 32 bits of EAX..EDI, RIP and
/// RFLAGS and ZMM0-7 are written: everything the 32-bit driver does not carry keeps Bochs's
/// value.
pub fn from_guest(gs: &GuestState, xs: &XsaveInfo, cpu: &mut CpuState) -> u32 {
    for (d, &s) in cpu.gpr[..8].iter_mut().zip(&gs.gprs) {
        *d = merge_low32(*d, s);
    }
    cpu.rip = merge_low32(cpu.rip, gs.eip);
    cpu.rflags = merge_low32(cpu.rflags, gs.eflags);
    let mut reload = 0;
    for (i, (s, d)) in gs.segs.iter().zip(cpu.seg.iter_mut()).enumerate() {
        if s.flags & SEG_NOT_INSTALLED != 0 {
            reload |= 1 << i;
            d.selector = s.selector;
        }
    }
    read_xsave(&gs.xsave, gs.xcr0, xs, &mut cpu.fpu);
    reload
}

#[cfg(test)]
mod tests;
