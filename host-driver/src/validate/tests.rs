use super::exit::validate_exit_state;
use super::*;
use crate::error::DriverError;
use crate::protocol::ExitReason;
use crate::protocol::{
    self, native_selector, seg, ExecArea, GuestState, Segment, Status, LDT_MIRROR_ENTRIES,
    SEG_NOT_INSTALLED,
};
use crate::XsaveInfo;

fn state() -> GuestState {
    let mut s = GuestState::default();
    s.segs[seg::CS] = Segment::flat_code(0x1b);
    for i in [seg::ES, seg::SS, seg::DS] {
        s.segs[i] = Segment::flat_data(0x23);
    }
    s
}
const XS: XsaveInfo = XsaveInfo {
    size: 2688,
    features: 0xe7,
    components: [(0, 0); 8],
};

#[test]
fn entry_validation() {
    assert!(validate_entry(&state(), XS).is_ok());
    let bad = |f: &dyn Fn(&mut GuestState)| {
        let mut s = state();
        f(&mut s);
        assert!(matches!(
            validate_entry(&s, XS),
            Err(DriverError::UnsupportedState(_))
        ));
    };
    bad(&|s| s.rflags = 0x002); // IF clear
    bad(&|s| s.rflags = 0x3202); // IOPL 3
    bad(&|s| s.rflags = 0x302); // TF
    bad(&|s| s.segs[seg::CS].selector = 0x18); // RPL 0
    bad(&|s| s.segs[seg::CS] = Segment::flat_data(0x1b)); // data as CS
    bad(&|s| s.segs[seg::DS].selector = 0x27); // LDT selector
    bad(&|s| s.segs[seg::SS] = Segment::null(0));
    bad(&|s| s.segs[seg::DS].base = 0x1000); // same index as ES/SS, other descriptor
    bad(&|s| s.segs[seg::FS].flags = 1);
    bad(&|s| s.xcr0 = 0x207);
    bad(&|s| s.xcr0 = 0x27); // part of AVX-512
    bad(&|s| s.cr0 = 0);
}

/// Asserts that the sample state changed by `f` is refused with exactly the message `want`.
fn refused(f: &dyn Fn(&mut GuestState), want: &str) {
    let mut s = state();
    f(&mut s);
    match validate_entry(&s, XS) {
        Err(DriverError::UnsupportedState(m)) => assert_eq!(m, want),
        other => panic!("{want}: got {other:?}"),
    }
}

/// Each rule's message, as callers (accel-core's decline log, tests/faults/run) see it.
#[test]
fn entry_rules_name_what_they_refuse() {
    refused(
        &|s| s.rflags = 0x200,
        "EFLAGS 0x200 has reserved bits wrong",
    );
    refused(
        &|s| s.rflags = 0x2,
        "EFLAGS 0x2: need IF=1, IOPL=0, TF/NT/RF/VM/VIF/VIP=0",
    );
    refused(&|s| s.cr0 = 0, "CR0.PE is clear");
    refused(&|s| s.reserved[1] = 1, "reserved fields are not zero");
    refused(
        &|s| s.segs[seg::FS].flags = 1,
        "FS: flags must be 0 on entry",
    );
    refused(
        &|s| s.segs[seg::DS].selector = 0x27,
        "DS: LDT selector 0x27 (guest LDTs are not mirrored)",
    );
    let beyond = (LDT_MIRROR_ENTRIES << 3) | 3;
    refused(
        &|s| s.segs[seg::ES] = Segment::flat_data(beyond),
        &format!(
            "ES: GDT selector {beyond:#x} beyond the {LDT_MIRROR_ENTRIES} mirrored GDT entries"
        ),
    );
    refused(
        &|s| s.segs[seg::CS].attr |= 4,
        "CS is a conforming code segment (modify_ldt refuses them)",
    );
    refused(&|s| s.segs[seg::CS].attr &= !0x60, "CS DPL is not 3");
    refused(
        &|s| s.segs[seg::SS] = Segment::null(0),
        "SS 0x0/0x0 is not a writable DPL 3 data segment",
    );
    refused(
        &|s| {
            s.segs[seg::GS] = Segment::flat_code(0x2b);
            s.segs[seg::GS].attr |= 4;
        },
        "GS holds a conforming code segment (modify_ldt refuses them)",
    );
    refused(
        &|s| {
            s.segs[seg::GS] = Segment::flat_data(0x2b);
            s.segs[seg::GS].attr &= !0x80;
        },
        &format!(
            "GS 0x2b/{:#x} cannot be mirrored",
            Segment::flat_data(0x2b).attr & !0x80
        ),
    );
    refused(
        &|s| {
            s.segs[seg::FS] = Segment::flat_data(0x2b);
            s.segs[seg::FS].limit = 0x10_0000;
        },
        "FS: limit or attribute bits out of range",
    );
    refused(
        &|s| s.segs[seg::DS].base = 0x1000,
        "DS shares a GDT index with another register but not its descriptor",
    );
    refused(
        &|s| s.xcr0 = 0x207,
        "XCR0 0x207 not a subset of host features 0xe7",
    );
    refused(&|s| s.xcr0 = 0x5, "XCR0 enables AVX without SSE");
    refused(&|s| s.xcr0 = 0x27, "XCR0 enables part of AVX-512");
    refused(
        &|s| s.xsave.set_u64_at(512, 0x7),
        "XSAVE header: XCOMP_BV must be 0 and XSTATE_BV within XCR0",
    );
    refused(
        &|s| s.xsave.0[540] = 1,
        "XSAVE header reserved bytes are not zero",
    );
    let mut s = state();
    s.xsave.0[27] = 1;
    let want = format!("MXCSR {:#x} has reserved bits set", s.xsave.mxcsr());
    refused(&|s| s.xsave.0[27] = 1, &want);
}

