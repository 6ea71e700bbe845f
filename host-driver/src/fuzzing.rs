//! Entry points for the fuzz targets (`fuzz/`) and their regression tests (`fuzz/checks`):
//! the library's validation of what the executor writes into the control region, callable
//! without a live executor. Not part of the driver's API for applications: built only with
//! the `fuzzing` feature.
//!
//! [`accept_exit`] is the very check [`crate::Executor::run`] applies to the executor's
//! response (the executor is killed when it fails). [`accept_stub_signal`] is the stub
//! executor's: its reading of a signal published in the stub's pages (which guest code can
//! write), the monitor's classification and the checks of an exit. The other pure pieces the fuzz targets
//! exercise are public anyway: `guest_paging::walk` and `plex86_monitor::decode::classify_gp`.

mod stub;

pub use stub::{
    accept_stub_signal, HonestSignal, StubResponse, StubRun, StubRunContext, STUB_PAGES_LEN,
};

use crate::protocol::view::{pod_bytes, pod_bytes_mut, Pod};
use crate::protocol::{ExecArea, ExitRecord};
use crate::validate::check_exit;
use crate::{DriverError, GuestState};

pub use crate::validate::RunContext;

/// Size in bytes of [`ExecArea`], the executor-written part of the control region.
pub const EXEC_AREA_SIZE: usize = std::mem::size_of::<ExecArea>();

/// An [`ExecArea`] holding `bytes` (zero-extended or truncated to [`EXEC_AREA_SIZE`]): what a
/// compromised executor could leave in its part of the region.
pub fn exec_area_from_bytes(bytes: &[u8]) -> ExecArea {
    let mut area: ExecArea = Pod::zeroed();
    let n = bytes.len().min(EXEC_AREA_SIZE);
    pod_bytes_mut(&mut area)[..n].copy_from_slice(&bytes[..n]);
    area
}

/// The bytes of an [`ExecArea`] (to build inputs from honest records).
pub fn exec_area_bytes(area: &ExecArea) -> Vec<u8> {
    pod_bytes(area).to_vec()
}

/// A response that [`accept_exit`] accepted, as [`crate::Executor::run`] hands it on.
#[derive(Clone, Debug)]
pub struct Accepted {
    /// The exit (the library kills the executor after it when
    /// [`ExitReason::ends_executor`](crate::ExitReason::ends_executor)).
    pub exit: ExitRecord,
    /// The guest state after the run (the entry state, unchanged, after a guest escape).
    pub state: GuestState,
}

/// Validates the executor's response `area` to a run entered with `entry` (a state that
/// passed [`crate::validate_entry`]) exactly as [`crate::Executor::run`] does. A rejected
/// response is [`DriverError::CorruptedSharedMemory`].
pub fn accept_exit(
    entry: &GuestState,
    area: &ExecArea,
    ctx: &RunContext,
) -> Result<Accepted, DriverError> {
    let mut exit = ExitRecord::new(crate::ExitReason::BudgetExpired);
    let state =
        check_exit(entry, area, ctx, &mut exit).map_err(DriverError::CorruptedSharedMemory)?;
    Ok(Accepted {
        exit,
        state: state.unwrap_or(*entry),
    })
}

/// The native selector the executor installs for a guest selector (what an honest executor
/// reports for an unchanged register), and its inverse.
pub use crate::protocol::{guest_selector, native_selector};
