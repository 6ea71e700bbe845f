//! A corrupted control region, field by field: every field of the executor's `ExecArea` is
//! either rejected (`CorruptedSharedMemory` with a message naming the field; the executor is
//! then killed) or provably not used (the library takes the request's value). The check is
//! the one `Executor::run` applies (`host_driver::fuzzing::accept_exit`); the fuzz targets in
//! fuzz/ explore it at random, this test names each field.
//!
//! Today's executor only: the stub executor has no `ExecArea` (its monitor runs in the
//! library, which builds the exit record itself); what the stub publishes (frame addresses
//! inside its alternate stack, timestamps inside the run) is checked in `host_driver::stub`,
//! and the exit state goes through the same `validate_exit_state`, which tests/exits and the
//! other suites exercise on both executors.

use host_driver::fuzzing::{accept_exit, native_selector, Accepted, RunContext};
use host_driver::protocol::{seg, ExecArea, RawReason, Status, MAX_CODE_PAGES};
use host_driver::{DriverError, GuestState, Segment, XsaveInfo, SEG_NOT_INSTALLED};

const SEQ: u32 = 7;
const RAM: u64 = 16 << 20;
/// x87 and SSE only: the legacy area and the XSAVE header are transferred.
const XS: XsaveInfo = XsaveInfo {
    size: 576,
    features: 3,
    components: [(0, 0); 8],
};
const CTX: RunContext = RunContext {
    seq: SEQ,
    budget_ns: 1_000_000,
    ram_size: RAM,
    xsave: XS,
};

fn entry() -> GuestState {
    let mut s = GuestState::default();
    s.segs[seg::CS] = Segment::flat_code(0x73);
    for i in [seg::ES, seg::SS, seg::DS] {
        s.segs[i] = Segment::flat_data(0x7b);
    }
    s.cr3 = 0x1000;
    s.rip = 0x0804_8000;
    s
}

/// What an honest executor writes after a run that its budget ended.
fn honest() -> ExecArea {
    let e = entry();
    let mut a = host_driver::fuzzing::exec_area_from_bytes(&[]);
    a.resp_seq = SEQ;
    a.status = Status::Exited as u32;
    a.exit.reason = RawReason::BudgetExpired as u32;
    a.exit.native_ns = 900_000;
    a.state = e;
    for (i, s) in a.state.segs.iter_mut().enumerate() {
        s.selector = native_selector(e.segs[i].selector);
    }
    a.state.gprs[..8].copy_from_slice(&[1, 2, 3, 4, 0xbfff_f000, 6, 7, 8]);
    a.state.rip = 0x0804_8010;
    a.state.rflags = 0x246;
    a
}

fn accept(a: &ExecArea) -> Result<Accepted, DriverError> {
    accept_exit(&entry(), a, &CTX)
}

/// `corrupt` must make the response rejected with a message containing `field`.
fn rejected(field: &str, corrupt: impl Fn(&mut ExecArea)) {
    let mut a = honest();
    corrupt(&mut a);
    match accept(&a) {
        Err(DriverError::CorruptedSharedMemory(m)) => {
            assert!(m.contains(field), "{field}: message {m:?} does not name it")
        }
        Err(e) => panic!("{field}: wrong error {e:?}"),
        Ok(x) => panic!("{field}: accepted ({:?})", x.exit.reason),
    }
}

fn with_reason(reason: RawReason, vector: u32, error_code: u32, access: u32) -> ExecArea {
    let mut a = honest();
    a.exit.reason = reason as u32;
    a.exit.vector = vector;
    a.exit.error_code = error_code;
    a.exit.access = access;
    a
}

#[test]
fn the_honest_response_is_accepted_with_the_executors_state() {
    let x = accept(&honest()).expect("honest response");
    assert_eq!(x.state.gprs, honest().state.gprs);
    assert_eq!(x.state.rip, 0x0804_8010);
    assert_eq!(x.state.segs, entry().segs);
    assert!(!x.exit.reason.ends_executor());
}

#[test]
fn header_fields_are_checked() {
    rejected("sequence", |a| a.resp_seq = SEQ + 1);
    rejected("sequence", |a| a.resp_seq = 0);
    let others = Status::ALL.iter().filter(|&&s| s != Status::Exited);
    for st in others.map(|&s| s as u32).chain([77]) {
        rejected("status", move |a| a.status = st);
    }
}

