//! Runs every saved fuzz input through the check its fuzz target runs: the files of
//! `fuzz/regressions/TARGET/` (inputs that once failed a check; each must pass now) and the
//! generated seeds. A missing regressions directory is an error, not a skip.

use std::path::{Path, PathBuf};

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../regressions")
}

#[test]
fn every_saved_regression_input_passes() {
    let mut ran = 0;
    for target in fuzz_checks::TARGETS {
        let dir = regressions_dir().join(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (each target has a directory)", dir.display()));
        let mut files: Vec<PathBuf> = entries
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            eprintln!("{target}: {}", f.display());
            fuzz_checks::check(target, &data);
            ran += 1;
        }
    }
    eprintln!("{ran} regression inputs passed");
}

#[test]
fn every_generated_seed_passes() {
    for target in fuzz_checks::TARGETS {
        let seeds = fuzz_checks::seeds::seeds(target);
        assert!(seeds.len() >= 10, "{target}: only {} seeds", seeds.len());
        for s in &seeds {
            fuzz_checks::check(target, s);
        }
    }
}

#[test]
fn an_unknown_target_is_an_error() {
    let r = std::panic::catch_unwind(|| fuzz_checks::check("no-such-target", &[]));
    assert!(r.is_err());
}
