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

use super::{st, StubExecutor};
use crate::error::DriverError;
use crate::protocol::stub::{self as layout, by_stub as stub};
use crate::protocol::xsave::sw;
use crate::protocol::XSAVE_AREA_SIZE;
use crate::sys;
use plex86_monitor::frame::{
    KUcontext, SignalAction, SignalContext, FP_XSTATE_MAGIC1, UC_FP_XSTATE,
};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A run's budget and the times the library knows of it.
#[derive(Debug)]
pub(super) struct RunClock {
    /// The budget in ns.
    pub(super) budget_ns: u64,
    /// When the library gave the Enter verdict (CLOCK_MONOTONIC ns).
    pub(super) posted_ns: u64,
    /// When the library's own signal is due (the budget plus [`super::wait::BACKSTOP`]).
    pub(super) deadline_ns: u64,
    /// When the budget's signal went out (this run sent one).
    pub(super) alarm_sent_ns: Option<u64>,
    /// The stub's timestamp of the last signal resumed as a demand fill, until the stub's
    /// return to the guest after it is known.
    fill_signal_ns: Option<u64>,
    /// The stub's timestamp of the signal that ended the run.
    exit_signal_ns: u64,
}

impl RunClock {
    pub(super) fn start(budget: Duration) -> RunClock {
        let budget_ns = u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX).max(1);
        let posted_ns = sys::monotonic_ns();
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

impl StubExecutor {
    /// Clears the stub's entry timestamp before an Enter verdict (so that an old one is never
    /// taken for this run's).
    pub(super) fn clear_timestamps(&self) {
        for w in [stub::ENTER_TS, stub::ENTER_TS + 8] {
            self.ctl.atomic_u64(st(w)).store(0, Ordering::Relaxed);
        }
    }

    /// A timestamp the stub wrote (a `struct timespec`), in ns; `None` when unset or not a
    /// time at all.
    fn timestamp(&self, off: usize) -> Option<u64> {
        let secs = self.ctl.atomic_u64(st(off)).load(Ordering::Acquire);
        let nanos = self.ctl.atomic_u64(st(off + 8)).load(Ordering::Acquire);
        if nanos >= 1_000_000_000 || (secs == 0 && nanos == 0) {
            return None;
        }
        secs.checked_mul(1_000_000_000)?.checked_add(nanos)
    }

    /// When the guest thread entered the guest in this run, if it has yet.
    pub(super) fn entered_ns(&self) -> Option<u64> {
        self.timestamp(stub::ENTER_TS)
    }

