//! The invariants a signal the library took must meet (see the documentation of
//! [`crate::stub_region`]).

use super::case::Setup;
use crate::control_region::invariants::check_state;
use host_driver::fuzzing::{Accepted, HonestSignal};
use host_driver::ExitReason;

/// Checks an exit the library accepted from the stub's pages.
pub(super) fn check_exit(s: &Setup, a: &Accepted) {
    let (native, fill) = (a.exit.native_time(), a.exit.fill_time());
    let run = s.ctx.now_ns - s.ctx.posted_ns;
    assert!(
        native.as_nanos() <= u128::from(run),
        "native time {native:?} beyond the {run} ns the library saw"
    );
    assert!(
        fill <= native,
        "fill time {fill:?} above native time {native:?}"
    );
    if a.exit.reason.ends_executor() {
        assert!(a.state == s.entry, "a guest escape changed the state");
        assert!(a.exit.code_pages.as_slice().is_empty());
        return;
    }
    check_state(&s.entry, &s.ctx.xsave, s.ctx.ram_size, a);
}

/// Checks what the library made of the honest pages: the exit the signal means, with the
/// entry state (the signal interrupted it at once), taken as is.
pub(super) fn check_honest_exit(s: &Setup, a: &Accepted) {
    let reason = a.exit.reason;
    let expected = match s.signal {
        HonestSignal::BudgetTimer | HonestSignal::Backstop => reason == ExitReason::BudgetExpired,
        HonestSignal::InvalidOpcode => reason == ExitReason::InvalidOpcode,
        // The fake RAM has no page tables: the guest's own fault, or one to emulate.
        HonestSignal::PageFault { .. } => !reason.ends_executor(),
    };
    assert!(expected, "{:?} taken as {reason:?}", s.signal);
    // (The XSAVE image is normalised, which check_state checks.)
    let mut want = s.entry;
    want.xsave = a.state.xsave;
    assert!(
        a.state == want,
        "the honest frame's state was not taken as is: {:x?}\nentry {:x?}",
        a.state,
        s.entry
    );
}
