//! The library's validation of the executor's exit record (`host_driver::fuzzing::accept_exit`,
//! the check `Executor::run` applies to what the executor leaves in its part of the control
//! region).
//!
//! A case is an entry state that passes `validate_entry` and a run context (sequence number,
//! budget, RAM size, host XSAVE layout), built from a fixed-size header, and then an
//! [`ExecArea`](plex86_protocol::ExecArea): either raw input bytes (what a compromised
//! executor could write) or an honest exit record for that entry (built from the header too)
//! with input-chosen byte patches. Each response must be rejected as `CorruptedSharedMemory`
//! or give a state that meets the documented invariants:
//!
//! * status EXITED, the request's sequence number, native time within the budget bound;
//! * at most 256 code pages, each page aligned and inside RAM;
//! * EFLAGS: bit 1 set, reserved bits clear, VM/IOPL/RF clear;
//! * 32-bit code (every entry: today's executor refuses long mode; `stub_region` draws 64-bit
//!   entries for the stub): no upper half in EAX..EDI, EIP or EFLAGS, R8..R15 the
//!   entry's, and a memory exit's linear address below 4 GiB;
//! * control registers, XCR0 and the reserved words are the entry's;
//! * each segment register keeps the descriptor installed at entry; it either is the entry's
//!   register or is flagged `SEG_NOT_INSTALLED` with a GDT selector;
//! * CS and SS hold non-null RPL 3 selectors: native CPL 3 code cannot change CPL (the patched
//!   Bochs stops with a fatal error on anything else);
//! * XSAVE: XCOMP_BV = 0, XSTATE_BV within the guest's XCR0, reserved header bytes zero,
//!   MXCSR_MASK, the software-available bytes and bytes beyond the transferred size are the
//!   entry's, components whose XSTATE_BV bit is clear are in their initial state;
//! * accel-core turns it into Bochs's state (`state::from_guest`) with the reload mask naming
//!   exactly the flagged registers;
//! * a guest escape kills the executor and leaves the state alone.
//!
//! And the honest record itself (no patch changed a byte) must be accepted, with the state
//! the executor reported.
//!
//! Here: the check; `case.rs`: decoding a case (header, honest record, response);
//! `invariants.rs`: the invariants above.

pub(crate) mod case;
pub(crate) mod invariants;

pub use case::{apply_patches, wire_reasons, Body, RegionCase, Setup, HEADER_LEN};

use crate::Outcome;
use host_driver::fuzzing::accept_exit;
use host_driver::DriverError;

/// The fuzz target: see the module documentation. An input whose header gives no entry state
/// that `validate_entry` accepts is skipped (there is nothing to run).
pub fn check(data: &[u8]) -> Outcome {
    let case = RegionCase::parse(data);
    let Some(setup) = Setup::from_header(&case.header) else {
        return Outcome::Skipped("the header's entry state fails validate_entry");
    };
    let (area, honest) = case.response(&setup);
    match accept_exit(&setup.entry, &area, &setup.ctx) {
        Ok(a) => {
            invariants::check_accepted(&setup, &area, &a);
            if honest && !a.exit.reason.ends_executor() {
                invariants::check_honest_taken(&setup, &a);
            }
        }
        Err(DriverError::CorruptedSharedMemory(why)) => {
            assert!(!honest, "an honest exit record was rejected: {why}");
        }
        Err(e) => panic!("rejected with {e:?}, not CorruptedSharedMemory"),
    }
    Outcome::Checked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds::Rng;
    use host_driver::fuzzing::{exec_area_bytes, exec_area_from_bytes};
    use host_driver::{GuestState, Segment};
    use plex86_protocol::{seg, ExecArea, RawReason};

    #[test]
    fn a_header_without_a_runnable_entry_state_is_skipped() {
        let mut rng = Rng::new(5);
        let header = loop {
            let h = rng.bytes(HEADER_LEN);
            if Setup::from_header(&h).is_none() {
                break h;
            }
        };
        let input = RegionCase {
            header,
            body: Body::Patches(vec![]),
        }
        .encode();
        assert!(matches!(check(&input), Outcome::Skipped(_)));
    }

    #[test]
    fn an_rpl0_ss_in_an_honest_record_is_rejected() {
        let mut rng = Rng::new(11);
        let (header, setup) = loop {
            let h = rng.bytes(HEADER_LEN);
            if let Some(s) = Setup::from_header(&h) {
                if s.honest.exit.reason != RawReason::GuestEscape as u32 {
                    break (h, s);
                }
            }
        };
        let off = std::mem::offset_of!(ExecArea, state)
            + std::mem::offset_of!(GuestState, segs)
            + seg::SS * std::mem::size_of::<Segment>();
        let mut bytes = exec_area_bytes(&setup.honest);
        bytes[off..off + 2].copy_from_slice(&0x28u16.to_le_bytes());
        let area = exec_area_from_bytes(&bytes);
        assert!(matches!(
            accept_exit(&setup.entry, &area, &setup.ctx),
            Err(DriverError::CorruptedSharedMemory(_))
        ));
        // And the check accepts the rejection.
        let outcome = check(
            &RegionCase {
                header,
                body: Body::Patches(vec![(off as u16, vec![0x28, 0])]),
            }
            .encode(),
        );
        assert_eq!(outcome, Outcome::Checked);
    }
}
