//! The invariants an accepted response must meet (see the documentation of
//! [`crate::control_region`]).

use super::case::Setup;
use guest_paging::is_canonical;
use host_driver::fuzzing::{guest_selector, native_selector, Accepted};
use host_driver::{ExitReason, GuestState, Segment, XsaveImage, XsaveInfo, SEG_NOT_INSTALLED};
use plex86_protocol::xsave::{header, sw};
use plex86_protocol::{gpr, seg, ExecArea, RawReason, Status, MAX_CODE_PAGES};

const EFL_RESERVED_ZERO: u64 = (1 << 3) | (1 << 5) | (1 << 15) | 0xffff_ffff_ffc0_0000;
const EFL_IOPL_VM_RF: u64 = (3 << 12) | (1 << 17) | (1 << 16);

/// The x87 part of an XSAVE image in its initial state (FCW 0x037F, the rest zero).
fn x87_initial(img: &XsaveImage) -> bool {
    img.0[0..2] == [0x7f, 0x03]
        && img.0[2..24].iter().all(|&b| b == 0)
        && img.0[32..160].iter().all(|&b| b == 0)
}

/// Checks an accepted response against the invariants listed in [`crate::control_region`].
pub(super) fn check_accepted(s: &Setup, area: &ExecArea, a: &Accepted) {
    let (entry, ctx) = (&s.entry, &s.ctx);
    assert_eq!(
        area.status,
        Status::Exited as u32,
        "accepted with status {}",
        area.status
    );
    assert_eq!(
        area.resp_seq, ctx.seq,
        "accepted with a stale sequence number"
    );
    assert!(
        a.exit.native_time().as_nanos() <= u128::from(ctx.budget_ns) + 600_000_000_000,
        "native time {:?} for a budget of {} ns",
        a.exit.native_time(),
        ctx.budget_ns
    );
    assert!(
        a.exit.fill_time() <= a.exit.native_time(),
        "fill time {:?} above native time {:?}",
        a.exit.fill_time(),
        a.exit.native_time()
    );
    if a.exit.reason.ends_executor() {
        assert_eq!(area.exit.reason, RawReason::GuestEscape as u32);
        assert!(a.state == *entry, "a guest escape changed the state");
        assert!(a.exit.code_pages.as_slice().is_empty());
        return;
    }
    assert_ne!(area.exit.reason, RawReason::GuestEscape as u32);
    let n = area.exit.n_code_pages as usize;
    assert_eq!(a.exit.code_pages.as_slice(), &area.exit.code_pages[..n]);
    assert_eq!(a.state.gprs, area.state.gprs);
    assert_eq!(a.state.rip, area.state.rip);
    check_state(entry, &ctx.xsave, ctx.ram_size, a);
}

