//! The executor's response to a run: every field checked against what the library knows, and
//! the guest state rebuilt from the entry state and the fields the guest may have changed.

use super::{upper_half_in_32_bit_state, EFL_IOPL, EFL_RESERVED_ZERO, EFL_RF, EFL_TF, EFL_VM};
use crate::protocol::xsave::{fx, header, sw, xfeature, FCW_INIT};
use crate::protocol::{
    gpr, guest_selector, native_selector, seg, ExecArea, ExitReason, ExitRecord, GuestState,
    Segment, Status, HOST_CS32, HOST_CS64, HOST_SS64, SEG_NOT_INSTALLED,
};
use crate::XsaveInfo;

/// What the library knows when a run's response arrives: what [`check_exit`] holds the
/// executor's response to.
#[derive(Clone, Copy, Debug)]
pub struct RunContext {
    /// Sequence number of the run request.
    pub seq: u32,
    /// The run's budget in nanoseconds.
    pub budget_ns: u64,
    /// Size of guest RAM in bytes.
    pub ram_size: u64,
    /// The XSAVE layout of the host (what the executor reported at start).
    pub xsave: XsaveInfo,
}

/// Validates the executor's response `area` to a run entered with `entry`: the pure part of
/// [`crate::Executor::run`]'s acceptance (no executor needed). Decodes the exit into `exit`
/// and returns the guest state after the run (`None` after a guest escape: not meaningful
/// then). `Err` names the first bad field (`exit` is then unspecified).
pub(crate) fn check_exit(
    entry: &GuestState,
    area: &ExecArea,
    ctx: &RunContext,
    exit: &mut ExitRecord,
) -> Result<Option<GuestState>, String> {
    if area.status != Status::Exited as u32 {
        return Err(format!("status {} after a run", area.status));
    }
    if area.resp_seq != ctx.seq {
        return Err(format!("sequence {} != {}", area.resp_seq, ctx.seq));
    }
    ExitRecord::decode_into(&area.exit, exit)?;
    if exit.native_ns > ctx.budget_ns.saturating_add(600_000_000_000) {
        return Err(format!("native time {} ns", exit.native_ns));
    }
    if exit.reason.ends_executor() {
        return Ok(None);
    }
    for &p in exit.code_pages.as_slice() {
        if p % 4096 != 0 || p >= ctx.ram_size {
            return Err(format!("code page {p:#x}"));
        }
    }
    let state = validate_exit_state(entry, &area.state, ctx.xsave)?;
    check_reason_against_state(&exit.reason, entry, &state)?;
    Ok(Some(state))
}

/// What an exit's reason says about the state it came with, checked: a single step leaves TF
/// set (only an instruction run with TF set single-steps, and nothing but a #DB clears it),
/// and a memory exit of 32-bit code names a 32-bit address (compatibility-mode code's too:
/// its linear addresses are 32 bits wide).
pub(crate) fn check_reason_against_state(
    reason: &ExitReason,
    entry: &GuestState,
    state: &GuestState,
) -> Result<(), String> {
    if *reason == ExitReason::SingleStep && state.rflags & EFL_TF == 0 {
        return Err(format!("single-step exit with EFLAGS {:#x}", state.rflags));
    }
    match reason.linear() {
        Some(linear) if linear >> 32 != 0 && !entry.code64() && !state.code64() => Err(format!(
            "linear address {linear:#x} of an exit outside 64-bit code"
        )),
        _ => Ok(()),
    }
}

