//! The request/response transport over the control region: posting a request, waiting for
//! its response (polling, then sleeping on the futex), and noticing a dead executor.

use super::Executor;
use crate::error::DriverError;
use crate::protocol::{self, Request, Status};
use crate::sys;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Default polls of the sequence word before sleeping on a futex: the first
/// [`protocol::SPIN_PAUSES`] PAUSE, the rest `sched_yield` (so that a poller sharing a CPU with
/// the other side hands it over). A cross-process futex wake of an idle vCPU costs several
/// times what polling does (figures: docs/ARCHITECTURE.md, "Costs behind the constants").
pub const DEFAULT_SPIN: u32 = 200;

/// How long the library sleeps at most before it checks that the executor lives.
pub(crate) const WAIT_SLICE: Duration = Duration::from_millis(50);
/// How long past its budget a run (or a command-only request) may take before the executor is
/// declared unresponsive and killed: generous for a loaded 2-core host, short enough that the
/// emulator learns of a stopped executor within 5 s.
pub const RESPONSE_GRACE: Duration = Duration::from_secs(4);
/// How long before a run's budget ends the library stops sleeping and polls: what a
/// futex-woken thread needs to run again, the default timer slack of the timed sleep, and
/// margin (figures: docs/ARCHITECTURE.md, "Costs behind the constants").
const WAKE_LEAD: Duration = Duration::from_micros(200);
/// How long the library polls right after posting a run before it sleeps: a run that ends at
/// once (a system call, a page fault) answers within a few µs, and catching that answer by
/// polling spares it the wake-up of a sleeping thread (host-driver's bench measures exit +
/// re-entry with and without it: docs/ARCHITECTURE.md, "Costs behind the constants").
const HEAD_POLL: Duration = Duration::from_micros(20);
/// How long past a run's budget the library keeps polling: the budget timer's overshoot and the
/// executor's exit path, with margin.
const POLL_TAIL: Duration = Duration::from_micros(200);

