//! Drives the C ABI end to end without Bochs: guest RAM in a memfd with synthetic page tables,
//! tiny user-mode programs assembled with iced-x86, and the real executor.
//!
//! The executor binary: `$PLEX86_EXECUTOR`, else `plex86-executor` of this target directory
//! (built here with `cargo build -p plex86-executor` when needed, see executor_bin.rs).
//!
//! `fixture` holds the guest and the callbacks; the tests are grouped by what they drive.

use test_support::cpuinfo;
mod fixture;

mod bad_input;
mod runs;
mod startup;

/// Today's executor alone (`PLEX86_ACCEL_BACKEND=executor`): tests/c_abi_stub.rs runs `runs`
/// over the stub, tests/c_abi_auto.rs over the default. Set once, before the first
/// `plex86_accel_init` of any test, so that no test reads the environment while another
/// writes it.
fn select_backend() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var(plex86_accel::ffi::BACKEND_ENV, "executor"));
}

/// Today's executor runs 32-bit code only.
const BACKEND_RUNS_64BIT_CODE: bool = false;
/// Today's executor ends on a guest escape (it holds all of guest RAM): Bochs must stop.
const BACKEND_CONTAINS_ESCAPES: bool = false;
