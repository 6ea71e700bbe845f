//! The rules for 64-bit code: the stub's entry accepts it (today's executor's refuses it, see
//! tests.rs), each refusal names its reason, and an exit from it reports FS/GS bases the code
//! moved and the host's 64-bit CS/SS as the guest's.

use super::exit::validate_exit_state;
use super::*;
use crate::error::DriverError;
use crate::protocol::{self, gpr, native_selector, seg, GuestState, Segment};
use crate::XsaveInfo;

/// A host's XSAVE layout for the rules (tests_compat.rs uses it too).
pub(super) const XS: XsaveInfo = XsaveInfo {
    size: 2688,
    features: 0xe7,
    components: [(0, 0); 8],
};

/// A 64-bit user state as a Linux guest has it: CS 0x33 (L=1), SS 0x2b, null data selectors
/// with a TLS base on FS, 4-level paging with NX, wide registers.
fn state64() -> GuestState {
    let mut s = GuestState::default();
    s.segs[seg::CS] = Segment::flat_code64(0x33);
    s.segs[seg::SS] = Segment::flat_data(0x2b);
    for i in [seg::ES, seg::DS, seg::GS] {
        s.segs[i] = Segment::null(0);
    }
    s.segs[seg::FS] = Segment {
        base: 0x7f12_3456_7000,
        ..Segment::null(0)
    };
    s.efer = protocol::EFER_LMA | 1 << 8 | 1 << 11;
    s.cr0 = 0x8005_0033;
    s.cr3 = 0x1_2345_6000;
    s.cr4 = 0x20 | 0x80;
    s.rflags = 0x202;
    s.rip = 0x5555_5555_4000;
    s.gprs[gpr::R15] = 0xdead_beef_0000_0001;
    s.gprs[gpr::EAX] = u64::MAX;
    s.xcr0 = 3;
    s
}

fn stub_refuses(f: &dyn Fn(&mut GuestState), want: &str) {
    let mut s = state64();
    f(&mut s);
    match validate_entry_for(&s, XS, CodeModes::Legacy32AndLong64) {
        Err(DriverError::UnsupportedState(m)) => assert_eq!(m, want),
        other => panic!("{want}: got {other:?}"),
    }
}

#[test]
fn the_stub_enters_64_bit_code_and_today_s_executor_refuses_it() {
    let s = state64();
    assert!(s.code64());
    validate_entry_for(&s, XS, CodeModes::Legacy32AndLong64).expect("the stub runs 64-bit code");
    match validate_entry(&s, XS) {
        Err(DriverError::UnsupportedState(m)) => assert_eq!(
            m,
            "long mode (64-bit, EFER 0xd00): this executor runs 32-bit code only"
        ),
        other => panic!("today's executor: {other:?}"),
    }
    // A kernel-half GS base is loadable (WRGSBASE takes any canonical value).
    let mut s = state64();
    s.segs[seg::GS].base = 0xffff_8880_0000_0000;
    validate_entry_for(&s, XS, CodeModes::Legacy32AndLong64).expect("canonical GS base");
}

#[test]
fn the_stub_refuses_what_it_cannot_load_and_names_it() {
    stub_refuses(
        &|s| s.segs[seg::CS] = Segment::flat_code(0x23),
        "long mode (compatibility, EFER 0xd00): this executor runs no compatibility-mode code",
    );
    stub_refuses(
        &|s| s.rip = 0x8000_0000_0000,
        "RIP 0x800000000000 is not canonical",
    );
    stub_refuses(
        &|s| s.segs[seg::FS].base = 0x0001_0000_0000_0000,
        "FS base 0x1000000000000 is not canonical",
    );
    stub_refuses(
        &|s| s.cr4 |= 1 << 12,
        "CR4.LA57: 5-level paging is not mirrored",
    );
    stub_refuses(
        &|s| s.segs[seg::CS].attr |= 1 << 14,
        "CS 0x33/0xe0fb is not a CPL 3 64-bit code segment",
    );
    stub_refuses(
        &|s| s.rflags |= 1 << 32,
        "EFLAGS 0x100000202 has reserved bits wrong",
    );
}

/// What a stub reports for 64-bit code: the host's CS/SS, the kernel's registers whole.
fn reported(entry: &GuestState) -> GuestState {
    let mut got = *entry;
    got.segs[seg::CS].selector = 0x33;
    got.segs[seg::SS].selector = 0x2b;
    for i in [seg::ES, seg::DS, seg::FS, seg::GS] {
        got.segs[i].selector = native_selector(entry.segs[i].selector);
    }
    got.gprs[gpr::R8] = u64::MAX;
    got.rip = 0xffff_ffff_ff60_0000;
    got
}

