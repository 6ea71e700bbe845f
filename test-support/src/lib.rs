//! What the tests and benchmarks of host-driver and accel-core share, kept out of the product:
//! the executor binary's path, the host's /proc/cpuinfo as an oracle, a guest fixture over
//! synthetic page tables ([`vm`]), sample Bochs states and host XSAVE layouts
//! ([`guest_state`]), and the host yardsticks of the benchmarks ([`calibration`]).
//! A dev-dependency only (`ci/check-crate-graph`); used from `tests/` and `benches/`, never
//! from unit tests of the crates it depends on (they would see two copies of their own types).

pub mod calibration;
pub mod cpuinfo;
mod executor_bin;
pub mod guest_state;
pub mod pagetables;
pub mod pagetables64;
#[cfg(test)]
mod read_only_ram;
pub mod vm;
pub mod vm64;

pub use executor_bin::executor_path;

/// Sends `sig` (a `kill -SIG` argument) to `pid` from another process, as a user would with
/// kill(1): the signal arrives with `SI_USER` and a foreign pid.
pub fn kill_from_another_process(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status();
    assert!(st.expect("kill(1)").success(), "kill {sig} {pid}");
}
