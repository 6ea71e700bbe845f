//! One signal the guest thread published: its kernel frame read back from the alternate stack,
//! the budget's signal told from stale and foreign ones, the monitor's verdict, and the run's
//! times from the stub's own timestamps.
//!
//! **The budget's signal.** The guest thread arms its timer with the run's budget just before
//! it enters; its expiry (`SI_TIMER` with the stub's timer id) ends the run when it comes no
//! earlier than the budget after the library's verdict: an expiry of an earlier run, which
//! came when the guest thread was already in its handler (all signals blocked there), stays
//! pending and arrives at the next run's first instruction; it is stale and resumed. Should
//! the timer not fire (guest code can reach S's `timer_settime` and disarm it), the library
//! `tgkill`s SIGALRM a little later (`wait.rs`); that signal counts with `SI_TKILL` from this
//! process's pid (both filled in by the kernel), only in a run that sent one. Every other
//! SIGALRM is resumed, and the monitor ignores whatever another process sends (`si_code` ≤ 0);
//! a forged `SI_TIMER` can at most end a run whose budget is spent, which its state allows.
//!
//! **Time.** The stub takes CLOCK_MONOTONIC (the library's clock too) just before it enters the
//! guest, at each signal and at each return to the guest after a Resume. Native time is from
//! entry to the signal that ended the run; a fill's time is from its signal to the return
//! (the library's and the mapper's work, and the hand-overs) plus the calibrated fault round
//! trip the monitor adds, as today's executor counts its handler time. The timestamps come
//! from the stub, so they must fall inside what the library saw: between its verdict and its
//! reading of the exit.
//!
//! The reading itself (addresses, timestamps, which SIGALRM is the budget's) is `published.rs`,
//! a pure function of the pages' bytes; this file feeds it and carries out its answer.

use super::published::{self, Known, Pages};
use super::{st, StubExecutor};
use crate::error::DriverError;
use crate::protocol::stub::{by_stub as stub, LIB_LEN};
use crate::sys::{self, SharedMapping};
use plex86_monitor::frame::{KUcontext, SignalAction};
use plex86_monitor::monitor::{GuestRam, Monitor};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::host::StubHost;

/// A run's budget and the times the library knows of it.
#[derive(Debug)]
pub(crate) struct RunClock {
    /// The budget in ns.
    pub(crate) budget_ns: u64,
    /// When the library gave the Enter verdict (CLOCK_MONOTONIC ns).
    pub(crate) posted_ns: u64,
    /// When the library's own signal is due (the budget plus [`super::wait::BACKSTOP`]).
    pub(crate) deadline_ns: u64,
    /// When the budget's signal went out (this run sent one).
    pub(crate) alarm_sent_ns: Option<u64>,
    /// The stub's timestamp of the last signal resumed as a demand fill, until the stub's
    /// return to the guest after it is known.
    pub(crate) fill_signal_ns: Option<u64>,
    /// The stub's timestamp of the signal that ended the run.
    pub(crate) exit_signal_ns: u64,
}

impl RunClock {
    pub(super) fn start(budget: Duration) -> RunClock {
        let budget_ns = u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX).max(1);
        RunClock::at(budget_ns, sys::monotonic_ns())
    }

    /// A run of `budget_ns` whose Enter verdict went out at `posted_ns`.
    pub(crate) fn at(budget_ns: u64, posted_ns: u64) -> RunClock {
        RunClock {
            budget_ns,
            posted_ns,
            deadline_ns: posted_ns
                .saturating_add(budget_ns)
                .saturating_add(super::wait::BACKSTOP.as_nanos() as u64),
            alarm_sent_ns: None,
            fill_signal_ns: None,
            exit_signal_ns: 0,
        }
    }
}

/// The live stub-written pages (offsets from their start, as [`published`] reads them).
pub(super) struct Live<'a>(pub(super) &'a SharedMapping);

impl Pages for Live<'_> {
    fn read(&self, off: usize, buf: &mut [u8]) {
        self.0.read_bytes(LIB_LEN + off, buf);
    }
}

