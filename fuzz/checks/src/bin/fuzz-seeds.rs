//! Writes the generated seed corpus of each fuzz target: `fuzz-seeds DIR [TARGET...]` creates
//! `DIR/TARGET/seed-N` (existing files are kept: the directory is also the fuzzer's corpus).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: fuzz-seeds DIR [TARGET...]");
        return ExitCode::from(2);
    };
    let mut targets: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    if targets.is_empty() {
        targets = fuzz_checks::TARGETS.iter().map(|t| t.to_string()).collect();
    }
    for t in &targets {
        if !fuzz_checks::TARGETS.contains(&t.as_str()) {
            eprintln!(
                "fuzz-seeds: unknown target {t:?} (known: {:?})",
                fuzz_checks::TARGETS
            );
            return ExitCode::from(2);
        }
        let d = dir.join(t);
        let seeds = fuzz_checks::seeds::seeds(t);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&d)?;
            for (i, s) in seeds.iter().enumerate() {
                std::fs::write(d.join(format!("seed-{i:03}")), s)?;
            }
            Ok(())
        };
        if let Err(e) = write() {
            eprintln!("fuzz-seeds: {}: {e}", d.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