    /// Reads the signal the guest thread published and lets the monitor decide; writes the
    /// (possibly changed) frame back for a Resume.
    pub(super) fn on_signal(&mut self, run: &mut RunClock) -> Result<SignalAction, DriverError> {
        let now = sys::monotonic_ns();
        let signal_ns = self.signal_time(run, now)?;
        let alt = self.base + layout::STUB + stub::ALTSTACK as u64;
        let alt_end = alt + stub::ALTSTACK_LEN as u64;
        let base = self.base;
        // Stub-written addresses: only offsets inside the alternate stack are accepted.
        let to_off = |addr: u64, len: usize| -> Result<usize, String> {
            if addr >= alt && addr.checked_add(len as u64).is_some_and(|e| e <= alt_end) {
                Ok(st((addr - base - layout::STUB) as usize))
            } else {
                Err(format!(
                    "stub published an address outside its alternate stack: {addr:#x}"
                ))
            }
        };
        let read = (|| {
            let ctl = &self.ctl;
            let info = to_off(ctl.atomic_u64(st(stub::INFO)).load(Ordering::Relaxed), 128)?;
            let uc_off = to_off(
                ctl.atomic_u64(st(stub::UC)).load(Ordering::Relaxed),
                std::mem::size_of::<KUcontext>(),
            )?;
            let fp_len = |uc: &KUcontext| -> Result<Option<(usize, usize)>, String> {
                if uc.mc.fpstate == 0 || uc.flags & UC_FP_XSTATE == 0 {
                    return Ok(None);
                }
                let fp = to_off(uc.mc.fpstate, 512 + 64)?;
                let word = |o: usize| {
                    let mut b = [0u8; 4];
                    ctl.read_bytes(fp + o, &mut b);
                    u32::from_le_bytes(b)
                };
                let size = word(sw::XSTATE_SIZE) as usize;
                let len = if word(sw::MAGIC1) == FP_XSTATE_MAGIC1 && size <= XSAVE_AREA_SIZE {
                    size
                } else {
                    512
                };
                to_off(uc.mc.fpstate, len)?;
                Ok(Some((fp, len)))
            };
            let uc: KUcontext = ctl.read_plain(uc_off);
            let fp = fp_len(&uc)?;
            Ok::<_, String>((info, uc_off, uc, fp))
        })();
        let (info, uc_off, mut uc, fp) = match read {
            Ok(r) => r,
            Err(e) => return Err(self.corrupted(e)),
        };
        let mut b = [0u8; 32];
        self.ctl.read_bytes(info, &mut b);
        let word = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let sig = self.stub_word(stub::SIG) as i32;
        let mut code = word(8) as i32;
        if sig == libc::SIGALRM {
            // Word 16 is si_tid of a timer's signal, si_pid (the sender's thread group id,
            // filled in by the kernel) of a tgkill.
            let ours = match code {
                libc::SI_TIMER => {
                    word(16) == self.timer_id
                        && signal_ns >= run.posted_ns.saturating_add(run.budget_ns)
                }
                libc::SI_TKILL => word(16) == self.library_pid && run.alarm_sent_ns.is_some(),
                _ => false,
            };
            if !ours {
                return Ok(SignalAction::Resume);
            }
            if code == libc::SI_TKILL {
                self.backstops += 1;
            }
            // The monitor knows the budget's end as its timer's signal.
            code = libc::SI_TIMER;
        }
        let fp_len = match fp {
            Some((off, len)) => {
                self.ctl.read_bytes(off, &mut self.fpstate[..len]);
                len
            }
            None => 0,
        };
        let segs = self.ctl.atomic_u64(st(stub::SEGS)).load(Ordering::Relaxed);
        let mut ctx = SignalContext {
            sig,
            code,
            call_addr: u64::from(word(16)) | (u64::from(word(20)) << 32),
            syscall: word(24) as i32,
            arch: word(28),
            uc: &mut uc,
            data_segs: [
                segs as u16,
                (segs >> 16) as u16,
                (segs >> 32) as u16,
                (segs >> 48) as u16,
            ],
            fpstate: (fp_len != 0).then(|| &self.fpstate[..fp_len]),
            // The handler's RDFSBASE/RDGSBASE: the bases 64-bit code left (the exit
            // validation checks them canonical).
            seg_bases: Some([
                self.ctl
                    .atomic_u64(st(stub::FS_BASE))
                    .load(Ordering::Relaxed),
                self.ctl
                    .atomic_u64(st(stub::GS_BASE))
                    .load(Ordering::Relaxed),
            ]),
        };
        let fills = self.monitor.exit.demand_fills;
        let action = self.monitor.on_signal(&mut ctx);
        match action {
            SignalAction::Resume => {
                self.ctl.write_plain(uc_off, &uc);
                if self.monitor.exit.demand_fills != fills {
                    run.fill_signal_ns = Some(signal_ns);
                }
            }
            SignalAction::ExitToHost => run.exit_signal_ns = signal_ns,
        }
        Ok(action)
    }

    /// The stub's timestamp of the signal being read (checked: after the last return to the
    /// guest, not in the future), and the time of the fill before it, if there was one.
    fn signal_time(&mut self, run: &mut RunClock, now: u64) -> Result<u64, DriverError> {
        let t = self.timestamp(stub::SIGNAL_TS);
        let Some(signal_ns) = t.filter(|&t| t >= run.posted_ns && t <= now) else {
            return Err(self.corrupted(format!("signal timestamp {t:?}")));
        };
        if let Some(fill) = run.fill_signal_ns.take() {
            let back = self.timestamp(stub::RESUME_TS);
            let Some(back) = back.filter(|&b| b >= fill && b <= signal_ns) else {
                return Err(self.corrupted(format!("return timestamp {back:?} after a fill")));
            };
            let m = &mut self.monitor.exit;
            m.fill_ns = m.fill_ns.saturating_add(back - fill);
        }
        Ok(signal_ns)
    }

    /// Native time of the ended run: from the stub's entry to the signal that ended it.
    pub(super) fn finish_times(&mut self, run: &RunClock) -> Result<(), DriverError> {
        let entered = self.entered_ns();
        let Some(entered) = entered.filter(|&e| e >= run.posted_ns && e <= run.exit_signal_ns)
        else {
            return Err(self.corrupted(format!(
                "entry timestamp {entered:?} outside the run ({} .. {} ns)",
                run.posted_ns, run.exit_signal_ns
            )));
        };
        let exit = &mut self.monitor.exit;
        exit.native_ns = run.exit_signal_ns - entered;
        // The calibrated fault cost is an estimate: keep the sum within the run.
        exit.fill_ns = exit.fill_ns.min(exit.native_ns);
        Ok(())
    }
}
