//! The process that runs guest code, as both executors keep it: alive (a `Child` to reap) or
//! ended, with why.

use crate::error::{DeathCause, DriverError};
use std::process::Child;

/// An executor process and, once it has ended, its cause.
#[derive(Debug)]
pub(crate) struct ChildProcess {
    child: Option<Child>,
    dead: Option<DeathCause>,
}

impl ChildProcess {
    pub(crate) fn new(child: Child) -> Self {
        ChildProcess {
            child: Some(child),
            dead: None,
        }
    }

    /// The process id while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it has ended (reaped, or killed by the library).
    pub(crate) fn ended(&self) -> bool {
        self.child.is_none()
    }

    /// Reaps it if it has ended: `Some(cause)` the first time, `None` while it runs (or when
    /// it was reaped before).
    pub(crate) fn reap(&mut self) -> Result<Option<DeathCause>, DriverError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let Some(status) = child.try_wait()? else {
            return Ok(None);
        };
        self.child = None;
        let cause = crate::driver::death_cause(status);
        self.dead = Some(cause.clone());
        Ok(Some(cause))
    }

    /// `ExecutorDied` once it has ended.
    pub(crate) fn check_alive(&self) -> Result<(), DriverError> {
        match &self.dead {
            Some(c) => Err(DriverError::ExecutorDied(c.clone())),
            None => Ok(()),
        }
    }

    /// Kills and reaps it (the cause, unless it had died already: killed by the library).
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.dead.is_none() {
            self.dead = Some(DeathCause::KilledByLibrary);
        }
    }
}
