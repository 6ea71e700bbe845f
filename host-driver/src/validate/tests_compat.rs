//! The rules for compatibility-mode code (a 32-bit process of a 64-bit guest): the stub's
//! entry accepts it as 32-bit code under long mode's paging (today's executor, and a caller
//! that asks for 64-bit code only, refuse it), each refusal names its reason, and its exits
//! are checked exactly as 32-bit code's.

use super::exit::{check_reason_against_state, validate_exit_state};
use super::tests64::XS;
use super::*;
use crate::error::DriverError;
use crate::protocol::{self, gpr, native_selector, seg, GuestState, Segment};
use crate::{Access, ExitReason};

/// A compat process as an amd64 Linux guest has it: CS 0x23 (32-bit), SS/DS/ES 0x2b, FS null,
/// GS its TLS entry 0x63; 4-level paging with NX, a PML4 above 4 GiB, R8..R15 the 64-bit
/// kernel's leftovers.
fn compat() -> GuestState {
    let mut s = GuestState::default();
    s.segs[seg::CS] = Segment::flat_code(0x23);
    for i in [seg::ES, seg::SS, seg::DS] {
        s.segs[i] = Segment::flat_data(0x2b);
    }
    s.segs[seg::FS] = Segment::null(0);
    s.segs[seg::GS] = Segment {
        base: 0xf7f0_0000,
        ..Segment::flat_data(0x63)
    };
    s.efer = protocol::EFER_LMA | 1 << 8 | 1 << 11;
    s.cr0 = 0x8005_0033;
    s.cr3 = 0x1_2345_6000;
    s.cr4 = 0x20 | 0x80;
    s.rflags = 0x202;
    s.rip = 0x0804_9000;
    s.gprs[gpr::EAX] = 0xffff_ffff;
    s.gprs[gpr::R9] = 0xdead_beef_0000_0001;
    s.xcr0 = 3;
    s
}

const ALL: CodeModes = CodeModes::Legacy32Long64AndCompat;

fn stub_refuses(f: &dyn Fn(&mut GuestState), want: &str) {
    let mut s = compat();
    f(&mut s);
    match validate_entry_for(&s, XS, ALL) {
        Err(DriverError::UnsupportedState(m)) => assert_eq!(m, want),
        other => panic!("{want}: got {other:?}"),
    }
}

#[test]
fn the_stub_enters_compat_code_and_the_others_refuse_it() {
    let s = compat();
    assert!(s.long_mode() && !s.code64());
    assert!(ALL.long64() && ALL.compat());
    validate_entry_for(&s, XS, ALL).expect("the stub runs compatibility-mode code");
    let want =
        "long mode (compatibility, EFER 0xd00): this executor runs no compatibility-mode code";
    for modes in [CodeModes::Legacy32, CodeModes::Legacy32AndLong64] {
        match validate_entry_for(&s, XS, modes) {
            Err(DriverError::UnsupportedState(m)) => assert_eq!(m, want, "{modes:?}"),
            other => panic!("{modes:?}: {other:?}"),
        }
    }
    // A null FS's base is not used in compatibility mode (a null-selector access faults):
    // any value enters.
    let mut s = compat();
    s.segs[seg::FS].base = 0x7f00_0000_1000;
    validate_entry_for(&s, XS, ALL).expect("a null FS's wide base");
}

#[test]
fn the_stub_refuses_compat_states_it_cannot_run_and_names_why() {
    stub_refuses(
        &|s| s.rip = 0x1_0000_0000,
        "EIP 0x100000000 has an upper half outside 64-bit mode",
    );
    stub_refuses(
        &|s| s.gprs[gpr::ESI] = 1 << 40,
        "ESI 0x10000000000 has an upper half outside 64-bit mode",
    );
    stub_refuses(
        &|s| s.segs[seg::CS].attr &= !(1 << 14),
        "16-bit code in compatibility mode (CS.D=0) is not run natively",
    );
    stub_refuses(
        &|s| s.segs[seg::GS].base = 0x1_0000_0000,
        "GS base 0x100000000 is at or above 4 GiB in compatibility mode",
    );
    stub_refuses(
        &|s| s.segs[seg::FS].base = 0x8000_0000_0000,
        "FS base 0x800000000000 is not canonical",
    );
    stub_refuses(
        &|s| s.cr4 |= 1 << 12,
        "CR4.LA57: 5-level paging is not mirrored",
    );
    stub_refuses(&|s| s.cr4 |= 1 << 40, "CR4 0x100000000a0 has an upper half");
    stub_refuses(
        &|s| s.segs[seg::CS] = Segment::flat_data(0x23),
        "CS 0x23/0xc0f3 is not a CPL 3 32/16-bit code segment",
    );
}

/// What a stub reports for compatibility-mode code: the mirror's selectors, low halves.
fn reported(entry: &GuestState) -> GuestState {
    let mut got = *entry;
    for i in 0..6 {
        got.segs[i].selector = native_selector(entry.segs[i].selector);
    }
    got.gprs[gpr::EAX] = 20;
    got.rip = 0x0804_9010;
    got
}

