//! The entry rules: which guest states the executor can run natively.

use super::{
    upper_half_in_32_bit_state, EFL_IF, EFL_IOPL, EFL_NT, EFL_RESERVED_ZERO, EFL_RF, EFL_TF,
    EFL_VIF, EFL_VIP, EFL_VM,
};
use crate::error::DriverError;
use crate::protocol::xsave::{header, xfeature};
use crate::protocol::{gpr, seg, GuestState, Segment, LDT_MIRROR_ENTRIES};
use crate::XsaveInfo;
use guest_paging::is_canonical;

const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;

/// The code an executor can run natively: what its entry rules accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeModes {
    /// 32-bit code outside long mode: today's executor, whose own code lives above 4 GiB
    /// where 64-bit guest code would run.
    Legacy32,
    /// That, and 64-bit code in long mode (CS.L=1), compatibility mode refused: what the
    /// stub executor ran before issue 15's compatibility-mode step (kept for callers that
    /// want no compatibility-mode code natively).
    Legacy32AndLong64,
    /// That, and compatibility mode (long mode, CS.L=0 D=1: a 32-bit process of a 64-bit
    /// guest): the stub executor, whose process holds nothing but S and the guest's mirrors
    /// (S above 4 GiB, where no 32-bit code reaches), and whose monitor walks 4-level tables.
    Legacy32Long64AndCompat,
}

impl CodeModes {
    /// Runs 64-bit code.
    pub fn long64(self) -> bool {
        self != CodeModes::Legacy32
    }

    /// Runs compatibility-mode code.
    pub fn compat(self) -> bool {
        self == CodeModes::Legacy32Long64AndCompat
    }
}

/// Checks that `state` can be entered natively on a host transferring `xs` by today's
/// executor ([`CodeModes::Legacy32`]): the entry rules, written once. [`crate::Executor::run`]
/// applies them; callers may check first (the error is [`DriverError::UnsupportedState`]
/// naming the first rule broken).
pub fn validate_entry(state: &GuestState, xs: XsaveInfo) -> Result<(), DriverError> {
    validate_entry_for(state, xs, CodeModes::Legacy32)
}

/// [`validate_entry`] for an executor that runs `modes`
/// ([`crate::stub::StubExecutor::code_modes`]).
pub fn validate_entry_for(
    state: &GuestState,
    xs: XsaveInfo,
    modes: CodeModes,
) -> Result<(), DriverError> {
    check_entry(state, xs, modes).map_err(DriverError::UnsupportedState)
}

fn check_entry(state: &GuestState, xs: XsaveInfo, modes: CodeModes) -> Result<(), String> {
    if state.code64() && modes.long64() {
        long64_rule(state)?;
    } else if state.long_mode() && !state.code64() && modes.compat() {
        compat_rule(state)?;
    } else {
        width_rule(state)?;
    }
    eflags_rule(state.rflags)?;
    if state.cr0 & 1 == 0 {
        return Err("CR0.PE is clear".into());
    }
    if state.reserved.iter().any(|&r| r != 0) {
        return Err("reserved fields are not zero".into());
    }
    for (i, s) in state.segs.iter().enumerate() {
        segment_rule(i, s, state.code64())?;
        shared_index_rule(i, &state.segs)?;
    }
    xsave_rule(state, xs)
}

/// 64-bit code on an executor that runs it: what the stub loads must be loadable (RIP, and
/// the FS/GS bases WRFSBASE/WRGSBASE take, canonical: else the stub's own entry faults) and
/// the paging one the 4-level walker mirrors (no 5-level paging).
fn long64_rule(state: &GuestState) -> Result<(), String> {
    if !is_canonical(state.rip) {
        return Err(format!("RIP {:#x} is not canonical", state.rip));
    }
    fs_gs_bases_canonical(state)?;
    long_paging_rule(state)
}

/// FS's and GS's bases canonical, as the stub's WRFSBASE/WRGSBASE at entry needs them.
fn fs_gs_bases_canonical(state: &GuestState) -> Result<(), String> {
    for i in [seg::FS, seg::GS] {
        let base = state.segs[i].base;
        if !is_canonical(base) {
            return Err(format!("{} base {base:#x} is not canonical", seg::NAMES[i]));
        }
    }
    Ok(())
}

/// Long mode's paging, as the 4-level walker mirrors it: paging on with PAE, no 5-level
/// paging.
fn long_paging_rule(state: &GuestState) -> Result<(), String> {
    if state.cr0 & CR0_PG == 0 || state.cr4 & CR4_PAE == 0 {
        return Err(format!(
            "long mode without paging (CR0 {:#x}, CR4 {:#x})",
            state.cr0, state.cr4
        ));
    }
    if state.cr4 & CR4_LA57 != 0 {
        return Err("CR4.LA57: 5-level paging is not mirrored".into());
    }
    Ok(())
}

