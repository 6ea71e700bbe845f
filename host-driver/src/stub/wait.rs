//! Waiting for the stub: polling a shared word, then sleeping on it in slices between which
//! the library sends the budget's signal when it is due and checks that the stub is alive and
//! running. A killed stub is reported within a slice, a stopped one after [`STOP_GRACE`], one
//! that does not answer after [`RESPONSE_GRACE`]: a run never hangs.

use super::signal::RunClock;
use super::{st, StubExecutor};
use crate::driver::{death_cause, poll_pause, RESPONSE_GRACE, WAIT_SLICE};
use crate::error::DriverError;
use crate::protocol::stub::{self as layout, by_lib as lib, by_stub as stub};
use crate::protocol::VERSION;
use crate::sys::{self, SharedMapping};
use crate::EXECUTOR_NAME;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long the stub may stay stopped (SIGSTOP, a debugger) before the library gives up on
/// it: a stop longer than that is taken for one that will not end.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(1);
/// How often the library looks for the guest thread's entry when the budget would have ended
/// before it (the entry wakes nobody).
const AWAIT_ENTRY: Duration = Duration::from_micros(50);
/// How long after the budget the library sends its own SIGALRM, in case the stub's timer did
/// not fire (it is late by tens of µs when the host is idle).
pub(super) const BACKSTOP: Duration = Duration::from_millis(2);