#[test]
fn single_step_exits_need_tf() {
    let entry = state();
    let mut area: ExecArea = crate::protocol::view::Pod::zeroed();
    area.status = Status::Exited as u32;
    area.resp_seq = 7;
    area.exit.reason = protocol::RawReason::SingleStep as u32;
    area.state = entry;
    for (i, s) in area.state.segs.iter_mut().enumerate() {
        s.selector = native_selector(entry.segs[i].selector);
    }
    let ctx = RunContext {
        seq: 7,
        budget_ns: 1_000_000,
        ram_size: 1 << 20,
        xsave: XS,
    };
    let mut exit = crate::ExitRecord::new(ExitReason::BudgetExpired);
    area.state.rflags = 0x202;
    assert!(
        check_exit(&entry, &area, &ctx, &mut exit).is_err(),
        "TF clear"
    );
    area.state.rflags = 0x302;
    let after = check_exit(&entry, &area, &ctx, &mut exit).unwrap();
    assert_eq!(exit.reason, ExitReason::SingleStep);
    assert_eq!(after.unwrap().rflags, 0x302);
}

#[test]
fn exit_validation_rejects_corruption() {
    let entry = state();
    let mut got = entry;
    for (i, s) in got.segs.iter_mut().enumerate() {
        s.selector = native_selector(entry.segs[i].selector);
    }
    let valid = |g: &GuestState| validate_exit_state(&entry, g, XS).unwrap();
    assert_eq!(valid(&got).segs, entry.segs);
    // Another mirror selector (the guest's CS selector as data): reloaded by the emulator.
    let mut g = got;
    g.segs[seg::DS].selector = native_selector(entry.segs[seg::CS].selector);
    let s = valid(&g);
    assert_eq!(
        (s.segs[seg::DS].selector, s.segs[seg::DS].flags),
        (entry.segs[seg::CS].selector, SEG_NOT_INSTALLED)
    );
    let mut g = got;
    g.segs[seg::FS].selector = 0; // a null selector
    assert_eq!(valid(&g).segs[seg::FS].selector, 0);
    // GDT selector values loaded natively (they resolved in the host's GDT): passed on as
    // they are, for the emulator to reload from the guest's GDT.
    for (i, host) in [
        (seg::DS, 0x2b),
        (seg::SS, 0x2b),
        (seg::CS, 0x23),
        (seg::GS, 0x33),
    ] {
        let mut g = got;
        g.segs[i].selector = host;
        let s = valid(&g);
        assert_eq!(
            (s.segs[i].selector, s.segs[i].flags),
            (host, SEG_NOT_INSTALLED),
            "{}",
            seg::NAMES[i]
        );
    }
    // LDT selectors outside the mirror cannot load natively: a corrupted record.
    let mut g = got;
    g.segs[seg::ES].selector = 0x7f;
    assert!(validate_exit_state(&entry, &g, XS).is_err());
    // Mirror slot 0 (the null selector's, RPL 3) as CS or SS: a fuzz find, once accepted.
    let slot0 = (protocol::LDT_MIRROR_BASE << 3) | 4 | 3;
    for (i, bad) in [
        (seg::SS, 0x28),
        (seg::SS, 0),
        (seg::CS, 0x20),
        (seg::CS, 3),
        (seg::CS, slot0),
        (seg::SS, slot0),
    ] {
        let mut g = got;
        g.segs[i].selector = bad;
        assert!(
            validate_exit_state(&entry, &g, XS).is_err(),
            "{} = {bad:#x} accepted",
            seg::NAMES[i]
        );
    }
    let mut g = got;
    g.segs[seg::DS].base = 5;
    assert!(validate_exit_state(&entry, &g, XS).is_err());
    let mut g = got;
    g.rflags |= 1 << 17; // VM
    assert!(validate_exit_state(&entry, &g, XS).is_err());
    let mut g = got;
    g.xsave.set_u64_at(512, 0xe7); // beyond the guest's XCR0 (3)
    assert!(validate_exit_state(&entry, &g, XS).is_err());
    let mut raw = protocol::RawExit::ZERO;
    raw.reason = 99;
    assert!(ExitReason::decode(&raw).is_err());
    raw.reason = protocol::RawReason::PageFault as u32;
    raw.error_code = 0x100;
    assert!(ExitReason::decode(&raw).is_err());
    raw.reason = protocol::RawReason::OtherException as u32;
    raw.vector = 40;
    assert!(ExitReason::decode(&raw).is_err());
}