/// What the monitor made of one published signal.
pub(crate) struct Taken {
    pub(crate) action: SignalAction,
    /// For a Resume: the frame to write back and where (offset in the stub's pages).
    pub(crate) write_back: Option<(usize, KUcontext)>,
    /// The library's own SIGALRM ended the run.
    pub(crate) backstop: bool,
}

/// Reads the signal published in `pages` ([`published::read`]) and lets `monitor` decide,
/// keeping `run`'s times; `Err` says why no honest stub wrote the pages.
pub(crate) fn take_signal<R: GuestRam>(
    monitor: &mut Monitor<R, StubHost>,
    pages: &(impl Pages + ?Sized),
    known: &Known,
    run: &mut RunClock,
    fpstate: &mut [u8],
) -> Result<Taken, String> {
    let p = published::read(pages, known, fpstate)?;
    run.fill_signal_ns = None;
    if let Some(f) = p.fill_ns {
        let m = &mut monitor.exit;
        m.fill_ns = m.fill_ns.saturating_add(f);
    }
    let Some(mut s) = p.signal else {
        return Ok(Taken {
            action: SignalAction::Resume,
            write_back: None,
            backstop: false,
        });
    };
    let fills = monitor.exit.demand_fills;
    let action = monitor.on_signal(&mut s.context(fpstate));
    let mut write_back = None;
    match action {
        SignalAction::Resume => {
            write_back = Some((s.uc_off, s.uc));
            if monitor.exit.demand_fills != fills {
                run.fill_signal_ns = Some(p.signal_ns);
            }
        }
        SignalAction::ExitToHost => run.exit_signal_ns = p.signal_ns,
    }
    Ok(Taken {
        action,
        write_back,
        backstop: s.backstop,
    })
}

/// Native time of the ended run: from the stub's entry to the signal that ended it.
pub(crate) fn finish_times<R: GuestRam>(
    monitor: &mut Monitor<R, StubHost>,
    pages: &(impl Pages + ?Sized),
    run: &RunClock,
) -> Result<(), String> {
    let native = published::native_ns(pages, run.posted_ns, run.exit_signal_ns)?;
    let exit = &mut monitor.exit;
    exit.native_ns = native;
    // The calibrated fault cost is an estimate: keep the sum within the run.
    exit.fill_ns = exit.fill_ns.min(exit.native_ns);
    Ok(())
}

impl StubExecutor {
    /// Clears the stub's entry timestamp before an Enter verdict (so that an old one is never
    /// taken for this run's).
    pub(super) fn clear_timestamps(&self) {
        for w in [stub::ENTER_TS, stub::ENTER_TS + 8] {
            self.ctl.atomic_u64(st(w)).store(0, Ordering::Relaxed);
        }
    }

    /// When the guest thread entered the guest in this run, if it has yet.
    pub(super) fn entered_ns(&self) -> Option<u64> {
        published::timestamp(&Live(&self.ctl), stub::ENTER_TS)
    }

    /// What the library knows of `run` now, for reading a signal.
    fn known(&self, run: &RunClock) -> Known {
        Known {
            base: self.base,
            timer_id: self.timer_id,
            library_pid: self.library_pid,
            budget_ns: run.budget_ns,
            posted_ns: run.posted_ns,
            now_ns: sys::monotonic_ns(),
            alarm_sent: run.alarm_sent_ns.is_some(),
            fill_signal_ns: run.fill_signal_ns,
        }
    }

    /// Reads the signal the guest thread published and lets the monitor decide; writes the
    /// (possibly changed) frame back for a Resume.
    pub(super) fn on_signal(&mut self, run: &mut RunClock) -> Result<SignalAction, DriverError> {
        let known = self.known(run);
        let live = Live(&self.ctl);
        let taken = take_signal(&mut self.monitor, &live, &known, run, &mut self.fpstate);
        let t = match taken {
            Ok(t) => t,
            Err(e) => return Err(self.corrupted(e)),
        };
        if let Some((off, uc)) = t.write_back {
            self.ctl.write_plain(LIB_LEN + off, &uc);
        }
        self.backstops += u64::from(t.backstop);
        Ok(t.action)
    }
}