/// Compatibility-mode code on an executor that runs it: 32-bit code as outside long mode
/// (EAX..EDI, EIP and EFLAGS 32 bits wide, the segment descriptors 32-bit ones for the LDT
/// mirror), under long mode's paging. CR3 may be wide (the PML4 lies anywhere in guest RAM)
/// and R8..R15 may hold anything: 32-bit code cannot reach them (the exit keeps the entry's),
/// but it may switch to 64-bit code natively, so the monitor enters with them as they are. A
/// null FS/GS is not used by compatibility-mode code (a null-selector access faults as in
/// legacy mode), but 64-bit code it switches to uses its base (a 64-bit TLS base), which
/// must be canonical for WRFSBASE; a loaded segment's base must fit a descriptor's 32 bits.
fn compat_rule(state: &GuestState) -> Result<(), String> {
    long_paging_rule(state)?;
    if !state.segs[seg::CS].db() {
        return Err("16-bit code in compatibility mode (CS.D=0) is not run natively".into());
    }
    if let Some(why) = upper_half_in_32_bit_state(state) {
        return Err(why);
    }
    for (name, cr) in [("CR0", state.cr0), ("CR4", state.cr4)] {
        if cr >> 32 != 0 {
            return Err(format!("{name} {cr:#x} has an upper half"));
        }
    }
    if let Some(i) = (0..6).find(|&i| !state.segs[i].is_null() && state.segs[i].base >> 32 != 0) {
        return Err(format!(
            "{} base {:#x} is at or above 4 GiB in compatibility mode",
            seg::NAMES[i],
            state.segs[i].base
        ));
    }
    // (A loaded segment's base is below 4 GiB by now: only a null one's can be wide.)
    fs_gs_bases_canonical(state)
}

/// Outside the long-mode code an executor runs, the executors run 32-bit code only (today's
/// executor refuses long mode for good): a long-mode state is refused, and a 32-bit one must hold nothing 32-bit code
/// does not have. Bochs exports zero there, so anything else is a translation bug, which must
/// not reach native code.
fn width_rule(state: &GuestState) -> Result<(), String> {
    if state.long_mode() {
        let (mode, who) = if state.code64() {
            ("64-bit", "this executor runs 32-bit code only")
        } else {
            (
                "compatibility",
                "this executor runs no compatibility-mode code",
            )
        };
        return Err(format!("long mode ({mode}, EFER {:#x}): {who}", state.efer));
    }
    if let Some(why) = upper_half_in_32_bit_state(state) {
        return Err(why);
    }
    if state.gprs[gpr::R8..].iter().any(|&r| r != 0) {
        return Err("R8..R15 are not zero outside long mode".into());
    }
    for (name, cr) in [("CR0", state.cr0), ("CR3", state.cr3), ("CR4", state.cr4)] {
        if cr >> 32 != 0 {
            return Err(format!(
                "{name} {cr:#x} has an upper half outside long mode"
            ));
        }
    }
    if let Some(i) = (0..6).find(|&i| state.segs[i].base >> 32 != 0) {
        return Err(format!(
            "{} base {:#x} is at or above 4 GiB outside long mode",
            seg::NAMES[i],
            state.segs[i].base
        ));
    }
    Ok(())
}

/// Native user code runs with interrupts on and nothing that changes how it runs or traps.
fn eflags_rule(f: u64) -> Result<(), String> {
    if f & 2 == 0 || f & EFL_RESERVED_ZERO != 0 {
        return Err(format!("EFLAGS {f:#x} has reserved bits wrong"));
    }
    if f & EFL_IF == 0
        || f & (EFL_IOPL | EFL_TF | EFL_NT | EFL_RF | EFL_VM | EFL_VIF | EFL_VIP) != 0
    {
        return Err(format!(
            "EFLAGS {f:#x}: need IF=1, IOPL=0, TF/NT/RF/VM/VIF/VIP=0"
        ));
    }
    Ok(())
}