#[test]
fn an_exit_from_64_bit_code_reports_moved_fs_gs_bases_and_the_guest_s_cs_ss() {
    let entry = state64();
    let mut got = reported(&entry);
    got.segs[seg::FS].base = 0x7fff_0000_1000;
    got.segs[seg::GS].base = 0xffff_8000_0000_0000;
    let out = validate_exit_state(&entry, &got, XS).expect("a 64-bit exit");
    assert_eq!(out.segs[seg::CS], entry.segs[seg::CS]);
    assert_eq!(out.segs[seg::SS], entry.segs[seg::SS]);
    assert_eq!(out.segs[seg::FS].base, 0x7fff_0000_1000);
    assert_eq!(out.segs[seg::FS].selector, 0);
    assert_eq!(out.segs[seg::GS].base, 0xffff_8000_0000_0000);
    assert_eq!(out.gprs[gpr::R8], u64::MAX);
    assert_eq!(out.rip, 0xffff_ffff_ff60_0000);

    let mut bad = reported(&entry);
    bad.segs[seg::FS].base = 0x8000_0000_0000;
    assert_eq!(
        validate_exit_state(&entry, &bad, XS).unwrap_err(),
        "segment FS descriptor changed"
    );
    let mut bad = reported(&entry);
    bad.segs[seg::DS].base = 0x1000;
    assert!(validate_exit_state(&entry, &bad, XS).is_err());
    let mut bad = reported(&entry);
    bad.rip = 0x0000_8000_0000_0000;
    assert_eq!(
        validate_exit_state(&entry, &bad, XS).unwrap_err(),
        "RIP 0x800000000000 is not canonical"
    );
}

#[test]
fn an_exit_from_32_bit_code_still_may_not_move_fs() {
    let mut entry = state64();
    entry.efer = 0;
    entry.segs[seg::CS] = Segment::flat_code(0x1b);
    entry.segs[seg::SS] = Segment::flat_data(0x23);
    entry.segs[seg::FS].base = 0;
    entry.gprs = [0; gpr::COUNT];
    entry.rip = 0x1000;
    let mut got = entry;
    for i in 0..6 {
        got.segs[i].selector = native_selector(entry.segs[i].selector);
    }
    validate_exit_state(&entry, &got, XS).expect("unchanged");
    got.segs[seg::FS].base = 0x1000;
    assert!(validate_exit_state(&entry, &got, XS).is_err());
}

/// Randomised: from 64-bit code any canonical FS/GS base comes back and nothing else is
/// accepted for them; every other segment base must stay the entry's; CS and SS come back as
/// the entry's from the host's 0x33 and 0x2b; RIP must be canonical.
#[test]
fn randomised_64_bit_exits_take_canonical_fs_gs_bases_only() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let entry = state64();
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..10_000 {
        let mut got = reported(&entry);
        // Values near the canonical edges as often as anywhere.
        let pick = |r: u64| match r % 6 {
            0 => r,
            1 => 0x0000_7fff_ffff_f000 + (r >> 52),
            2 => 0x0000_8000_0000_0000 + (r >> 52),
            3 => 0xffff_8000_0000_0000 + (r >> 52),
            4 => 0xffff_7fff_ffff_f000 + (r >> 52),
            _ => r >> 17,
        };
        let (fs, gs, rip) = (pick(next()), pick(next()), pick(next()));
        let other = next() % 6;
        let moved_other = next() % 8 == 0 && other != seg::FS as u64 && other != seg::GS as u64;
        got.segs[seg::FS].base = fs;
        got.segs[seg::GS].base = gs;
        got.rip = rip;
        if moved_other {
            got.segs[other as usize].base ^= 1 << (next() % 64);
        }
        let canonical = |v: u64| ((v as i64) << 16 >> 16) as u64 == v;
        let want_ok = canonical(fs) && canonical(gs) && canonical(rip) && !moved_other;
        match validate_exit_state(&entry, &got, XS) {
            Ok(out) => {
                assert!(want_ok, "accepted FS {fs:#x} GS {gs:#x} RIP {rip:#x}");
                assert_eq!((out.segs[seg::FS].base, out.segs[seg::GS].base), (fs, gs));
                assert_eq!(out.segs[seg::CS], entry.segs[seg::CS]);
                assert_eq!(out.segs[seg::SS], entry.segs[seg::SS]);
                assert_eq!(out.rip, rip);
                accepted += 1;
            }
            Err(e) => {
                assert!(!want_ok, "refused FS {fs:#x} GS {gs:#x} RIP {rip:#x}: {e}");
                refused += 1;
            }
        }
    }
    assert!(accepted > 500 && refused > 500, "{accepted} / {refused}");
}
