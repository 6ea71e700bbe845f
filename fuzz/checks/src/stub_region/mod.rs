//! The stub executor's reading of a published signal (`host_driver::fuzzing::accept_stub_signal`:
//! the stub's pages read as `StubExecutor` reads them after each signal, the monitor's
//! classification and the checks of an exit). Guest code shares the stub's process and can
//! write every byte of those pages: the signal number, the siginfo and ucontext addresses,
//! the kernel's frame and XSAVE image, the data selectors, FS/GS bases, timestamps.
//!
//! A case is an entry state that the stub executor runs (control_region's 32-bit header,
//! turned into 64-bit code in long mode when the case says so), what the library knows of the
//! run (S's base, the budget, when it was entered and when the signal is read, whether the
//! library sent its own SIGALRM, a fill before, the timer id, the library's pid), and a
//! signal an honest stub publishes for it (the budget's SIGALRM from the timer or the
//! library, a #PF, a #UD); then the pages: raw input bytes, or the honest pages with
//! input-chosen byte patches. Each must be rejected as `CorruptedSharedMemory`, resumed, or
//! give an exit that meets these invariants:
//!
//! * native time within what the library saw (from the Enter verdict to its reading), fill
//!   time within native time;
//! * a guest escape leaves the state alone and names no code pages;
//! * otherwise control_region's invariants of the state (`check_state`): code pages in RAM;
//!   for 32-bit code no upper halves, R8..R15 the entry's, 32-bit linear addresses; for
//!   64-bit code a canonical RIP, FS/GS bases and linear address; EFLAGS; control registers
//!   the entry's; each segment register the entry's descriptor (64-bit FS/GS: any canonical
//!   base) and either its selector or flagged with a GDT selector; CS and SS non-null RPL 3;
//!   XSAVE normalised; accel-core's reload mask.
//!
//! And the honest pages themselves must be taken: the exit their signal means, with the entry
//! state (the signal interrupted it at once).
//!
//! Here: the check; `case.rs`: decoding a case; `invariants.rs`: the invariants above.

mod case;
mod invariants;

pub use case::{Body, Region, Setup, StubCase, HEADER_LEN};

use crate::Outcome;
use host_driver::fuzzing::{HonestSignal, StubResponse};
use host_driver::DriverError;

/// The fuzz target: see the module documentation. An input whose header gives no entry state
/// that the stub executor runs is skipped.
pub fn check(data: &[u8]) -> Outcome {
    let case = StubCase::parse(data);
    let Some((setup, run)) = Setup::from_header(&case.header) else {
        return Outcome::Skipped("the header's entry state is not one the stub executor runs");
    };
    let (pages, honest) = case.pages(&setup);
    match run.accept(&pages) {
        Ok(StubResponse::Exit(a)) => {
            invariants::check_exit(&setup, &a);
            if honest {
                invariants::check_honest_exit(&setup, &a);
            }
        }
        Ok(StubResponse::Resumed) => {
            // Only a fill resumes the honest pages (the budget's signal and #UD end the run).
            assert!(
                !honest || matches!(setup.signal, HonestSignal::PageFault { .. }),
                "the honest {:?} was resumed",
                setup.signal
            );
        }
        Err(DriverError::CorruptedSharedMemory(why)) => {
            assert!(!honest, "the honest pages were rejected: {why}");
        }
        Err(e) => panic!("rejected with {e:?}, not CorruptedSharedMemory"),
    }
    Outcome::Checked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds::Rng;
    use host_driver::fuzzing::HonestSignal;
    use plex86_protocol::stub::by_stub;

    /// Headers that give runnable setups, with their 64-bit byte set to `code64`.
    fn setups(seed: u64, code64: bool, n: usize) -> Vec<(Vec<u8>, Setup)> {
        let mut rng = Rng::new(seed);
        let mut out = vec![];
        for _ in 0..20 * n {
            let mut h = rng.bytes(HEADER_LEN);
            h[crate::control_region::HEADER_LEN] = u8::from(code64);
            if let Some((s, _)) = Setup::from_header(&h) {
                out.push((h, s));
                if out.len() == n {
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn honest_pages_are_taken_for_32_and_64_bit_entries_and_every_signal() {
        for code64 in [false, true] {
            let cases = setups(21 + u64::from(code64), code64, 120);
            assert!(cases.len() >= 100, "only {} runnable setups", cases.len());
            let mut kinds = vec![];
            for (header, s) in cases {
                assert_eq!(s.entry.code64(), code64);
                kinds.push(std::mem::discriminant(&s.signal));
                let input = StubCase {
                    header,
                    body: Body::Patches(vec![]),
                }
                .encode();
                assert_eq!(check(&input), Outcome::Checked);
            }
            for k in [
                HonestSignal::BudgetTimer,
                HonestSignal::Backstop,
                HonestSignal::PageFault {
                    linear: 0,
                    write: false,
                },
                HonestSignal::InvalidOpcode,
            ] {
                assert!(kinds.contains(&std::mem::discriminant(&k)), "no {k:?}");
            }
        }
    }

    #[test]
    fn cases_round_trip_through_their_encoding() {
        let case = StubCase {
            header: vec![7; HEADER_LEN],
            body: Body::Patches(vec![(1, 10, vec![1]), (4, u16::MAX, vec![2; 16])]),
        };
        assert_eq!(StubCase::parse(&case.encode()), case);
        let raw = StubCase {
            header: vec![9; HEADER_LEN],
            body: Body::Raw(vec![1, 2, 3]),
        };
        assert_eq!(StubCase::parse(&raw.encode()), raw);
    }

    #[test]
    fn a_ucontext_address_outside_the_alternate_stack_is_corruption() {
        for code64 in [false, true] {
            let (header, s) = setups(5, code64, 1).remove(0);
            let mut pages = s.honest.clone();
            let uc = by_stub::UC;
            let addr = u64::from_le_bytes(pages[uc..uc + 8].try_into().unwrap());
            // Into the stub's words below the alternate stack.
            pages[uc..uc + 8].copy_from_slice(&(addr - 0x9000).to_le_bytes());
            let (_, run) = Setup::from_header(&header).unwrap();
            match run.accept(&pages) {
                Err(DriverError::CorruptedSharedMemory(why)) => {
                    assert!(why.contains("alternate stack"), "{why}")
                }
                other => panic!("accepted: {other:?}"),
            }
        }
    }

    #[test]
    fn the_honest_budget_signal_ends_the_run_with_the_entry_state() {
        let (header, s) = setups(9, true, 40)
            .into_iter()
            .find(|(_, s)| s.signal == HonestSignal::BudgetTimer)
            .expect("a budget signal");
        let (_, run) = Setup::from_header(&header).unwrap();
        match run.accept(&s.honest) {
            Ok(StubResponse::Exit(a)) => {
                assert_eq!(a.exit.reason, host_driver::ExitReason::BudgetExpired);
                let mut want = s.entry;
                want.xsave = a.state.xsave;
                assert!(a.state == want);
                assert_eq!(
                    a.exit.native_time().as_nanos(),
                    u128::from(s.ctx.now_ns - s.ctx.posted_ns)
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
