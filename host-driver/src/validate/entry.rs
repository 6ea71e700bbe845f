//! The entry rules: which guest states the executor can run natively.

use super::{
    EFL_IF, EFL_IOPL, EFL_NT, EFL_RESERVED_ZERO, EFL_RF, EFL_TF, EFL_VIF, EFL_VIP, EFL_VM,
};
use crate::error::DriverError;
use crate::protocol::{seg, GuestState, LDT_MIRROR_ENTRIES};
use crate::XsaveInfo;

/// Checks that `state` can be entered natively on a host transferring `xs`: the entry rules,
/// written once. [`crate::Executor::run`] applies them; callers may check first (the error is
/// [`DriverError::UnsupportedState`] naming the first rule broken).
pub fn validate_entry(state: &GuestState, xs: XsaveInfo) -> Result<(), DriverError> {
    let bad = |m: String| Err(DriverError::UnsupportedState(m));
    let f = state.eflags;
    if f & 2 == 0 || f & EFL_RESERVED_ZERO != 0 {
        return bad(format!("EFLAGS {f:#x} has reserved bits wrong"));
    }
    if f & EFL_IF == 0
        || f & (EFL_IOPL | EFL_TF | EFL_NT | EFL_RF | EFL_VM | EFL_VIF | EFL_VIP) != 0
    {
        return bad(format!(
            "EFLAGS {f:#x}: need IF=1, IOPL=0, TF/NT/RF/VM/VIF/VIP=0"
        ));
    }
    if state.cr0 & 1 == 0 {
        return bad("CR0.PE is clear".into());
    }
    if state.reserved != [0; 3] {
        return bad("reserved fields are not zero".into());
    }
    for (i, s) in state.segs.iter().enumerate() {
        let name = seg::NAMES[i];
        if s.flags != 0 {
            return bad(format!("{name}: flags must be 0 on entry"));
        }
        if s.selector & 4 != 0 {
            return bad(format!(
                "{name}: LDT selector {:#x} (guest LDTs are not mirrored)",
                s.selector
            ));
        }
        if s.selector >> 3 >= LDT_MIRROR_ENTRIES {
            return bad(format!(
                "{name}: GDT selector {:#x} beyond the {LDT_MIRROR_ENTRIES} mirrored GDT entries",
                s.selector
            ));
        }
        let null = s.is_null();
        match i {
            seg::CS => {
                if null || s.selector & 3 != 3 || !s.present() || !s.s() || !s.is_code() || s.long()
                {
                    return bad(format!(
                        "CS {:#x}/{:#x} is not a CPL 3 32/16-bit code segment",
                        s.selector, s.attr
                    ));
                }
                if s.seg_type() & 4 != 0 {
                    return bad("CS is a conforming code segment (modify_ldt refuses them)".into());
                }
                if s.dpl() != 3 {
                    return bad("CS DPL is not 3".into());
                }
            }
            seg::SS => {
                if null
                    || s.selector & 3 != 3
                    || !s.present()
                    || !s.s()
                    || s.is_code()
                    || s.seg_type() & 2 == 0
                    || s.dpl() != 3
                {
                    return bad(format!(
                        "SS {:#x}/{:#x} is not a writable DPL 3 data segment",
                        s.selector, s.attr
                    ));
                }
            }
            _ => {
                if !null {
                    let readable = !s.is_code() || s.seg_type() & 2 != 0;
                    if s.is_code() && s.seg_type() & 4 != 0 {
                        return bad(format!(
                            "{name} holds a conforming code segment (modify_ldt refuses them)"
                        ));
                    }
                    if !s.present() || !s.s() || !readable || s.dpl() != 3 {
                        return bad(format!(
                            "{name} {:#x}/{:#x} cannot be mirrored",
                            s.selector, s.attr
                        ));
                    }
                }
            }
        }
        if s.limit > 0xfffff || s.attr & 0x0f00 != 0 {
            return bad(format!("{name}: limit or attribute bits out of range"));
        }
        for t in &state.segs[..i] {
            if !null
                && !t.is_null()
                && t.selector >> 3 == s.selector >> 3
                && (t.base, t.limit, t.attr) != (s.base, s.limit, s.attr)
            {
                return bad(format!(
                    "{name} shares a GDT index with another register but not its descriptor"
                ));
            }
        }
    }
    let xcr0 = state.xcr0;
    if xcr0 & 1 == 0 || xcr0 & !xs.features != 0 {
        return bad(format!(
            "XCR0 {xcr0:#x} not a subset of host features {:#x}",
            xs.features
        ));
    }
    if xcr0 & 4 != 0 && xcr0 & 2 == 0 {
        return bad("XCR0 enables AVX without SSE".into());
    }
    if xcr0 & 0xe0 != 0 && (xcr0 & 0xe4 != 0xe4) {
        return bad("XCR0 enables part of AVX-512".into());
    }
    let img = &state.xsave;
    if img.xcomp_bv() != 0 || img.xstate_bv() & !xcr0 != 0 {
        return bad("XSAVE header: XCOMP_BV must be 0 and XSTATE_BV within XCR0".into());
    }
    if img.0[528..576].iter().any(|&b| b != 0) {
        return bad("XSAVE header reserved bytes are not zero".into());
    }
    if img.mxcsr() & !0xffff != 0 {
        return bad(format!("MXCSR {:#x} has reserved bits set", img.mxcsr()));
    }
    Ok(())
}
