//! What both executors offer, so that a caller (accel-core's backends, the integration tests)
//! can drive either: today's [`Executor`] (the monitor in the sandboxed process) and the
//! [`StubExecutor`] (the monitor in the library, guest code in a stub process).

use crate::stub::StubExecutor;
use crate::{
    CodeModes, DriverError, Executor, ExecutorConfig, ExitRecord, GuestState, MmuCommand, XsaveInfo,
};
use std::time::Duration;

/// An executor of guest user code: the contract of [`Executor`]'s methods of the same names.
pub trait NativeExecutor: Send + std::fmt::Debug {
    /// What runs guest code, in a word (for logs).
    fn kind(&self) -> &'static str;
    /// Spawns the executor as `config` says and waits until it is ready.
    fn spawn(config: ExecutorConfig<'_>) -> Result<Self, DriverError>
    where
        Self: Sized;
    /// See [`Executor::run`].
    fn run(
        &mut self,
        state: &mut GuestState,
        budget: Duration,
        commands: &[MmuCommand],
    ) -> Result<&ExitRecord, DriverError>;
    /// See [`Executor::apply_commands`].
    fn apply_commands(&mut self, commands: &[MmuCommand]) -> Result<(), DriverError>;
    /// See [`Executor::failed_run_may_have_executed`].
    fn failed_run_may_have_executed(&self) -> bool;
    /// See [`Executor::xsave_info`].
    fn xsave_info(&self) -> XsaveInfo;
    /// See [`Executor::cpuid_faulting`].
    fn cpuid_faulting(&self) -> bool;
    /// The process that runs guest code, while it runs.
    fn pid(&self) -> Option<u32>;
    /// What guest code it runs natively.
    fn code_modes(&self) -> CodeModes;
    /// Whether it sleeps waiting for the next request (for tests).
    #[doc(hidden)]
    fn asleep_waiting_for_request(&self) -> bool;
}

macro_rules! forward {
    ($t:ty, $name:literal) => {
        impl NativeExecutor for $t {
            fn kind(&self) -> &'static str {
                $name
            }
            fn spawn(config: ExecutorConfig<'_>) -> Result<Self, DriverError> {
                <$t>::spawn(config)
            }
            fn run(
                &mut self,
                state: &mut GuestState,
                budget: Duration,
                commands: &[MmuCommand],
            ) -> Result<&ExitRecord, DriverError> {
                <$t>::run(self, state, budget, commands)
            }
            fn apply_commands(&mut self, commands: &[MmuCommand]) -> Result<(), DriverError> {
                <$t>::apply_commands(self, commands)
            }
            fn failed_run_may_have_executed(&self) -> bool {
                <$t>::failed_run_may_have_executed(self)
            }
            fn xsave_info(&self) -> XsaveInfo {
                <$t>::xsave_info(self)
            }
            fn cpuid_faulting(&self) -> bool {
                <$t>::cpuid_faulting(self)
            }
            fn pid(&self) -> Option<u32> {
                <$t>::pid(self)
            }
            fn code_modes(&self) -> CodeModes {
                <$t>::code_modes(self)
            }
            fn asleep_waiting_for_request(&self) -> bool {
                <$t>::asleep_waiting_for_request(self)
            }
        }
    };
}

forward!(Executor, "executor");
forward!(StubExecutor, "stub executor");