/// One polling step: PAUSE for the first [`protocol::SPIN_PAUSES`] polls, then yield, so that a
/// poller sharing a CPU with the other side hands it over instead of burning its time slice.
pub(crate) fn poll_pause(i: u32) {
    if i < protocol::SPIN_PAUSES {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

impl Executor {
    /// Whether the executor is asleep waiting for a request (it has stopped polling for one).
    /// For tests that must stop or kill it exactly then.
    #[doc(hidden)]
    pub fn asleep_waiting_for_request(&self) -> bool {
        self.region
            .lib_side()
            .exec_sleeping()
            .load(Ordering::SeqCst)
            != 0
    }

    /// Whether the executor has ended (died, or killed by the library) while asleep waiting
    /// for a request: it sets `exec_sleeping` before sleeping and clears it before it acts on
    /// a request, so a dead executor that left it set never took the last one.
    pub(super) fn ended_waiting_for_request(&self) -> bool {
        self.child.ended() && self.asleep_waiting_for_request()
    }

    /// Posts a request and waits for its response. `expected`: when the response is due (a
    /// run's budget), see [`Executor::await_expected`].
    pub(super) fn request(
        &mut self,
        kind: Request,
        budget_ns: u64,
        deadline: Option<Duration>,
        expected: Option<Duration>,
    ) -> Result<(), DriverError> {
        let posted = Instant::now();
        let view = self.region.lib_side();
        view.set_request(kind, budget_ns);
        self.seq = self.seq.wrapping_add(1).max(2);
        let word = view.req_seq();
        word.store(self.seq, Ordering::Release);
        if view.exec_sleeping().load(Ordering::SeqCst) != 0 {
            sys::futex_wake(word);
        }
        if let Some(due) = expected {
            if self.await_expected(self.seq, posted, due)? {
                return Ok(());
            }
        }
        self.wait_response(self.seq, deadline)
    }

    /// Waits for a response due `due` after `posted` (a run that its budget will end): polls
    /// for [`HEAD_POLL`], sleeps until [`WAKE_LEAD`] before the due time, then polls until
    /// [`POLL_TAIL`] after it. A thread that sleeps until the executor's futex wake runs again
    /// only tens of µs later (its vCPU went idle); waking ahead of the deadline takes that off
    /// every run that its budget ends, and the first poll off every run that ends at once.
    /// A run that ends in between wakes this thread through the futex. Returns whether the
    /// response came; if not, [`Executor::wait_response`] takes over.
    fn await_expected(
        &mut self,
        want: u32,
        posted: Instant,
        due: Duration,
    ) -> Result<bool, DriverError> {
        let wake_at = due.saturating_sub(WAKE_LEAD);
        if self.poll_until(want, posted, HEAD_POLL.min(wake_at)) {
            return Ok(true);
        }
        loop {
            let cur = self.response_seq();
            if cur == want {
                return Ok(true);
            }
            let elapsed = posted.elapsed();
            if elapsed >= wake_at {
                break;
            }
            let slice = wake_at - elapsed;
            sys::futex_wait(
                self.region.lib_side().resp_seq(),
                cur,
                slice.min(WAIT_SLICE),
            );
            // A long budget: notice a dead executor within a slice, as wait_response does (but
            // first take a response it left: after a guest escape it exits at once).
            if slice > WAIT_SLICE && self.response_seq() != want {
                self.reap_if_dead()?;
            }
        }
        Ok(self.poll_until(want, posted, due.saturating_add(POLL_TAIL)))
    }

    /// Polls until `resp_seq == want` or `until` after `posted`; returns whether it came.
    fn poll_until(&self, want: u32, posted: Instant, until: Duration) -> bool {
        let mut i = 0;
        while posted.elapsed() < until {
            if self.response_seq() == want {
                return true;
            }
            poll_pause(i);
            i = i.saturating_add(1);
        }
        self.response_seq() == want
    }

    /// Waits until `resp_seq == want`, spinning first, then sleeping in slices and checking
    /// that the child is alive.
    pub(super) fn wait_response(
        &mut self,
        want: u32,
        timeout: Option<Duration>,
    ) -> Result<(), DriverError> {
        for i in 0..self.spin {
            if self.response_seq() == want {
                return Ok(());
            }
            poll_pause(i);
        }
        let start = Instant::now();
        loop {
            let cur = self.response_seq();
            if cur == want {
                return Ok(());
            }
            sys::futex_wait(self.region.lib_side().resp_seq(), cur, WAIT_SLICE);
            if self.response_seq() == want {
                return Ok(());
            }
            self.reap_if_dead()?;
            if let Some(t) = timeout.filter(|&t| start.elapsed() > t) {
                self.kill();
                return Err(DriverError::ExecutorUnresponsive(t));
            }
        }
    }

    fn response_seq(&self) -> u32 {
        self.region.lib_side().resp_seq().load(Ordering::Acquire)
    }

    /// Fails if the executor process has ended (a setup failure leaves its message).
    fn reap_if_dead(&mut self) -> Result<(), DriverError> {
        let Some(cause) = self.child.reap()? else {
            return Ok(());
        };
        let area = self.region.lib_side().snapshot();
        if area.status == Status::Failed as u32 {
            let n = (area.msg_len as usize).min(area.msg.len());
            return Err(DriverError::SetupFailed {
                code: area.fail_code as i32,
                message: String::from_utf8_lossy(&area.msg[..n]).into_owned(),
            });
        }
        Err(DriverError::ExecutorDied(cause))
    }

    pub(super) fn check_alive(&self) -> Result<(), DriverError> {
        self.child.check_alive()
    }

    pub(super) fn kill(&mut self) {
        self.child.kill();
    }

    pub(super) fn corrupted(&mut self, what: String) -> DriverError {
        self.kill();
        DriverError::CorruptedSharedMemory(what)
    }
}