/// Waits until the launcher reports the stub ready (or a failed step, or ends).
pub(super) fn await_ready(
    child: &mut Child,
    ctl: &SharedMapping,
    path: &Path,
    timeout: Duration,
) -> Result<(), DriverError> {
    let t0 = Instant::now();
    loop {
        let r = ctl.atomic_u32(st(stub::READY)).load(Ordering::Acquire);
        if r == 1 {
            return Ok(());
        }
        if r & layout::SETUP_FAILED != 0 {
            return Err(DriverError::SetupFailed {
                code: (r & 0xff) as i32,
                message: format!(
                    "the stub's start-up step {} failed (1, 2: unmapping all but S; 3: its filter)",
                    r & 0xff
                ),
            });
        }
        if let Some(status) = child.try_wait()? {
            return Err(DriverError::CannotStart(format!(
                "{} --stub ended before it was ready ({}): is it a {EXECUTOR_NAME} of protocol version {VERSION}?",
                path.display(),
                death_cause(status)
            )));
        }
        if t0.elapsed() > timeout {
            return Err(DriverError::ExecutorUnresponsive(timeout));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

impl StubExecutor {
    /// Waits for the next signal of the guest thread, ringing the budget's end when due.
    pub(super) fn await_signal(&mut self, run: &mut RunClock) -> Result<(), DriverError> {
        let seen = self.exit_seen;
        self.await_word(st(stub::EXIT_SEQ), |v| v != seen, Some(run))?;
        self.exit_seen = self
            .ctl
            .atomic_u32(st(stub::EXIT_SEQ))
            .load(Ordering::Acquire);
        Ok(())
    }

    /// Polls the shared word at `off` until `done` holds, then sleeps on it (telling the
    /// stub through LIB_SLEEPING). With `run`, guest code runs meanwhile: the budget's signal
    /// goes out when due, and the stub has [`RESPONSE_GRACE`] after it to answer; without,
    /// it has that long from now.
    pub(super) fn await_word(
        &mut self,
        off: usize,
        done: impl Fn(u32) -> bool,
        mut run: Option<&mut RunClock>,
    ) -> Result<(), DriverError> {
        let load = |s: &Self| s.ctl.atomic_u32(off).load(Ordering::Acquire);
        for i in 0..self.polling.library {
            if done(load(self)) {
                return Ok(());
            }
            poll_pause(i);
        }
        let started = sys::monotonic_ns();
        let mut stopped_since = None;
        let result = loop {
            let now = sys::monotonic_ns();
            let mut slice = WAIT_SLICE;
            if let Some(r) = run.as_deref_mut() {
                if r.alarm_sent_ns.is_none() {
                    match self.ring_if_due(r, now) {
                        Ok(Some(left)) => slice = slice.min(left),
                        Ok(None) => {}
                        Err(e) => break Err(e),
                    }
                }
            }
            let sleeping = self.ctl.atomic_u32(lib::LIB_SLEEPING);
            sleeping.store(1, Ordering::SeqCst);
            let v = self.ctl.atomic_u32(off).load(Ordering::SeqCst);
            if done(v) {
                break Ok(());
            }
            sys::futex_wait(self.ctl.atomic_u32(off), v, slice);
            if done(load(self)) {
                break Ok(());
            }
            if let Err(e) = self.check_running(&mut stopped_since) {
                break Err(e);
            }
            let answer_by = match run.as_deref() {
                Some(r) => r
                    .alarm_sent_ns
                    .map(|t| t + RESPONSE_GRACE.as_nanos() as u64),
                None => Some(started + RESPONSE_GRACE.as_nanos() as u64),
            };
            if answer_by.is_some_and(|t| sys::monotonic_ns() > t) {
                // Not stopped (check_running ends a stop sooner), yet the guest thread did not
                // answer the budget's signal: only guest code that jumped into S (a futex
                // wait with all signals blocked by a forged rt_sigreturn frame) does that.
                self.guest_thread_hung = run.is_some();
                self.kill();
                break Err(DriverError::ExecutorUnresponsive(RESPONSE_GRACE));
            }
        };
        self.ctl
            .atomic_u32(lib::LIB_SLEEPING)
            .store(0, Ordering::Relaxed);
        result
    }

    /// Sends the library's SIGALRM (`tgkill(stub, guest thread)`) if the stub's own timer has
    /// not ended the run [`BACKSTOP`] after its budget. Counted from the guest thread's entry
    /// (its timestamp), as the stub's timer is: a guest thread that has not entered yet (a
    /// loaded host) is waited for. Returns how long to sleep before looking again, `None`
    /// once the signal is sent.
    fn ring_if_due(
        &mut self,
        run: &mut RunClock,
        now: u64,
    ) -> Result<Option<Duration>, DriverError> {
        if now < run.deadline_ns {
            return Ok(Some(Duration::from_nanos(run.deadline_ns - now)));
        }
        // Only an entry in the past counts (the stub's words are not trusted).
        match self.entered_ns().filter(|&e| e <= now) {
            None => return Ok(Some(AWAIT_ENTRY)),
            Some(entered) => {
                let from_entry = entered
                    .saturating_add(run.budget_ns)
                    .saturating_add(BACKSTOP.as_nanos() as u64);
                if from_entry > now {
                    run.deadline_ns = from_entry;
                    return Ok(Some(Duration::from_nanos(from_entry - now)));
                }
            }
        }
        run.alarm_sent_ns = Some(now);
        match sys::tgkill(self.pid, self.pid, libc::SIGALRM) {
            Ok(()) => Ok(None),
            // The stub has ended: say how.
            Err(e) => {
                self.reap_if_dead()?;
                Err(DriverError::Io(e))
            }
        }
    }

    /// Fails if the stub has ended, or has been stopped for longer than [`STOP_GRACE`] (then
    /// it is killed: a run must not hang on it).
    fn check_running(&mut self, stopped_since: &mut Option<Instant>) -> Result<(), DriverError> {
        self.reap_if_dead()?;
        if !self.is_stopped() {
            *stopped_since = None;
            return Ok(());
        }
        let since = *stopped_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= STOP_GRACE {
            self.kill();
            return Err(DriverError::ExecutorUnresponsive(STOP_GRACE));
        }
        Ok(())
    }

    /// Whether the stub is stopped (job control or a tracer): its state in /proc.
    fn is_stopped(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        // "pid (comm) S ...": the command may hold spaces and parentheses.
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next());
        matches!(state, Some('T' | 't'))
    }

    /// Fails if the stub process has ended (it is reaped then).
    pub(super) fn reap_if_dead(&mut self) -> Result<(), DriverError> {
        match self.child.reap()? {
            Some(cause) => Err(DriverError::ExecutorDied(cause)),
            None => self.check_alive(),
        }
    }

    /// [`Self::reap_if_dead`], waiting up to `limit` for a dying stub to become reapable (a
    /// killed process's threads are gone a moment before its exit status is there).
    pub(super) fn reap_if_dead_within(&mut self, limit: Duration) -> Result<(), DriverError> {
        let until = Instant::now() + limit;
        loop {
            self.reap_if_dead()?;
            if Instant::now() >= until {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub(super) fn check_alive(&self) -> Result<(), DriverError> {
        self.child.check_alive()
    }

    pub(super) fn kill(&mut self) {
        self.child.kill();
    }
}
