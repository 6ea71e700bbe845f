//! The C ABI's native runs (tests/c_abi/runs.rs) over the default backend, as Bochs gets it
//! with `PLEX86_ACCEL_BACKEND` unset: 32-bit code on today's executor, 64-bit code on the stub
//! executor, started at the first 64-bit entry. A test binary of its own, because the variable
//! is the whole process's.

use bochs_ffi::raw;
use test_support::cpuinfo;
#[path = "c_abi/fixture.rs"]
mod fixture;
#[path = "c_abi/runs.rs"]
mod runs;

use fixture::{Guest, DECLINED, RAN};

/// Unsets the variable once, before the first `plex86_accel_init` of any test.
fn select_backend() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::remove_var(plex86_accel::ffi::BACKEND_ENV));
}

/// 64-bit code goes to the stub executor (long mode is not declined for its mode).
const BACKEND_RUNS_64BIT_CODE: bool = true;
/// The shared escape test runs 32-bit code, which today's executor runs: an escape there
/// stops acceleration (the stub's containment is c_abi_stub's).
const BACKEND_CONTAINS_ESCAPES: bool = false;

/// Makes `g`'s state 64-bit code (its tables stay 32-bit ones: what the run makes of it is
/// not the point, which executor gets it is).
fn make_64bit(g: &mut Guest) {
    g.state.mode = raw::plex86_accel_mode_PLEX86_ACCEL_MODE_LONG_64;
    g.state.efer |= 0x500; // LME, LMA
    g.state.seg[1].attr = (g.state.seg[1].attr & !(1 << 14)) | 1 << 13; // L=1, D=0
    g.state.rip = 0x5555_5555_4000;
}

#[test]
fn the_stub_starts_at_the_first_64bit_entry_and_32bit_code_stays_on_the_executor() {
    let mut g = Guest::new("auto-routes");
    g.code(|a| a.hlt());
    assert!(
        g.logged("started: executor")
            && g.logged("for long-mode code (64-bit and compatibility mode) the stub executor at the first long-mode entry"),
        "{}",
        g.describe()
    );
    let legacy = g.state;
    assert_eq!(g.run(), RAN, "{}", g.describe());
    assert!(
        !g.logged("long-mode code: started"),
        "no stub for 32-bit code"
    );
    make_64bit(&mut g);
    let long64 = g.run();
    assert!(
        long64 != DECLINED
            || g.exit.decline_reason
                != raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_LONG_MODE_64,
        "long mode is not declined by default"
    );
    assert!(
        g.logged("long-mode code: started the stub executor"),
        "{}",
        g.describe()
    );
    // Back to 32-bit code, then 64-bit again: the stub starts once.
    g.state = legacy;
    assert_eq!(g.run(), RAN, "{}", g.describe());
    make_64bit(&mut g);
    g.run();
    let v = g.shutdown();
    assert_eq!(v["stub_starts"], 1);
    assert_eq!(v["backend_runs"]["executor"], 2);
    assert_eq!(
        v["backend_runs"]["stub"].as_u64().unwrap() + 2,
        v["runs"].as_u64().unwrap(),
        "every run counted on one executor: {v}"
    );
    assert_eq!(v["failures"], 0, "{v}");
}

/// An executor that cannot start as the stub (a wrapper that refuses `--stub` and starts the
/// real executor otherwise): 32-bit code runs, and the first 64-bit entry disables the
/// accelerator with the reason, nothing having run.
#[test]
fn a_stub_that_cannot_start_fails_at_the_first_64bit_entry() {
    let dir = std::env::temp_dir().join(format!("plex86-no-stub-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wrapper = dir.join("plex86-executor");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a; do [ \"$a\" = --stub ] && {{ echo 'no stub in this test' >&2; exit 3; }}; done\nexec '{}' \"$@\"\n",
            fixture::executor().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut g = Guest::with_executor("auto-no-stub", wrapper);
    g.code(|a| a.hlt());
    assert_eq!(g.run(), RAN, "32-bit code runs: {}", g.describe());
    make_64bit(&mut g);
    let before = format!("{:?}", g.state);
    assert_eq!(g.run(), fixture::FAILED);
    assert_eq!(g.exit.lost_native_progress, 0, "nothing ran");
    assert_eq!(format!("{:?}", g.state), before, "nothing changed");
    let msg = g.message();
    assert!(
        msg.starts_with("the stub executor for long-mode code cannot start:"),
        "{msg}"
    );
    assert!(g.logged("accelerator disabled: the stub executor for long-mode code cannot start"));
    let v = g.shutdown();
    assert_eq!(v["stub_starts"], 0);
    assert_eq!(v["backend_runs"]["executor"], 1);
    std::fs::remove_dir_all(&dir).unwrap();
}