#[test]
fn exit_record_fields_are_checked() {
    rejected("unknown exit reason", |a| a.exit.reason = 0);
    rejected("unknown exit reason", |a| a.exit.reason = 999);
    let cases: [(&str, ExecArea); 10] = [
        ("access kind", with_reason(RawReason::PageFault, 0, 4, 3)),
        (
            "page-fault error code",
            with_reason(RawReason::PageFault, 0, 0x20 | 4, 0),
        ),
        (
            "page-fault error code",
            with_reason(RawReason::PageFault, 0, 0, 0),
        ), // U/S clear
        (
            "access kind",
            with_reason(RawReason::NeedsEmulation, 0, 0, 9),
        ),
        (
            "vector",
            with_reason(RawReason::SoftwareInterrupt, 256, 0, 0),
        ),
        (
            "system-call kind",
            with_reason(RawReason::SystemCall, 2, 0, 0),
        ),
        ("rdtsc kind", with_reason(RawReason::Rdtsc, 2, 0, 0)),
        (
            "exception vector",
            with_reason(RawReason::OtherException, 32, 0, 0),
        ),
        (
            "vector",
            with_reason(RawReason::OtherException, 1 << 20, 0, 0),
        ),
        ("escape kind", with_reason(RawReason::GuestEscape, 99, 0, 0)),
    ];
    for (field, area) in cases {
        rejected(field, |a| *a = area);
    }
    rejected("native time", |a| a.exit.native_ns = u64::MAX);
    rejected("code pages", |a| {
        a.exit.n_code_pages = MAX_CODE_PAGES as u32 + 1
    });
    rejected("code pages", |a| a.exit.n_code_pages = u32::MAX);
    rejected("code page", |a| {
        a.exit.n_code_pages = 2;
        a.exit.code_pages[1] = 0x1234; // not page aligned
    });
    rejected("code page", |a| {
        a.exit.n_code_pages = 1;
        a.exit.code_pages[0] = RAM; // outside guest RAM
    });
    // Entries past n_code_pages are never read.
    let mut a = honest();
    a.exit.n_code_pages = 1;
    a.exit.code_pages[0] = 0x5000;
    a.exit.code_pages[1] = 0x1234;
    assert_eq!(accept(&a).unwrap().exit.code_pages.as_slice(), [0x5000]);
}

#[test]
fn guest_state_fields_are_checked() {
    rejected("EFLAGS", |a| a.state.rflags = 0x244); // bit 1 clear
    for bit in [3, 5, 15, 22, 31] {
        rejected("EFLAGS", move |a| a.state.rflags |= 1 << bit); // reserved
    }
    rejected("EFLAGS", |a| a.state.rflags |= 1 << 17); // VM
    rejected("EFLAGS", |a| a.state.rflags |= 3 << 12); // IOPL
    rejected("EFLAGS", |a| a.state.rflags |= 1 << 16); // RF
                                                       // 32-bit code (the entry is not in long mode) has no upper halves and no R8..R15.
    rejected("EFLAGS", |a| a.state.rflags |= 1 << 40);
    for (i, name) in ["EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI"]
        .iter()
        .enumerate()
    {
        rejected(name, move |a| a.state.gprs[i] |= 1 << 32);
    }
    rejected("EIP", |a| a.state.rip |= 1 << 63);
    for r in 8..16 {
        rejected("R8..R15", move |a| a.state.gprs[r] = 1);
    }
    rejected("linear address", |a| {
        a.exit.reason = RawReason::PageFault as u32;
        a.exit.error_code = 4;
        a.exit.linear = 1 << 32;
    });
    rejected("linear address", |a| {
        a.exit.reason = RawReason::NeedsEmulation as u32;
        a.exit.linear = 0xffff_8000_0000_0000;
    });
    for (i, name) in seg::NAMES.iter().enumerate() {
        let field = format!("segment {name} descriptor changed");
        rejected(&field, move |a| a.state.segs[i].base ^= 0x1000);
        rejected(&field, move |a| a.state.segs[i].limit ^= 1);
        rejected(&field, move |a| a.state.segs[i].attr ^= 0x2);
        rejected(&field, move |a| a.state.segs[i].flags = SEG_NOT_INSTALLED);
        rejected(&field, move |a| a.state.segs[i].base |= 1 << 32);
        rejected(&field, move |a| a.state.segs[i].reserved = 1);
    }
    rejected("XSAVE header", |a| a.state.xsave.set_u64_at(520, 1 << 63)); // XCOMP_BV
    rejected("XSAVE header", |a| a.state.xsave.set_u64_at(512, 0x7)); // beyond XCR0 3
    rejected("XSAVE header reserved bytes", |a| a.state.xsave.0[540] = 1);
}

