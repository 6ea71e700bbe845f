//! The null accelerator: declines every entry (QEMU's qtest accelerator, in spirit). It keeps
//! the statistics of what Bochs reports, so the Bochs patches can be exercised and checked
//! without an executor.

use crate::log::Logger;
use crate::policy::Decline;
use crate::stats::Stats;
use crate::{AccelOps, CpuState, RunOutcome};
use std::path::PathBuf;

/// Declines every entry with `DISABLED` (retry at any time, so the hook keeps being
/// exercised) and counts notifications.
#[derive(Debug)]
pub struct NullAccel {
    log: Logger,
    stats: Stats,
    stats_path: Option<PathBuf>,
    finished: bool,
}

impl NullAccel {
    /// A null accelerator logging to `log` and writing statistics to `stats_path`.
    pub fn new(log: Logger, stats_path: Option<PathBuf>) -> Self {
        log.info("null accelerator: every entry is declined (PLEX86_ACCEL_BACKEND=null)");
        NullAccel {
            log,
            stats: Stats::default(),
            stats_path,
            finished: false,
        }
    }

    /// The statistics so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

impl AccelOps for NullAccel {
    fn run(
        &mut self,
        _state: &mut CpuState,
        _budget_ticks: u64,
        _user_insns: u64,
    ) -> RunOutcome<'_> {
        self.stats.calls += 1;
        let reason = Decline::Disabled.code();
        self.stats.decline(reason);
        RunOutcome::Declined {
            reason,
            retry_after_ticks: 0,
        }
    }

    fn note_declined(&mut self, reason: u32) {
        self.stats.decline(reason);
    }

    fn flush_tlb(&mut self, include_global: bool) {
        if include_global {
            self.stats.flush_all += 1;
        } else {
            self.stats.flush_non_global += 1;
        }
    }

    fn invlpg(&mut self, _linear: u64) {
        self.stats.invlpg += 1;
    }

    fn protect_code_page(&mut self, _physical: u64) {
        self.stats.protect_requests += 1;
    }

    fn memory_map_changed(&mut self, _ranges: &[(u64, u64)]) {
        self.stats.memory_map_changes += 1;
    }

    fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let wall = u64::try_from(self.stats.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        for line in self.stats.summary(wall) {
            self.log.info(&line);
        }
        if let Some(path) = &self.stats_path {
            if let Err(e) = std::fs::write(path, self.stats.to_json(wall)) {
                self.log.error(&format!(
                    "cannot write statistics to {}: {e}",
                    path.display()
                ));
            }
        }
    }

    fn native_progress_uncertain(&self) -> bool {
        false
    }

    fn disable(&mut self, why: &str) {
        self.stats.failure.get_or_insert_with(|| why.to_string());
    }

    fn log(&self) -> &Logger {
        &self.log
    }

    fn native_cpuid_is_hosts(&self) -> bool {
        false // nothing runs natively
    }
}

impl Drop for NullAccel {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bochs_ffi::raw;
    use test_support::guest_state::sample_state;

    const DISABLED: u32 = raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_DISABLED;
    const EVENT_PENDING: u32 = raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_EVENT_PENDING;

    #[test]
    fn declines_everything_and_counts() {
        let (log, lines) = Logger::capture();
        let mut n = NullAccel::new(log, None);
        let mut s = sample_state();
        let before = format!("{s:?}");
        for _ in 0..3 {
            assert_eq!(
                n.run(&mut s, 1 << 30, 1 << 30),
                RunOutcome::Declined {
                    reason: DISABLED,
                    retry_after_ticks: 0
                }
            );
        }
        assert_eq!(format!("{s:?}"), before, "state untouched");
        n.note_declined(EVENT_PENDING);
        n.flush_tlb(true);
        n.invlpg(0x1000);
        n.protect_code_page(0x2000);
        n.memory_map_changed(&[(0, 0x1000)]);
        assert_eq!(
            (
                n.stats().calls,
                n.stats().declines[DISABLED as usize],
                n.stats().declines[EVENT_PENDING as usize]
            ),
            (3, 3, 1)
        );
        n.finish();
        n.finish();
        let l = lines.lock().unwrap();
        assert_eq!(
            l.iter()
                .filter(|(_, m)| m.starts_with("statistics:"))
                .count(),
            1
        );
    }
}
