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
//! registers, ZMM0-31), and so does the driver's [`GuestState`] (protocol 6). [`to_guest`]
//! converts each mode as Bochs exports it: in long mode (EFER.LMA) the 16 registers, RIP,
//! RFLAGS, the bases and the control registers whole, and in 64-bit code the vector registers
//! of 64-bit mode (XMM8-15, all of YMM, ZMM_Hi256 0-15, Hi16_ZMM 16-31, k0-k7:
//! [`LONG_VECTOR_REGS`]); outside long mode the low halves, EAX..EDI, 32-bit bases and control
//! registers and ZMM0-7 ([`LEGACY_VECTOR_REGS`]), exactly as in ABI 5. [`from_guest`] writes
//! back what the mode's code can change: in 64-bit code every register whole, the FS and GS
//! bases (WRFSBASE, or the kernel's MSR write) and ZMM0-31; otherwise only the low halves of
//! EAX..EDI, EIP and EFLAGS and ZMM0-7 (`.dword` semantics), keeping every bit 32-bit code
//! does not have (the upper halves, R8-R15, ZMM8-31). The library still declines long mode
//! before it converts anything ([`crate::policy::mode_decline`]); the translation is ready
//! for when it does not.
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
use host_driver::protocol::{gpr, seg, EFER_LMA};
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
/// register with the same selector. In long mode the base is whole and kept for a null
/// register too: a 64-bit process's FS and GS usually hold selector 0 and a base
/// (IA32_FS_BASE, WRFSBASE) that is its thread pointer. Outside long mode the cache holds a
/// 32-bit base, and a null register none.
pub fn segment_to_guest(s: &BxSegment, long_mode: bool) -> Segment {
    let null = Segment::null(s.selector);
    match (s.valid != 0, long_mode) {
        (false, false) => null,
        (false, true) => Segment {
            base: s.base,
            ..null
        },
        (true, _) => Segment {
            selector: s.selector,
            attr: s.attr,
            limit: s.limit,
            base: if long_mode { s.base } else { s.base & LOW32 },
            flags: 0,
            reserved: 0,
        },
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

const EFLAGS_RF: u64 = 1 << 16;

/// The vector registers a state carries: all 32 in long mode, compatibility mode included
/// (native code may switch to 64-bit mode and back; ABI 9), ZMM0-7 outside it.
fn vector_regs(gs: &GuestState) -> usize {
    if gs.long_mode() {
        LONG_VECTOR_REGS
    } else {
        LEGACY_VECTOR_REGS
    }
}

/// A long-mode run that came back with CS for reload switched modes natively (the host's other
/// user code selector, [`SEG_NOT_INSTALLED`]): its registers are whole, whichever mode it left
/// in.
fn switched_modes(gs: &GuestState) -> bool {
    gs.long_mode() && gs.segs[seg::CS].flags & SEG_NOT_INSTALLED != 0
}

/// Bochs state → driver state (entry), in the state's mode (see the module documentation):
/// whole in long mode, the low halves (EAX..EDI, EIP, 32-bit bases and control registers,
/// ZMM0-7) outside it. Every field of `out` is written.
pub fn to_guest(cpu: &CpuState, xs: &XsaveInfo, out: &mut GuestState) {
    let long = cpu.efer & EFER_LMA != 0;
    // Bochs exports all 16 registers 64 bits wide in long mode, EAX..EDI zero-extended
    // outside it; the mask keeps a 32-bit state's upper halves and R8..R15 zero whatever.
    let width = |v: u64| if long { v } else { v & LOW32 };
    for (i, (d, &s)) in out.gprs.iter_mut().zip(&cpu.gpr).enumerate() {
        *d = if long || i < gpr::LEGACY_COUNT {
            width(s)
        } else {
            0
        };
    }
    out.rip = width(cpu.rip);
    // RF (set by every IRET back from a fault) only suppresses instruction breakpoints for the
    // next instruction, and Bochs enters only with no breakpoint armed in DR7; PUSHF and fault
    // frames never store the RF of a completed instruction. Clearing it is therefore exact, and
    // the host driver requires it clear.
    out.rflags = width(cpu.rflags) & !EFLAGS_RF;
    for (d, s) in out.segs.iter_mut().zip(&cpu.seg) {
        *d = segment_to_guest(s, long);
    }
    out.cr0 = width(cpu.cr0);
    out.cr2 = width(cpu.cr2);
    out.cr3 = width(cpu.cr3);
    out.cr4 = width(cpu.cr4);
    out.efer = cpu.efer;
    out.xcr0 = effective_xcr0(cpu);
    out.reserved = [0; 6];
    let regs = vector_regs(out);
    build_xsave_regs(&cpu.fpu, out.xcr0, xs, &mut out.xsave, regs);
}

/// Driver state → Bochs state (exit): writes what the executor is the reference for (see the
/// module documentation) and returns the `seg_reload` mask (bit i: segment register i holds a
/// selector the monitor did not install; its new selector is in `cpu.seg[i].selector` and its
/// descriptor cache must be reloaded by Bochs; for CS the cache written is the host descriptor
/// native code ran on since, whose kind Bochs checks against the guest's). 64-bit code's
/// registers, and those of a run that switched modes, are written whole, with the FS and GS
/// bases; for 32-bit code only the low 32 bits of EAX..EDI, RIP and RFLAGS are written:
/// everything 32-bit code does not have keeps Bochs's value. ZMM0-31 in long mode (what
/// compatibility-mode code cannot reach comes back as it went in), else ZMM0-7.
pub fn from_guest(gs: &GuestState, xs: &XsaveInfo, cpu: &mut CpuState) -> u32 {
    if gs.code64() || switched_modes(gs) {
        cpu.gpr = gs.gprs;
        cpu.rip = gs.rip;
        cpu.rflags = gs.rflags;
        for i in [seg::FS, seg::GS] {
            cpu.seg[i].base = gs.segs[i].base;
        }
    } else {
        for (d, &s) in cpu.gpr[..gpr::LEGACY_COUNT].iter_mut().zip(&gs.gprs) {
            *d = merge_low32(*d, s as u32);
        }
        cpu.rip = merge_low32(cpu.rip, gs.rip as u32);
        cpu.rflags = merge_low32(cpu.rflags, gs.rflags as u32);
    }
    let mut reload = 0;
    for (i, (s, d)) in gs.segs.iter().zip(cpu.seg.iter_mut()).enumerate() {
        if s.flags & SEG_NOT_INSTALLED != 0 {
            reload |= 1 << i;
            d.selector = s.selector;
            if i == seg::CS {
                (d.attr, d.limit, d.base, d.valid) = (s.attr, s.limit, s.base, 1);
            }
        }
    }
    read_xsave_regs(&gs.xsave, gs.xcr0, xs, &mut cpu.fpu, vector_regs(gs));
    reload
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_long;