/// Segment register `i` can be installed in the executor's mirror of the guest's GDT: CS a
/// CPL 3 code segment, SS a writable DPL 3 data segment, the others null or readable DPL 3.
fn segment_rule(i: usize, s: &Segment, code64: bool) -> Result<(), String> {
    let name = seg::NAMES[i];
    if s.flags != 0 {
        return Err(format!("{name}: flags must be 0 on entry"));
    }
    if s.reserved != 0 {
        return Err(format!("{name}: reserved field is not zero"));
    }
    if s.selector & 4 != 0 {
        return Err(format!(
            "{name}: LDT selector {:#x} (guest LDTs are not mirrored)",
            s.selector
        ));
    }
    if s.selector >> 3 >= LDT_MIRROR_ENTRIES {
        return Err(format!(
            "{name}: GDT selector {:#x} beyond the {LDT_MIRROR_ENTRIES} mirrored GDT entries",
            s.selector
        ));
    }
    match i {
        seg::CS => cs_rule(s, code64)?,
        seg::SS => ss_rule(s)?,
        _ => data_rule(name, s)?,
    }
    if s.limit > 0xfffff || s.attr & 0x0f00 != 0 {
        return Err(format!("{name}: limit or attribute bits out of range"));
    }
    Ok(())
}

/// CS: a CPL 3 code segment, 64-bit (L=1, D=0) for 64-bit code, else 32/16-bit.
fn cs_rule(s: &Segment, code64: bool) -> Result<(), String> {
    let width_ok = if code64 { !s.db() } else { !s.long() };
    if s.is_null() || s.selector & 3 != 3 || !s.present() || !s.s() || !s.is_code() || !width_ok {
        let kind = if code64 { "64-bit" } else { "32/16-bit" };
        return Err(format!(
            "CS {:#x}/{:#x} is not a CPL 3 {kind} code segment",
            s.selector, s.attr
        ));
    }
    if s.seg_type() & 4 != 0 {
        return Err("CS is a conforming code segment (modify_ldt refuses them)".into());
    }
    if s.dpl() != 3 {
        return Err("CS DPL is not 3".into());
    }
    Ok(())
}

fn ss_rule(s: &Segment) -> Result<(), String> {
    if s.is_null()
        || s.selector & 3 != 3
        || !s.present()
        || !s.s()
        || s.is_code()
        || s.seg_type() & 2 == 0
        || s.dpl() != 3
    {
        return Err(format!(
            "SS {:#x}/{:#x} is not a writable DPL 3 data segment",
            s.selector, s.attr
        ));
    }
    Ok(())
}

/// DS, ES, FS, GS: null, or a segment native code can read.
fn data_rule(name: &str, s: &Segment) -> Result<(), String> {
    if s.is_null() {
        return Ok(());
    }
    let readable = !s.is_code() || s.seg_type() & 2 != 0;
    if s.is_code() && s.seg_type() & 4 != 0 {
        return Err(format!(
            "{name} holds a conforming code segment (modify_ldt refuses them)"
        ));
    }
    if !s.present() || !s.s() || !readable || s.dpl() != 3 {
        return Err(format!(
            "{name} {:#x}/{:#x} cannot be mirrored",
            s.selector, s.attr
        ));
    }
    Ok(())
}

/// The mirror holds one descriptor per GDT index: registers `segs[..i]` that share segment
/// register `i`'s index must have loaded the same descriptor.
fn shared_index_rule(i: usize, segs: &[Segment]) -> Result<(), String> {
    let s = &segs[i];
    if s.is_null() {
        return Ok(());
    }
    for t in &segs[..i] {
        if !t.is_null()
            && t.selector >> 3 == s.selector >> 3
            && (t.base, t.limit, t.attr) != (s.base, s.limit, s.attr)
        {
            return Err(format!(
                "{} shares a GDT index with another register but not its descriptor",
                seg::NAMES[i]
            ));
        }
    }
    Ok(())
}

/// XCR0 is one the host can load, and the XSAVE image one XRSTOR accepts.
fn xsave_rule(state: &GuestState, xs: XsaveInfo) -> Result<(), String> {
    let xcr0 = state.xcr0;
    if xcr0 & 1 == 0 || xcr0 & !xs.features != 0 {
        return Err(format!(
            "XCR0 {xcr0:#x} not a subset of host features {:#x}",
            xs.features
        ));
    }
    if xcr0 & xfeature::AVX != 0 && xcr0 & xfeature::SSE == 0 {
        return Err("XCR0 enables AVX without SSE".into());
    }
    let avx512 = xfeature::AVX512 | xfeature::AVX;
    if xcr0 & xfeature::AVX512 != 0 && xcr0 & avx512 != avx512 {
        return Err("XCR0 enables part of AVX-512".into());
    }
    let img = &state.xsave;
    if img.xcomp_bv() != 0 || img.xstate_bv() & !xcr0 != 0 {
        return Err("XSAVE header: XCOMP_BV must be 0 and XSTATE_BV within XCR0".into());
    }
    if img.0[header::RESERVED..header::END].iter().any(|&b| b != 0) {
        return Err("XSAVE header reserved bytes are not zero".into());
    }
    if img.mxcsr() & !0xffff != 0 {
        return Err(format!("MXCSR {:#x} has reserved bits set", img.mxcsr()));
    }
    Ok(())
}
