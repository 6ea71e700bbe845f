//! The library side: an executor process and the runs it is driven through.

mod spawn;
mod transport;

pub(crate) use spawn::{check_config, death_cause, locate_executor};
pub use spawn::{
    executor_next_to_module, BudgetClock, ExecutorConfig, XsaveInfo, EXECUTOR_ENV, EXECUTOR_NAME,
};
pub(crate) use transport::{poll_pause, WAIT_SLICE};
pub use transport::{DEFAULT_SPIN, RESPONSE_GRACE};

use crate::child::ChildProcess;
use crate::error::DriverError;
use crate::protocol::ExitRecord;
use crate::protocol::{
    CommandKind, ExecArea, GuestState, RawCommand, Request, Status, MAX_COMMANDS,
};
use crate::sys::SharedMapping;
use crate::validate::{check_exit, validate_entry, RunContext};
use std::os::fd::OwnedFd;
use std::time::Duration;

/// An MMU command, applied by the executor before the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MmuCommand {
    /// Drop every mirrored page (e.g. after a CR3 load or a paging-mode change).
    FlushAll,
    /// Drop every mirrored page that is not global (a CR3 load with CR4.PGE).
    FlushNonGlobal,
    /// Drop the mirror of the page containing this linear address (INVLPG).
    InvalidatePage(u64),
    /// Write-protect every mirror of this guest-physical page: the emulator holds decoded code
    /// from it. A native write is logged in the exit's [`ExitRecord::code_pages`].
    WriteProtectPhysPage(u64),
}

impl MmuCommand {
    pub(crate) fn to_raw(self) -> RawCommand {
        let (kind, addr) = match self {
            MmuCommand::FlushAll => (CommandKind::FlushAll, 0),
            MmuCommand::FlushNonGlobal => (CommandKind::FlushNonGlobal, 0),
            MmuCommand::InvalidatePage(l) => (CommandKind::InvalidatePage, l),
            MmuCommand::WriteProtectPhysPage(p) => (CommandKind::WriteProtectPhys, p),
        };
        RawCommand {
            kind: kind as u32,
            pad: 0,
            addr,
        }
    }
}

/// A running executor process.
#[derive(Debug)]
pub struct Executor {
    child: ChildProcess,
    region: SharedMapping,
    _control_fd: OwnedFd,
    seq: u32,
    xsave: XsaveInfo,
    cpuid_faulting: bool,
    ram_size: u64,
    spin: u32,
    /// The last run's exit, which [`Executor::run`] lends out.
    last_exit: ExitRecord,
    run_may_have_executed: bool,
}

impl Executor {
    /// The XSAVE layout transferred by this executor.
    pub fn xsave_info(&self) -> XsaveInfo {
        self.xsave
    }

    /// Whether native CPUID faults and exits as [`crate::ExitReason::Cpuid`] (CPUID faulting);
    /// otherwise native code reads the host's CPUID.
    pub fn cpuid_faulting(&self) -> bool {
        self.cpuid_faulting
    }

    /// What guest code it runs natively: 32-bit code only (its own code and data lie above
    /// 4 GiB, where 64-bit guest code could reach them).
    pub fn code_modes(&self) -> crate::CodeModes {
        crate::CodeModes::Legacy32
    }

    /// The executor's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// Sends `commands` without entering the guest.
    pub fn apply_commands(&mut self, commands: &[MmuCommand]) -> Result<(), DriverError> {
        self.check_alive()?;
        for chunk in commands.chunks(MAX_COMMANDS) {
            self.write_commands(chunk);
            self.request(Request::Commands, 0, Some(RESPONSE_GRACE), None)?;
            let st = self.region.lib_side().status();
            if st != Status::CommandsDone as u32 {
                return Err(self.corrupted(format!("status {st} after commands")));
            }
        }
        Ok(())
    }

    /// Runs the guest natively from `state` for at most about `budget` of host time, after
    /// applying `commands`. On return `state` holds the guest state before the instruction
    /// that ended the run.
    pub fn run(
        &mut self,
        state: &mut GuestState,
        budget: Duration,
        commands: &[MmuCommand],
    ) -> Result<&ExitRecord, DriverError> {
        self.run_may_have_executed = false;
        self.check_alive()?;
        validate_entry(state, self.xsave)?;
        let (now, rest) = if commands.len() > MAX_COMMANDS {
            commands.split_at(commands.len() - MAX_COMMANDS)
        } else {
            (&[][..], commands)
        };
        if !now.is_empty() {
            self.apply_commands(now)?;
        }
        self.write_commands(rest);
        self.region.lib_side().set_state(state);
        let budget_ns = u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX).max(1);
        let posted = self.request(
            Request::Run,
            budget_ns,
            Some(budget.saturating_add(RESPONSE_GRACE)),
            Some(budget),
        );
        self.run_may_have_executed = true;
        if let Err(e) = posted {
            self.run_may_have_executed = !self.ended_waiting_for_request();
            return Err(e);
        }
        let area = self.region.lib_side().snapshot();
        self.accept_exit(state, &area, budget_ns)
    }

    /// After [`Executor::run`] failed: whether guest code may have run natively in it. `false`
    /// when the failure came before the executor took the run request (it was found dead, or
    /// died or stalled while still asleep waiting for the request): guest memory and the entry
    /// state are then as they were, and an emulator can go on without acceleration. `true`
    /// when it may have run (the state in guest memory may be ahead of the entry state).
    pub fn failed_run_may_have_executed(&self) -> bool {
        self.run_may_have_executed
    }

    fn write_commands(&mut self, cmds: &[MmuCommand]) {
        let raw = cmds.iter().map(|c| c.to_raw());
        self.region.lib_side().set_commands(raw);
    }

    /// Validates the executor's exit record and state, and applies it to `state`.
    fn accept_exit(
        &mut self,
        state: &mut GuestState,
        area: &ExecArea,
        budget_ns: u64,
    ) -> Result<&ExitRecord, DriverError> {
        let ctx = RunContext {
            seq: self.seq,
            budget_ns,
            ram_size: self.ram_size,
            xsave: self.xsave,
        };
        let after = match check_exit(state, area, &ctx, &mut self.last_exit) {
            Ok(after) => after,
            Err(e) => return Err(self.corrupted(e)),
        };
        if self.last_exit.reason.ends_executor() {
            self.kill();
        }
        if let Some(new) = after {
            *state = new;
        }
        Ok(&self.last_exit)
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.kill();
    }
}