#[test]
fn a_compat_exit_is_checked_as_32_bit_code_s() {
    let entry = compat();
    let out = validate_exit_state(&entry, &reported(&entry), XS).expect("a compat exit");
    assert_eq!(out.segs, entry.segs, "the guest's selectors back");
    assert_eq!((out.gprs[gpr::EAX], out.rip), (20, 0x0804_9010));
    assert_eq!(
        out.gprs[gpr::R9],
        entry.gprs[gpr::R9],
        "R8..R15 the entry's"
    );

    let mut bad = reported(&entry);
    bad.gprs[gpr::EDX] = 1 << 32;
    assert_eq!(
        validate_exit_state(&entry, &bad, XS).unwrap_err(),
        "EDX 0x100000000 has an upper half outside 64-bit mode"
    );
    let mut bad = reported(&entry);
    bad.gprs[gpr::R9] = 0;
    assert_eq!(
        validate_exit_state(&entry, &bad, XS).unwrap_err(),
        "R8..R15 changed by 32-bit code"
    );
    let mut bad = reported(&entry);
    bad.segs[seg::GS].base = 0x1000;
    assert_eq!(
        validate_exit_state(&entry, &bad, XS).unwrap_err(),
        "segment GS descriptor changed"
    );
    // Its memory exits name 32-bit addresses; 64-bit code's may be wide.
    let state = validate_exit_state(&entry, &reported(&entry), XS).unwrap();
    let pf = |linear| ExitReason::PageFault {
        linear,
        access: Access::Read,
        error_code: 4,
    };
    check_reason_against_state(&pf(0xffff_f000), &entry, &state).expect("32-bit address");
    assert_eq!(
        check_reason_against_state(&pf(0x1_0000_0000), &entry, &state).unwrap_err(),
        "linear address 0x100000000 of an exit outside 64-bit code"
    );
    let mut entry64 = entry;
    entry64.segs[seg::CS] = Segment::flat_code64(0x33);
    check_reason_against_state(&pf(0x7f00_0000_0000), &entry64, &state).expect("64-bit code");
}

/// The host's user code selectors as an exit reports them: the selector for the emulator to
/// reload from the guest's GDT, with the host descriptor's kind for it to compare.
fn host_cs(selector: u16, attr: u16) -> Segment {
    Segment {
        selector,
        attr,
        limit: 0xf_ffff,
        base: 0,
        flags: protocol::SEG_NOT_INSTALLED,
        reserved: 0,
    }
}

#[test]
fn long_mode_code_that_switched_modes_natively_comes_back_on_the_host_s_kind_of_cs() {
    // Compatibility mode to 64-bit code (a far transfer to 0x33): whole registers, a moved FS
    // base and 64-bit addresses are then the run's.
    let entry = compat();
    let mut got = reported(&entry);
    got.segs[seg::CS].selector = 0x33;
    got.gprs[gpr::R9] = 7;
    got.gprs[gpr::EAX] = 1 << 40;
    got.segs[seg::FS].base = 0x7f00_0000_0000;
    let out = validate_exit_state(&entry, &got, XS).expect("a switch to 64-bit code");
    assert_eq!(out.segs[seg::CS], host_cs(0x33, 0xa0fb));
    assert!(out.code64());
    assert_eq!((out.gprs[gpr::R9], out.gprs[gpr::EAX]), (7, 1 << 40));
    assert_eq!(out.segs[seg::FS].base, 0x7f00_0000_0000);
    let pf = ExitReason::PageFault {
        linear: 0x7f00_0000_0000,
        access: Access::Read,
        error_code: 4,
    };
    check_reason_against_state(&pf, &entry, &out).expect("64-bit code's address");

    // 64-bit code to compatibility mode (a far transfer to 0x23).
    let mut entry64 = entry;
    entry64.segs[seg::CS] = Segment::flat_code64(0x33);
    let mut got = reported(&entry64);
    got.segs[seg::CS].selector = 0x23;
    got.gprs[gpr::R9] = 1 << 50;
    let out = validate_exit_state(&entry64, &got, XS).expect("a switch to compatibility mode");
    assert_eq!(out.segs[seg::CS], host_cs(0x23, 0xc0fb));
    assert!(!out.code64());
    assert_eq!(
        out.gprs[gpr::R9],
        1 << 50,
        "64-bit code ran first: whole registers"
    );

    // Compatibility mode there and back (64-bit code between): whole registers too.
    let mut got = reported(&entry);
    got.segs[seg::CS].selector = 0x23;
    got.gprs[gpr::R9] = 3;
    got.gprs[gpr::EBX] = 1 << 33;
    let out = validate_exit_state(&entry, &got, XS).expect("compat, 64-bit, compat again");
    assert_eq!(out.segs[seg::CS], host_cs(0x23, 0xc0fb));
    assert_eq!((out.gprs[gpr::R9], out.gprs[gpr::EBX]), (3, 1 << 33));

    // Any other GDT selector is no code segment of the host's.
    let mut bad = reported(&entry64);
    bad.segs[seg::CS].selector = 0x2b;
    assert_eq!(
        validate_exit_state(&entry64, &bad, XS).unwrap_err(),
        "CS selector 0x2b is no host code selector"
    );
}

#[test]
fn outside_long_mode_only_the_host_s_32_bit_cs_can_come_back() {
    let mut entry = compat();
    entry.efer = 0;
    entry.cr3 = 0x1000;
    entry.gprs[gpr::R9] = 0;
    let mut got = reported(&entry);
    got.segs[seg::CS].selector = 0x23;
    let out = validate_exit_state(&entry, &got, XS).expect("the emulator judges it");
    assert_eq!(out.segs[seg::CS], host_cs(0x23, 0xc0fb));
    // 64-bit mode outside long mode is an escape the monitor ends the run with, never an exit.
    got.segs[seg::CS].selector = 0x33;
    assert_eq!(
        validate_exit_state(&entry, &got, XS).unwrap_err(),
        "CS selector 0x33 is no host code selector"
    );
}
