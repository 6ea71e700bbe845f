//! The C ABI's native runs (tests/c_abi/runs.rs) over the stub executor, selected as Bochs
//! would select it: `PLEX86_ACCEL_BACKEND=stub` in the environment. A test binary of its own,
//! because the variable is the whole process's.

use test_support::cpuinfo;
#[path = "c_abi/fixture.rs"]
mod fixture;
#[path = "c_abi/runs.rs"]
mod runs;

/// Sets the variable once, before the first `plex86_accel_init` of any test (each calls this
/// first), so that no test reads the environment while another writes it.
fn select_backend() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var(plex86_accel::ffi::BACKEND_ENV, "stub"));
}

/// The stub executor runs 64-bit code (long mode is not declined for its mode).
const BACKEND_RUNS_64BIT_CODE: bool = true;
/// The stub executor contains a guest escape: a fresh process, #GP(0) in the guest.
const BACKEND_CONTAINS_ESCAPES: bool = true;

#[test]
fn the_stub_runs_the_guest() {
    let mut g = fixture::Guest::new("stub-describe");
    g.code(|a| a.hlt());
    assert_eq!(g.run(), fixture::RAN, "{}", g.describe());
    assert!(
        g.logged("started: stub executor"),
        "the start-up line names the stub"
    );
}