/// The invariants of an accepted exit's state and code pages that hold whichever executor
/// reported it (today's, or the stub through `stub_region`), for a run entered with `entry`
/// on a host transferring `xs` with `ram_size` bytes of guest RAM.
pub(crate) fn check_state(entry: &GuestState, xs: &XsaveInfo, ram_size: u64, a: &Accepted) {
    let n = a.exit.code_pages.as_slice().len();
    assert!(n <= MAX_CODE_PAGES, "{n} code pages accepted");
    for &p in a.exit.code_pages.as_slice() {
        assert!(
            p % 4096 == 0 && p < ram_size,
            "code page {p:#x} accepted (RAM size {ram_size:#x})"
        );
    }
    let st = &a.state;
    if !entry.code64() {
        // 32-bit code: nothing in the upper halves, R8..R15 untouched.
        assert!(
            st.gprs[..gpr::LEGACY_COUNT].iter().all(|&g| g >> 32 == 0)
                && st.rip >> 32 == 0
                && st.rflags >> 32 == 0,
            "an upper half accepted from 32-bit code: {:x?} RIP {:#x} RFLAGS {:#x}",
            st.gprs,
            st.rip,
            st.rflags
        );
        assert_eq!(st.gprs[gpr::R8..], entry.gprs[gpr::R8..], "R8..R15 changed");
        if let Some(linear) = a.exit.reason.linear() {
            assert!(linear >> 32 == 0, "linear address {linear:#x} accepted");
        }
    } else {
        // 64-bit code: what it can hold is canonical (RIP, the FS/GS bases WRFSBASE takes),
        // RFLAGS is 32 bits wide.
        assert!(is_canonical(st.rip), "RIP {:#x} accepted", st.rip);
        for i in [seg::FS, seg::GS] {
            let b = st.segs[i].base;
            assert!(is_canonical(b), "{} base {b:#x} accepted", seg::NAMES[i]);
        }
        assert!(st.rflags >> 32 == 0, "RFLAGS {:#x} accepted", st.rflags);
        // A #PF exit names a canonical address: the 4-level walk faults at no other. (An access
        // to emulate may name any: an LA57 host's #PF can, and Bochs raises the #GP itself.)
        if let ExitReason::PageFault { linear, .. } = a.exit.reason {
            assert!(is_canonical(linear), "#PF at {linear:#x} accepted");
        }
    }
    let f = st.rflags;
    assert!(
        f & 2 != 0 && f & EFL_RESERVED_ZERO == 0 && f & EFL_IOPL_VM_RF == 0,
        "EFLAGS {f:#x} accepted"
    );
    assert_eq!(
        (
            st.cr0,
            st.cr2,
            st.cr3,
            st.cr4,
            st.efer,
            st.xcr0,
            st.reserved
        ),
        (
            entry.cr0,
            entry.cr2,
            entry.cr3,
            entry.cr4,
            entry.efer,
            entry.xcr0,
            entry.reserved
        ),
        "control registers are taken from the request"
    );
    for (i, (o, e)) in st.segs.iter().zip(&entry.segs).enumerate() {
        let name = seg::NAMES[i];
        // (64-bit code may move its FS/GS bases.)
        let base_kept = o.base == e.base || (entry.code64() && (i == seg::FS || i == seg::GS));
        assert!(
            (o.attr, o.limit, o.reserved) == (e.attr, e.limit, e.reserved) && base_kept,
            "{name}: descriptor changed: {o:x?} after {e:x?}"
        );
        match o.flags {
            0 if entry.code64() && (i == seg::FS || i == seg::GS) => {
                // 64-bit code's FS/GS bases are its own (checked canonical above).
                assert_eq!(
                    o.selector, e.selector,
                    "{name}: unflagged, another selector"
                );
            }
            0 => assert_eq!(o, e, "{name}: unflagged but not the entry's register"),
            SEG_NOT_INSTALLED => assert_eq!(
                o.selector & 4,
                0,
                "{name}: flagged selector {:#x} is an LDT selector",
                o.selector
            ),
            fl => panic!("{name}: flags {fl:#x}"),
        }
    }
    for i in [seg::CS, seg::SS] {
        let sel = st.segs[i].selector;
        assert!(
            sel & 3 == 3 && sel & !3 != 0,
            "{} selector {sel:#06x} accepted: native CPL 3 code cannot change CPL",
            seg::NAMES[i],
        );
    }
    let (img, old) = (&st.xsave, &entry.xsave);
    assert_eq!(img.xcomp_bv(), 0);
    assert_eq!(img.xstate_bv() & !entry.xcr0, 0, "XSTATE_BV beyond XCR0");
    assert!(
        img.0[header::RESERVED..header::END].iter().all(|&b| b == 0),
        "XSAVE reserved bytes"
    );
    assert_eq!(img.0[28..32], old.0[28..32], "MXCSR_MASK is the guest's");
    assert_eq!(
        img.0[sw::START..sw::END],
        old.0[sw::START..sw::END],
        "software-available bytes"
    );
    let size = xs.size as usize;
    assert!(
        img.0[size..] == old.0[size..],
        "bytes beyond the transferred size"
    );
    let bv = img.xstate_bv();
    let clear = |bit: u32| entry.xcr0 & (1 << bit) != 0 && bv & (1 << bit) == 0;
    if clear(0) {
        assert!(
            x87_initial(img),
            "x87 state not initial with XSTATE_BV bit 0 clear"
        );
    }
    if clear(1) {
        assert!(img.0[160..416].iter().all(|&b| b == 0), "XMM not initial");
    }
    for (bit, &(off, len)) in xs.components.iter().enumerate().skip(2) {
        if clear(bit as u32) {
            let (off, len) = (off as usize, len as usize);
            assert!(
                img.0[off..off + len].iter().all(|&b| b == 0),
                "component {bit} not initial"
            );
        }
    }

    // What accel-core hands Bochs: Bochs reloads exactly the flagged registers and stops on
    // a CS or SS that is not RPL 3.
    let mut cpu = cpu_state(entry);
    let reload = plex86_accel::state::from_guest(st, xs, &mut cpu);
    let flagged = st
        .segs
        .iter()
        .enumerate()
        .filter(|(_, s)| s.flags & SEG_NOT_INSTALLED != 0)
        .fold(0u32, |m, (i, _)| m | 1 << i);
    assert_eq!(reload, flagged, "reload mask");
    assert!(cpu.seg[seg::CS].selector & 3 == 3 && cpu.seg[seg::SS].selector & 3 == 3);
}

/// Bochs's view of `gs` before the run.
fn cpu_state(gs: &GuestState) -> plex86_accel::CpuState {
    use bochs_ffi::raw::{plex86_accel_fpu_state, plex86_accel_segment};
    let seg = gs.segs.map(|s| plex86_accel_segment {
        selector: s.selector,
        attr: s.attr,
        limit: s.limit,
        valid: u32::from(!s.is_null()),
        reserved: 0,
        base: s.base,
    });
    plex86_accel::CpuState {
        gpr: gs.gprs,
        rip: gs.rip,
        rflags: gs.rflags,
        mode: bochs_ffi::raw::plex86_accel_mode_PLEX86_ACCEL_MODE_PROTECTED,
        reserved: 0,
        seg,
        cr0: gs.cr0,
        cr2: gs.cr2,
        cr3: gs.cr3,
        cr4: gs.cr4,
        efer: gs.efer,
        xcr0: gs.xcr0,
        fpu: plex86_accel_fpu_state {
            fcw: 0x37f,
            fsw: 0,
            ftw: 0,
            fop: 0,
            fip: 0,
            fdp: 0,
            fcs: 0,
            fds: 0,
            mxcsr: 0x1f80,
            st: [[0; 16]; 8],
            zmm: [[0; 64]; 32],
            opmask: [0; 8],
        },
    }
}

/// Checks that the accepted state of the honest record (accepted as `a`) is the state the
/// executor reported, with each register's selector mapped back and the registers the executor
/// did not keep installed flagged `SEG_NOT_INSTALLED`.
pub(super) fn check_honest_taken(s: &Setup, a: &Accepted) {
    let mut want = s.honest.state;
    want.xsave = a.state.xsave; // (normalisation checked by check_accepted)
    for (w, e) in want.segs.iter_mut().zip(&s.entry.segs) {
        if w.selector == native_selector(e.selector) {
            *w = *e;
        } else {
            *w = Segment {
                selector: guest_selector(w.selector).unwrap_or(w.selector),
                flags: SEG_NOT_INSTALLED,
                ..*e
            };
        }
    }
    assert_eq!(
        a.state, want,
        "the honest record's state was not taken as is"
    );
}
