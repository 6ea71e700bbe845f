//! What the accelerator tells: the log, the statistics, and the reports logged only a few
//! times (unsupported states, guest XCR0 values) or once (the up-front RAM allocation).

use crate::cpuid;
use crate::log::Logger;
use crate::prealloc::Prealloc;
use crate::stats::Stats;
use std::path::PathBuf;

/// Log at most this many unsupported-state declines (then only count them).
const UNSUPPORTED_LOG_LIMIT: u32 = 8;
/// Log at most this many distinct guest XCR0 values.
const XCR0_LOG_LIMIT: u32 = 4;

/// The log, the statistics and what has been reported so far.
pub(super) struct Reporting {
    pub(super) log: Logger,
    pub(super) stats: Stats,
    /// Where [`Reporting::finish`] writes the JSON statistics.
    stats_path: Option<PathBuf>,
    /// The statistics have been logged (and written).
    finished: bool,
    /// The allocation of guest RAM at start, until its outcome is logged.
    pub(super) prealloc: Option<Prealloc>,
    /// The host's XCR0, for the logs.
    pub(super) host_xcr0: Option<u64>,
    /// The last guest XCR0 logged, and how many values have been.
    xcr0_logged: (Option<u64>, u32),
    unsupported_logged: u32,
}

impl Reporting {
    pub(super) fn new(log: Logger, stats_path: Option<PathBuf>, host_xcr0: Option<u64>) -> Self {
        Reporting {
            log,
            stats: Stats::default(),
            stats_path,
            finished: false,
            prealloc: None,
            host_xcr0,
            xcr0_logged: (None, 0),
            unsupported_logged: 0,
        }
    }

    pub(super) fn note_unsupported(&mut self, why: &str) {
        if self.unsupported_logged < UNSUPPORTED_LOG_LIMIT {
            self.unsupported_logged += 1;
            let more = if self.unsupported_logged == UNSUPPORTED_LOG_LIMIT {
                " (further ones are only counted)"
            } else {
                ""
            };
            self.log
                .info(&format!("entry declined, unsupported state: {why}{more}"));
        }
    }

    /// Logs the outcome of the allocation of guest RAM once it is known (`wait`: block).
    pub(super) fn report_prealloc(&mut self, wait: bool) {
        match self.prealloc.as_mut().and_then(|p| p.outcome(wait)) {
            Some(Ok(m)) => self.log.info(&m),
            Some(Err(m)) => self.log.error(&m),
            None => return,
        }
        self.prealloc = None;
    }

    pub(super) fn note_xcr0(&mut self, xcr0: u64) {
        let (last, n) = self.xcr0_logged;
        if last == Some(xcr0) || n >= XCR0_LOG_LIMIT {
            return;
        }
        self.xcr0_logged = (Some(xcr0), n + 1);
        let mut line = format!(
            "guest XCR0 in force: {xcr0:#x} ({})",
            cpuid::xcr0_names(xcr0)
        );
        if let Some(h) = self.host_xcr0 {
            line.push_str(&format!("; host XCR0 {h:#x}"));
            if h & !xcr0 != 0 {
                line.push_str(&format!(
                    ": native code can also use {} (a leak: such instructions run instead of faulting)",
                    cpuid::xcr0_names(h & !xcr0)
                ));
            }
        }
        self.log.info(&line);
    }

    /// Logs the statistics and writes the JSON file, once.
    pub(super) fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        // Waits for an allocation still running (seconds only for tens of GiB of RAM).
        self.report_prealloc(true);
        let wall = u64::try_from(self.stats.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        for line in self.stats.summary(wall) {
            self.log.info(&line);
        }
        if let Some(path) = &self.stats_path {
            match std::fs::write(path, self.stats.to_json(wall)) {
                Ok(()) => self
                    .log
                    .info(&format!("statistics written to {}", path.display())),
                Err(e) => self.log.error(&format!(
                    "cannot write statistics to {}: {e}",
                    path.display()
                )),
            }
        }
    }
}
