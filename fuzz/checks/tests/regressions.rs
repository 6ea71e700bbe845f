//! Runs every saved fuzz input through the check its fuzz target runs: the files of
//! `fuzz/regressions/TARGET/` (inputs that once failed a check; each must pass now) and the
//! generated seeds. Each must still reach the product code ([`Outcome::Checked`]): an input
//! that a change of the case decoding turns into a skip tests nothing. A missing or empty
//! regressions directory is an error, not a skip.

use fuzz_checks::Outcome;
use std::path::{Path, PathBuf};

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../regressions")
}

/// The saved inputs of `target`, sorted; panics unless the directory holds at least one file
/// and nothing but files (a subdirectory would be silently left out).
fn saved_inputs(target: &str) -> Vec<PathBuf> {
    let dir = regressions_dir().join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (each target has a directory)", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    for f in &files {
        assert!(f.is_file(), "{}: not a file", f.display());
    }
    assert!(
        !files.is_empty(),
        "{}: no saved inputs (each target keeps at least one)",
        dir.display()
    );
    files
}

#[test]
fn every_saved_regression_input_passes() {
    let (mut ran, mut saved) = (0, 0);
    for target in fuzz_checks::TARGETS {
        let files = saved_inputs(target);
        saved += files.len();
        for f in &files {
            let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            eprintln!("{target}: {}", f.display());
            assert_eq!(
                fuzz_checks::check(target, &data),
                Outcome::Checked,
                "{}: the input no longer becomes a case",
                f.display()
            );
            ran += 1;
        }
    }
    assert_eq!(ran, saved, "inputs checked vs inputs saved");
    eprintln!("{ran} regression inputs passed");
}

/// The share of generated seeds that must become cases, per target (in percent).
const MIN_CHECKED_SEEDS_PERCENT: usize = 90;

#[test]
fn every_generated_seed_passes() {
    for target in fuzz_checks::TARGETS {
        let seeds = fuzz_checks::seeds::seeds(target);
        assert!(seeds.len() >= 10, "{target}: only {} seeds", seeds.len());
        let checked = seeds
            .iter()
            .filter(|s| fuzz_checks::check(target, s) == Outcome::Checked)
            .count();
        assert!(
            checked * 100 >= seeds.len() * MIN_CHECKED_SEEDS_PERCENT,
            "{target}: only {checked} of {} seeds become cases (want {MIN_CHECKED_SEEDS_PERCENT}%)",
            seeds.len()
        );
        eprintln!("{target}: {checked} of {} seeds checked", seeds.len());
    }
}

/// `control_region/ss-selector-rpl0-accepted` still builds the case its name says, though the
/// honest record's reason is now drawn from 1..=21 rather than 1..=20 (its reason byte, 162,
/// once drew GeneralProtection and now draws BudgetExpired, so the honest record differs in its
/// reason and error code, which the SS check does not look at): the patched record is not a
/// guest escape, its SS selector has RPL 0, the library rejects it for that, and with RPL 3 it
/// is accepted.
#[test]
fn the_rpl0_ss_regression_still_builds_its_case() {
    use fuzz_checks::control_region::{Body, RegionCase, Setup};
    use host_driver::fuzzing::accept_exit;
    use host_driver::DriverError;
    use plex86_protocol::{seg, RawReason};

    let f = regressions_dir().join("control_region/ss-selector-rpl0-accepted");
    let case = RegionCase::parse(&std::fs::read(&f).expect("the saved input"));
    let setup = Setup::from_header(&case.header).expect("a runnable entry state");
    assert!(
        matches!(case.body, Body::Patches(_)),
        "a patched honest record, not raw bytes"
    );
    let (area, honest) = case.response(&setup);
    assert!(!honest);
    assert_ne!(area.exit.reason, RawReason::GuestEscape as u32);
    let ss = area.state.segs[seg::SS].selector;
    assert_eq!(ss & 3, 0, "SS selector {ss:#06x}");
    match accept_exit(&setup.entry, &area, &setup.ctx) {
        Err(DriverError::CorruptedSharedMemory(why)) => {
            assert!(why.contains("SS selector"), "rejected for: {why}");
        }
        other => panic!("{other:?}"),
    }
    let mut rpl3 = area;
    rpl3.state.segs[seg::SS].selector |= 3;
    if let Err(e) = accept_exit(&setup.entry, &rpl3, &setup.ctx) {
        panic!("RPL 0 is not the record's only defect: with RPL 3 it is still rejected: {e:?}");
    }
}

/// `walker64/1gib-page-reserved-bit-13` is what its name says: a user write through a 1 GiB
/// page whose PDPTE has reserved bit 13 set, which both walkers fault with RSVD; without that
/// bit the same tables translate it as a 1 GiB page.
#[test]
fn the_1gib_regression_still_builds_its_case() {
    use fuzz_checks::walker::background_ram;
    use fuzz_checks::walker64::{map_linear64, reference_walk64, Walk64Case};
    use guest_paging::{pf, walk64, PageSize, WalkError};

    let f = regressions_dir().join("walker64/1gib-page-reserved-bit-13");
    let mut case = Walk64Case::parse(&std::fs::read(&f).expect("the saved input"));
    let run = |case: &Walk64Case| {
        let (regs, linear) = (case.regs(), case.linear());
        let mut mem = background_ram(&case.background);
        map_linear64(&mut mem, &regs, linear, &case.levels);
        let want = reference_walk64(&mem, &regs, linear, case.access(), false).result;
        let ram = fuzz_checks::walker::Ram::new(mem);
        assert_eq!(walk64(&ram, &regs, linear, case.access(), false), want);
        want
    };
    let code = pf::P | pf::W | pf::U | pf::RSVD;
    assert_eq!(run(&case), Err(WalkError::Fault(code)));
    case.levels[1].raw &= !(1 << 13);
    let t = run(&case).expect("a translation without the reserved bit");
    assert_eq!(t.size, PageSize::Size1G);
}

/// `stub_region/needs-emulation-non-canonical-64-bit` still builds its case: a 64-bit entry
/// whose pages the library takes as a `NeedsEmulation` exit at an address that is not
/// canonical with 4 levels.
#[test]
fn the_non_canonical_emulation_regression_still_builds_its_case() {
    use fuzz_checks::stub_region::{Setup, StubCase};
    use guest_paging::is_canonical;
    use host_driver::fuzzing::StubResponse;
    use host_driver::ExitReason;

    let f = regressions_dir().join("stub_region/needs-emulation-non-canonical-64-bit");
    let case = StubCase::parse(&std::fs::read(&f).expect("the saved input"));
    let (setup, run) = Setup::from_header(&case.header).expect("a runnable entry state");
    assert!(setup.entry.code64());
    let (pages, honest) = case.pages(&setup);
    assert!(!honest);
    match run.accept(&pages) {
        Ok(StubResponse::Exit(a)) => match a.exit.reason {
            ExitReason::NeedsEmulation { linear, .. } => {
                assert!(!is_canonical(linear), "{linear:#x}")
            }
            r => panic!("{r:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unknown_target_is_an_error() {
    let r = std::panic::catch_unwind(|| fuzz_checks::check("no-such-target", &[]));
    assert!(r.is_err());
}