/// Long mode is refused by today's executor's rules, and a 32-bit state may hold nothing 32-bit code does not
/// have: each with a reason that names it.
#[test]
fn entry_rules_refuse_long_mode_and_wide_values_outside_it() {
    refused(
        &|s| s.efer = protocol::EFER_LMA | 1 << 8,
        "long mode (compatibility, EFER 0x500): this executor runs no compatibility-mode code",
    );
    refused(
        &|s| {
            s.efer = protocol::EFER_LMA | 1 << 8;
            s.segs[seg::CS] = Segment::flat_code64(0x33);
        },
        "long mode (64-bit, EFER 0x500): this executor runs 32-bit code only",
    );
    refused(
        &|s| s.gprs[protocol::gpr::EAX] = 1 << 32,
        "EAX 0x100000000 has an upper half outside 64-bit mode",
    );
    refused(
        &|s| s.gprs[protocol::gpr::EDI] = u64::MAX,
        "EDI 0xffffffffffffffff has an upper half outside 64-bit mode",
    );
    refused(
        &|s| s.rip = 0x1_0040_0000,
        "EIP 0x100400000 has an upper half outside 64-bit mode",
    );
    refused(
        &|s| s.rflags |= 1 << 32,
        "EFLAGS 0x100000202 has an upper half outside 64-bit mode",
    );
    refused(
        &|s| s.gprs[protocol::gpr::R15] = 1,
        "R8..R15 are not zero outside long mode",
    );
    refused(
        &|s| s.cr3 = 1 << 32 | 0x1000,
        "CR3 0x100001000 has an upper half outside long mode",
    );
    refused(
        &|s| {
            s.segs[seg::FS] = Segment {
                base: 1 << 32,
                ..Segment::flat_data(0x33)
            }
        },
        "FS base 0x100000000 is at or above 4 GiB outside long mode",
    );
    refused(
        &|s| s.segs[seg::GS].reserved = 1,
        "GS: reserved field is not zero",
    );
    // The widest 32-bit values are 32-bit code's own.
    let mut s = state();
    s.gprs[..8].fill(0xffff_ffff);
    s.rip = 0xffff_fff0;
    s.segs[seg::FS] = Segment {
        base: 0xffff_f000,
        ..Segment::flat_data(0x33)
    };
    assert!(validate_entry(&s, XS).is_ok());
}