#[test]
fn fields_the_library_does_not_take_from_the_executor() {
    let mut a = honest();
    // Setup-only fields: read once at start (the XSAVE layout) or on a setup failure.
    a.xsave_size = 0;
    a.xsave_features = u64::MAX;
    a.fail_code = 99;
    a.msg_len = u32::MAX;
    a.msg.fill(0xff);
    a.exec_sleeping = 5;
    // Control registers, XCR0 and the padding: the request's values are kept.
    a.state.cr0 = 0;
    a.state.cr2 = 0xdead_b000;
    a.state.cr3 = 0x666_0000;
    a.state.cr4 = u64::from(u32::MAX);
    a.state.efer = u64::MAX;
    a.state.xcr0 = u64::MAX;
    a.state.reserved = [u64::MAX; 6];
    // Address, access, error code and detail of a reason that has none.
    a.exit.linear = 0xffff_f000;
    a.exit.access = 77;
    a.exit.error_code = u32::MAX;
    a.exit.detail = u64::MAX;
    // CPU description and software-available bytes of the FXSAVE area; bytes beyond the
    // transferred XSAVE size.
    a.state.xsave.0[28..32].fill(0x55);
    a.state.xsave.0[464..512].fill(0x55);
    a.state.xsave.0[600] = 0x55;
    let x = accept(&a).expect("these fields are not used");
    let e = entry();
    assert_eq!(
        (x.state.cr0, x.state.cr2, x.state.cr3, x.state.cr4),
        (e.cr0, e.cr2, e.cr3, e.cr4)
    );
    assert_eq!(
        (x.state.efer, x.state.xcr0, x.state.reserved),
        (e.efer, e.xcr0, e.reserved)
    );
    assert_eq!(x.state.xsave.0[28..32], e.xsave.0[28..32]);
    assert_eq!(x.state.xsave.0[464..512], e.xsave.0[464..512]);
    assert_eq!(x.state.xsave.0[600], e.xsave.0[600]);
    assert_eq!(x.exit.reason, host_driver::ExitReason::BudgetExpired);
}

#[test]
fn a_selector_the_executor_reports_is_reloaded_from_the_guests_tables() {
    // Another mirror selector is a guest-visible fact (native code may copy one between
    // registers): it is passed on as the guest's selector, flagged, so that the emulator
    // loads it from the guest's own tables; the descriptor stays the one installed.
    let mut a = honest();
    let cs = entry().segs[seg::CS].selector;
    a.state.segs[seg::DS].selector = native_selector(cs);
    let x = accept(&a).unwrap();
    assert_eq!(x.state.segs[seg::DS].selector, cs);
    assert_eq!(x.state.segs[seg::DS].flags, SEG_NOT_INSTALLED);
    assert_eq!(x.state.segs[seg::DS].base, entry().segs[seg::DS].base);
}

#[test]
fn a_gdt_selector_loaded_natively_is_passed_on_for_a_reload() {
    // It resolved in the host's GDT; the emulator reloads it from the guest's (glibc loads its
    // TLS selector 0x33 as a literal value).
    for (i, host) in [
        (seg::DS, 0x2bu16),
        (seg::CS, 0x23),
        (seg::SS, 0x2b),
        (seg::GS, 0x33),
    ] {
        let mut a = honest();
        a.state.segs[i].selector = host;
        let x = accept(&a).unwrap();
        assert!(!x.exit.reason.ends_executor(), "{}", seg::NAMES[i]);
        assert_eq!(
            (x.state.segs[i].selector, x.state.segs[i].flags),
            (host, SEG_NOT_INSTALLED),
            "{}",
            seg::NAMES[i]
        );
    }
}

#[test]
fn ldt_selectors_outside_the_mirror_are_rejected() {
    // Only the mirror's LDT slots are filled: no honest executor reports another LDT selector.
    rejected("ES selector 0x7f", |a| {
        a.state.segs[seg::ES].selector = 0x7f
    });
}
