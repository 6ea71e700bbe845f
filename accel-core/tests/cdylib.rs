//! The shared library as Bochs sees it: its dynamic symbols are exactly the header's
//! functions, and a C program built against the header links, finds the executor next to the
//! library, and drives it (`tests/c/smoke.c`). Needs `nm` and a C/C++ compiler (Debian's
//! build-essential, installed by ci/install-deps).

use std::path::{Path, PathBuf};
use std::process::Command;

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// Builds `args` with cargo in this target directory's profile.
fn cargo_build(args: &[&str]) {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.arg("build").arg("--quiet").args(args);
    if profile_dir().file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let st = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo");
    assert!(st.success(), "cargo build {args:?} failed");
}

fn library() -> PathBuf {
    let p = profile_dir().join("libplex86_accel.so");
    // Always: a stale library from an earlier build would be tested otherwise.
    cargo_build(&["-p", "accel-core", "--lib"]);
    assert!(p.is_file(), "no {}", p.display());
    p
}

/// The function names the header declares.
fn header_functions() -> Vec<String> {
    let mut v: Vec<String> = bochs_ffi::HEADER
        .lines()
        .filter(|l| !l.trim_start().starts_with("typedef"))
        .filter_map(|l| {
            let i = l.find("plex86_accel_")?;
            let rest = &l[i..];
            let end = rest.find('(')?;
            let name = &rest[..end];
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
                .then(|| name.to_string())
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn tool(name: &str) -> bool {
    Command::new(name).arg("--version").output().is_ok()
}

#[test]
fn exports_exactly_the_headers_functions() {
    let want = header_functions();
    assert_eq!(want.len(), 10, "{want:?}");
    assert!(
        tool("nm"),
        "this test needs nm (Debian's binutils; ci/install-deps installs build-essential)"
    );
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(library())
        .output()
        .expect("nm");
    assert!(out.status.success());
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    got.sort();
    assert_eq!(
        got, want,
        "the cdylib must export the header's functions and nothing else"
    );
}

#[test]
fn a_c_program_drives_the_library() {
    assert!(
        tool("cc") && tool("c++"),
        "this test needs cc and c++ (Debian's build-essential; ci/install-deps installs it)"
    );
    let lib = library();
    if std::env::var_os("PLEX86_EXECUTOR").is_none() {
        cargo_build(&["-p", "plex86-executor", "--bin", "plex86-executor"]);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let include = manifest.join("../bochs-ffi/include");
    let src = manifest.join("tests/c/smoke.c");
    let dir = lib.parent().unwrap();
    let tmp = std::env::temp_dir().join(format!("plex86-accel-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let bin = tmp.join("smoke");
    // The header (and this program) must also be valid C++: Bochs includes it from C++.
    let cxx = Command::new("c++")
        .args([
            "-fsyntax-only",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-x",
            "c++",
            "-I",
        ])
        .arg(&include)
        .arg(&src)
        .output()
        .unwrap();
    assert!(
        cxx.status.success(),
        "C++: {}",
        String::from_utf8_lossy(&cxx.stderr)
    );
    let cc = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(&include)
        .arg(&src)
        .arg("-o")
        .arg(&bin)
        .arg(format!("-L{}", dir.display()))
        .arg(format!("-Wl,-rpath,{}", dir.display()))
        .arg("-lplex86_accel")
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let stats = tmp.join("stats.json");
    let out = Command::new(&bin).arg(&stats).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "smoke failed ({:?}):\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("smoke ok"));
    // The default backend: today's executor now, the stub executor at the first long-mode
    // entry (the smoke program makes none).
    assert!(
        text.contains("log 1: started: executor next to the library")
            && text.contains(
                "for 32-bit code; for long-mode code (64-bit and compatibility mode) the stub executor at the first long-mode entry"
            ),
        "{text}"
    );
    assert!(
        text.contains("log 1: statistics: 3 calls, 0 native runs, 4 declined, 0 failed"),
        "{text}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(v["declines"]["short_burst"], 1);
    assert_eq!(v["declines"]["unsupported_state"], 2);
    assert_eq!(v["declines"]["event_pending"], 1);
    assert_eq!(v["declines"]["long_mode_64"], 0);
    assert_eq!(v["stub_starts"], 0, "no 64-bit code: no stub executor");
    assert_eq!(v["backend_runs"]["stub"], 0);
    assert_eq!(v["mmu"]["invlpg"], 2);
    assert_eq!(v["mmu"]["memory_map_changes"], 1);
    std::fs::remove_dir_all(&tmp).unwrap();
}
