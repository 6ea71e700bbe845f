//! A guest escape on the stub, contained: it costs the guest process a #GP(0), not the VM.
//!
//! The stub's process holds nothing but S and the guest's mirrors, so whatever code that left
//! its mode (or made a 64-bit system call from the wrong place) could do stayed inside that
//! process: S's code page, the library's read-only pages, the stub's own pages and the
//! mirrors, i.e. the guest process's own memory. The process is no longer trusted (its words
//! in S may have been rewritten), so it is killed and a fresh stub started in its place, with
//! an empty mirror; the guest gets the state at the signal that caught the escape, where the
//! emulator raises #GP(0) (docs/ARCHITECTURE.md, "The stub executor"). A run that failed
//! because the stub's process was tampered with (a corrupted protocol word, a filter kill) is
//! contained likewise, at the entry state. Today's executor holds all of guest RAM above
//! 4 GiB and keeps ending on an escape.

use super::StubExecutor;
use crate::error::{DeathCause, DriverError};
use crate::protocol::{EscapeKind, ExitReason, ExitRecord, GuestState};
use crate::validate::validate_exit_state;
use crate::ExecutorConfig;
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

/// What a replacement stub is started with: the first one's configuration, on the library's
/// own duplicate of the RAM fd.
#[derive(Debug)]
pub(super) struct Relaunch {
    ram_fd: OwnedFd,
    path: PathBuf,
    ram_size: u64,
    ram_map: Vec<Range<u64>>,
    max_fills_per_run: u32,
    startup_timeout: Duration,
    stub_base: u64,
}

impl Relaunch {
    pub(super) fn of(config: &ExecutorConfig<'_>, path: PathBuf) -> Result<Relaunch, DriverError> {
        Ok(Relaunch {
            ram_fd: config.ram_fd.try_clone_to_owned()?,
            path,
            ram_size: config.ram_size,
            ram_map: config.ram_map.clone(),
            max_fills_per_run: config.max_fills_per_run,
            startup_timeout: config.startup_timeout,
            stub_base: config.stub_base,
        })
    }

    fn config(&self) -> ExecutorConfig<'_> {
        let mut c = ExecutorConfig::new(self.ram_fd.as_fd(), self.ram_size);
        c.executor_path = Some(self.path.clone());
        c.ram_map.clone_from(&self.ram_map);
        c.max_fills_per_run = self.max_fills_per_run;
        c.startup_timeout = self.startup_timeout;
        c.stub_base = self.stub_base;
        c
    }
}

impl StubExecutor {
    /// The run ended in a guest escape: kills the stub, starts a fresh one and hands back the
    /// state for the guest's #GP(0): the registers at the signal in the entry's code width
    /// (the monitor's capture), the entry's segments, checked as any exit state is. `entry`
    /// is the run's entry state and becomes that state.
    pub(super) fn contain(&mut self, entry: &mut GuestState) -> Result<&ExitRecord, DriverError> {
        self.kill();
        let state =
            validate_exit_state(entry, &self.monitor.exit_state, self.xsave).map_err(|e| {
                DriverError::CorruptedSharedMemory(format!("the state at a guest escape: {e}"))
            })?;
        *entry = state;
        self.replace_and_report()
    }

    /// The run failed with `error`. When guest code ran in it and the failure is one only
    /// code in the stub's process can cause (a protocol word no honest stub writes, a call its
    /// filter kills, a guest thread that is not stopped yet never answers the budget's signal:
    /// guest code reaches S's pages where its tables map nothing), it is contained as an
    /// escape ([`EscapeKind::StubTampered`]) at the entry state (the run's `state` is left as
    /// it was), the only one the library still trusts: no signal frame describes where the
    /// code was. Otherwise `error`.
    pub(super) fn contain_tampering(
        &mut self,
        error: DriverError,
    ) -> Result<&ExitRecord, DriverError> {
        // The stub's own code makes no call its filters kill: such a death is guest code's,
        // that jumped into S's code page at a `syscall` with a number of its choosing. Nor
        // does it leave the budget's signal unanswered while it is not stopped.
        let tampered = match error {
            DriverError::CorruptedSharedMemory(_)
            | DriverError::ExecutorDied(DeathCause::SeccompViolation) => true,
            DriverError::ExecutorUnresponsive(_) => self.guest_thread_hung,
            _ => false,
        };
        if !tampered || !self.run_may_have_executed {
            return Err(error);
        }
        self.kill();
        // The code pages the monitor logged in the run stay (its log is the library's own);
        // the stub's timestamps are not believed.
        let exit = &mut self.monitor.exit;
        exit.reason = ExitReason::GuestEscape {
            kind: EscapeKind::StubTampered,
            address: 0,
            diagnostic: 0,
        };
        (exit.native_ns, exit.fill_ns, exit.demand_fills) = (0, 0, 0);
        self.replace_and_report()
    }

    /// Replaces the process and reports the monitor's exit as a contained escape.
    fn replace_and_report(&mut self) -> Result<&ExitRecord, DriverError> {
        let mut exit = self.monitor.exit.clone();
        self.replace_process()?;
        exit.escape_contained = true;
        self.monitor.exit.clone_from(&exit);
        Ok(&self.monitor.exit)
    }

    /// Replaces the (killed) stub with a fresh one started as the first was, keeping the
    /// settings made since. A failure leaves this executor without a process.
    fn replace_process(&mut self) -> Result<(), DriverError> {
        let mut fresh = StubExecutor::spawn(self.relaunch.config())?;
        if (fresh.xsave, fresh.cpuid_faulting) != (self.xsave, self.cpuid_faulting) {
            return Err(DriverError::CannotStart(
                "the replacement stub's XSAVE layout or CPUID faulting differs from the first one's"
                    .into(),
            ));
        }
        fresh.monitor.fill_ahead = self.monitor.fill_ahead;
        fresh.set_polling(self.polling);
        fresh.set_placement(self.placement);
        fresh.escapes_contained = self.escapes_contained + 1;
        *self = fresh;
        Ok(())
    }

    /// Guest escapes contained so far (each replaced the stub's process).
    pub fn escapes_contained(&self) -> u64 {
        self.escapes_contained
    }
}
