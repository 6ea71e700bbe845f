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

#[test]
fn an_unknown_target_is_an_error() {
    let r = std::panic::catch_unwind(|| fuzz_checks::check("no-such-target", &[]));
    assert!(r.is_err());
}