/// Checks the executor-reported state against the entry state and builds the guest view.
/// `Err` names a field no honest executor could report.
pub(crate) fn validate_exit_state(
    entry: &GuestState,
    got: &GuestState,
    xs: XsaveInfo,
) -> Result<GuestState, String> {
    let mut out = *entry;
    // Long-mode code may switch between 64-bit and compatibility mode natively (a far transfer
    // to the host's other user code selector): such a run, and one that entered in 64-bit
    // code, reports whole registers.
    let cs = got.segs[seg::CS].selector;
    let switched = entry.long_mode()
        && (cs == HOST_CS64 || cs == HOST_CS32)
        && cs != entry_native_selector(entry, seg::CS);
    let code64 = entry.code64() || switched;
    if !code64 {
        // 32-bit code has nothing more, and cannot reach R8..R15 (64-bit code would have been
        // an escape).
        if let Some(why) = upper_half_in_32_bit_state(got) {
            return Err(why);
        }
        if got.gprs[gpr::R8..] != entry.gprs[gpr::R8..] {
            return Err("R8..R15 changed by 32-bit code".into());
        }
    }
    out.gprs = got.gprs;
    if !guest_paging::is_canonical(got.rip) {
        return Err(format!("RIP {:#x} is not canonical", got.rip));
    }
    out.rip = got.rip;
    let f = got.rflags;
    if f & 2 == 0 || f & EFL_RESERVED_ZERO != 0 || f & (EFL_VM | EFL_IOPL | EFL_RF) != 0 {
        return Err(format!("EFLAGS {f:#x}"));
    }
    out.rflags = f;
    for i in 0..6 {
        let (e, g) = (&entry.segs[i], &got.segs[i]);
        // 64-bit code moves its FS/GS bases itself (WRFSBASE, a selector load): reported back,
        // if canonical (WRFSBASE takes nothing else, and the emulator takes nothing else).
        let moved_base = code64 && (i == seg::FS || i == seg::GS);
        let base_ok = if moved_base {
            guest_paging::is_canonical(g.base)
        } else {
            g.base == e.base
        };
        if !base_ok || (g.attr, g.limit, g.flags, g.reserved) != (e.attr, e.limit, 0, 0) {
            return Err(format!("segment {} descriptor changed", seg::NAMES[i]));
        }
        let native = g.selector;
        // Native CPL 3 code cannot change CPL (the emulator refuses such a state outright).
        if (i == seg::CS || i == seg::SS) && (native & 3 != 3 || native & !3 == 0) {
            return Err(format!(
                "{} selector {native:#x} is not a CPL 3 selector",
                seg::NAMES[i]
            ));
        }
        if native == entry_native_selector(entry, i) {
            out.segs[i] = Segment { base: g.base, ..*e };
            continue;
        }
        let guest = if native & 4 == 0 {
            // Null, or a GDT selector value that native code loaded (glibc loads its TLS
            // selector 0x33 so): it resolved in the host's GDT. The emulator reloads it from
            // the guest's GDT, and stops if the guest could not have loaded it.
            native
        } else {
            // Only the mirror's slots of the LDT are filled: any other LDT load faults natively.
            guest_selector(native).ok_or_else(|| {
                format!(
                    "{} selector {native:#x} is no mirror selector",
                    seg::NAMES[i]
                )
            })?
        };
        // A mirror slot maps back to a guest selector: for CS and SS it must be one CPL 3 code
        // could hold (mirror slot 0 is the null selector's).
        if (i == seg::CS || i == seg::SS) && guest & !3 == 0 {
            return Err(format!(
                "{} selector {native:#x} maps back to the null selector",
                seg::NAMES[i]
            ));
        }
        out.segs[i] = Segment {
            selector: guest,
            flags: SEG_NOT_INSTALLED,
            base: g.base,
            ..*e
        };
        if i == seg::CS && native & 4 == 0 {
            // The host's code descriptor native code ran on since: the emulator reloads the
            // guest's and takes the state only if it is of the same kind.
            out.segs[i] = host_code_segment(native, entry.long_mode())
                .ok_or_else(|| format!("CS selector {native:#x} is no host code selector"))?;
        }
    }
    let img = &got.xsave;
    if img.xcomp_bv() != 0 || img.xstate_bv() & !entry.xcr0 != 0 {
        return Err(format!(
            "XSAVE header {:#x}/{:#x}",
            img.xstate_bv(),
            img.xcomp_bv()
        ));
    }
    if img.0[header::RESERVED..header::END].iter().any(|&b| b != 0) {
        return Err("XSAVE header reserved bytes".into());
    }
    let n = xs.size as usize;
    out.xsave.0[..n].copy_from_slice(&img.0[..n]);
    // The software-available bytes of the FXSAVE layout: keep the guest's.
    out.xsave.0[sw::START..sw::END].copy_from_slice(&entry.xsave.0[sw::START..sw::END]);
    // MXCSR_MASK describes the CPU, not the guest: keep the guest's value.
    let mask = fx::MXCSR_MASK..fx::MXCSR_MASK + 4;
    out.xsave.0[mask.clone()].copy_from_slice(&entry.xsave.0[mask]);
    normalize_xsave(&mut out.xsave, entry.xcr0, &xs);
    Ok(out)
}

/// The native selector the entry put in segment register `i`: the mirror's LDT selector of
/// the guest's, but 64-bit code's CS, the host's `__USER_CS` (the kernel makes no 64-bit LDT
/// descriptor), and its SS when that is 0x2b, the host's `__USER_DS` (the monitor mirrors any
/// other SS, so that a native 0x2b is never ambiguous).
fn entry_native_selector(entry: &GuestState, i: usize) -> u16 {
    match i {
        seg::CS if entry.code64() => HOST_CS64,
        seg::SS if entry.code64() && entry.segs[seg::SS].selector == HOST_SS64 => HOST_SS64,
        _ => native_selector(entry.segs[i].selector),
    }
}

/// The descriptor cache, flagged for reload, of a CS that native code loaded from the host's
/// GDT: its two user code segments, both flat, 64-bit (only in long mode: outside it the
/// monitor ends such a run as an escape) and 32-bit. `None` for any other selector.
fn host_code_segment(native: u16, long_mode: bool) -> Option<Segment> {
    // Present, DPL 3, code, readable, accessed; G; L (64-bit) or D (32-bit).
    let attr = match native {
        HOST_CS64 if long_mode => 0xa0fb,
        HOST_CS32 => 0xc0fb,
        _ => return None,
    };
    Some(Segment {
        selector: native,
        attr,
        limit: 0xf_ffff,
        flags: SEG_NOT_INSTALLED,
        reserved: 0,
        base: 0,
    })
}

/// Writes the initial values into the areas of components whose XSTATE_BV bit is clear, so
/// that equal states have equal images.
fn normalize_xsave(img: &mut crate::XsaveImage, xcr0: u64, xs: &XsaveInfo) {
    let bv = img.xstate_bv();
    let x87 = xfeature::X87;
    if xcr0 & x87 != 0 && bv & x87 == 0 {
        img.0[fx::FCW..fx::MXCSR].fill(0);
        img.0[fx::FCW..fx::FCW + 2].copy_from_slice(&FCW_INIT.to_le_bytes());
        img.0[fx::ST..fx::XMM].fill(0);
    }
    if xcr0 & xfeature::SSE != 0 && bv & xfeature::SSE == 0 {
        img.0[fx::XMM..fx::XMM_END].fill(0);
    }
    for (bit, &(off, len)) in xs.components.iter().enumerate().skip(2) {
        let (off, len) = (off as usize, len as usize);
        if xcr0 & (1 << bit) != 0 && bv & (1 << bit) == 0 && off + len <= img.0.len() {
            img.0[off..off + len].fill(0);
        }
    }
}
