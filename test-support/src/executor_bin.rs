//! Where the tests find the executor binary. It belongs to another package (plex86-executor),
//! so cargo does not build it for this package's tests: `$PLEX86_EXECUTOR` if set, else the
//! `plex86-executor` of this target directory and profile, built here on first use (a no-op
//! when `cargo test --workspace` has built it already).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub fn executor_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("PLEX86_EXECUTOR") {
            return p.into();
        }
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "plex86-executor",
            "--bin",
            "plex86-executor",
        ]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let built = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .is_ok_and(|s| s.success());
        let p = profile_dir.join("plex86-executor");
        assert!(
            p.is_file(),
            "no executor at {} (build ok: {built})",
            p.display()
        );
        p
    })
    .clone()
}
