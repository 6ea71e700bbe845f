//! The fuzzing entry over hand-made states: honest pages end the run (or fill) as a real stub's
//! would, and a forged word is corruption.

use super::*;
use crate::protocol::stub::DEFAULT_BASE;
use crate::protocol::{gpr, seg, ExitReason, Segment, EFER_LMA};

const XS: XsaveInfo = XsaveInfo {
    size: 832,
    features: 0x7,
    components: [
        (0, 0),
        (0, 0),
        (576, 256),
        (0, 0),
        (0, 0),
        (0, 0),
        (0, 0),
        (0, 0),
    ],
};

/// A flat 32-bit state without paging.
fn state32() -> GuestState {
    let mut s = GuestState::default();
    s.segs[seg::CS] = Segment::flat_code(0x1b);
    for i in [seg::ES, seg::SS, seg::DS] {
        s.segs[i] = Segment::flat_data(0x23);
    }
    s.gprs[gpr::EAX] = 0x1234_5678;
    s.rip = 0x2000;
    s.cr0 = 0x11; // PE, ET: no paging
    s
}

/// A 64-bit state (the fake RAM has no tables: every walk faults).
fn state64() -> GuestState {
    let mut s = GuestState::default();
    s.segs[seg::CS] = Segment::flat_code64(0x33);
    s.segs[seg::SS] = Segment::flat_data(0x2b);
    for i in [seg::ES, seg::DS, seg::FS, seg::GS] {
        s.segs[i] = Segment::null(0);
    }
    s.segs[seg::FS].base = 0x7f12_3456_7000;
    s.efer = EFER_LMA | 1 << 8 | 1 << 11;
    s.cr0 = 0x8005_0033;
    s.cr3 = 0x1000;
    s.cr4 = 0x20 | 0x80;
    s.rip = 0x5555_5555_4000;
    s.gprs[gpr::R15] = 0xdead_beef_0000_0001;
    s
}

fn ctx() -> StubRunContext {
    StubRunContext {
        base: DEFAULT_BASE,
        xsave: XS,
        ram_size: 0x10000,
        timer_id: 3,
        library_pid: 77,
        budget_ns: 1_000_000,
        posted_ns: 10_000_000_000,
        now_ns: 10_002_000_000,
        alarm_sent: false,
        fill_signal_ns: None,
        fault_ns: 0,
        max_fills: 0,
        amd: false,
    }
}

fn take(entry: &GuestState, ctx: &StubRunContext, sig: HonestSignal) -> StubResponse {
    let run = StubRun::new(entry, ctx).expect("a runnable entry");
    let pages = run.honest_pages(sig);
    run.accept(&pages).expect("honest pages taken")
}

fn exit(r: StubResponse) -> Box<Accepted> {
    match r {
        StubResponse::Exit(a) => a,
        StubResponse::Resumed => panic!("resumed"),
    }
}

#[test]
fn the_budget_signal_ends_the_run_with_the_entry_state() {
    for entry in [state32(), state64()] {
        let a = exit(take(&entry, &ctx(), HonestSignal::BudgetTimer));
        assert_eq!(a.exit.reason, ExitReason::BudgetExpired);
        assert_eq!(a.exit.native_ns, 2_000_000);
        let mut want = entry;
        want.xsave = a.state.xsave;
        assert!(a.state == want, "{:x?}", a.state);
        let backstop = StubRunContext {
            alarm_sent: true,
            ..ctx()
        };
        let a = exit(take(&entry, &backstop, HonestSignal::Backstop));
        assert_eq!(a.exit.reason, ExitReason::BudgetExpired);
    }
}

#[test]
fn a_page_fault_fills_or_exits_as_the_guests_tables_say() {
    let pf = |linear| HonestSignal::PageFault {
        linear,
        write: true,
    };
    // No paging: a page in RAM is filled and the guest resumed; one beyond RAM emulated.
    let r = take(&state32(), &ctx(), pf(0x3000));
    assert!(matches!(r, StubResponse::Resumed), "{r:?}");
    let a = exit(take(&state32(), &ctx(), pf(0x10_0000)));
    assert!(matches!(
        a.exit.reason,
        ExitReason::NeedsEmulation {
            linear: 0x10_0000,
            ..
        }
    ));
    // 64-bit code over empty tables: the guest's own #PF.
    let a = exit(take(&state64(), &ctx(), pf(0x7f00_0000_1000)));
    assert!(
        matches!(
            a.exit.reason,
            ExitReason::PageFault {
                linear: 0x7f00_0000_1000,
                ..
            }
        ),
        "{:?}",
        a.exit.reason
    );
}

#[test]
fn forged_words_are_corruption() {
    let run = StubRun::new(&state64(), &ctx()).unwrap();
    let honest = run.honest_pages(HonestSignal::InvalidOpcode);
    for (off, v, why) in [
        // Ten seconds after the Enter verdict: after the library's reading.
        (stub::SIGNAL_TS, 11u64, "signal timestamp"),
        // The ucontext in S's code page.
        (stub::UC, DEFAULT_BASE, "alternate stack"),
        // A non-canonical FS base from 64-bit code.
        (stub::FS_BASE, 0x8000_0000_0000, "FS descriptor"),
    ] {
        let mut p = honest.clone();
        p[off..off + 8].copy_from_slice(&v.to_le_bytes());
        let run = StubRun::new(&state64(), &ctx()).unwrap();
        match run.accept(&p) {
            Err(DriverError::CorruptedSharedMemory(e)) => assert!(e.contains(why), "{e}"),
            other => panic!("{off:#x} = {v:#x}: {other:?}"),
        }
    }
    let a = exit(run.accept(&honest).unwrap());
    assert_eq!(a.exit.reason, ExitReason::InvalidOpcode);
}
