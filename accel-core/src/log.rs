//! A small logger over Bochs's log callback (`plex86_accel_config.log`).
//!
//! Levels are Bochs's (`PLEX86_ACCEL_LOG_*`). Without a callback, messages go to stderr. The
//! library never logs at PANIC level from inside a call that Bochs could answer by exiting and
//! re-entering the library: PANIC is reserved for a caught Rust panic (a library bug), logged
//! after the accelerator has been disabled.

use bochs_ffi::raw;
use std::fmt;
use std::sync::{Arc, Mutex};

/// A log level, as Bochs's `LOGLEV_*` (and `enum plex86_accel_log_level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Debugging detail.
    Debug,
    /// Information: start-up summary, CPUID comparison, statistics.
    Info,
    /// An error: the accelerator disabled itself, a file could not be written, …
    Error,
    /// A library bug (a caught panic).
    Panic,
}

impl Level {
    /// The header's value for this level.
    pub fn code(self) -> i32 {
        let v = match self {
            Level::Debug => raw::plex86_accel_log_level_PLEX86_ACCEL_LOG_DEBUG,
            Level::Info => raw::plex86_accel_log_level_PLEX86_ACCEL_LOG_INFO,
            Level::Error => raw::plex86_accel_log_level_PLEX86_ACCEL_LOG_ERROR,
            Level::Panic => raw::plex86_accel_log_level_PLEX86_ACCEL_LOG_PANIC,
        };
        v as i32
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Error => "ERROR",
            Level::Panic => "PANIC",
        })
    }
}

/// Lines recorded by [`Logger::capture`].
pub type Captured = Arc<Mutex<Vec<(Level, String)>>>;

/// Where log lines go: a function of level and message.
pub type Sink = Arc<dyn Fn(Level, &str) + Send + Sync>;

/// The accelerator's logger (cheap to clone: the sink is shared).
#[derive(Clone)]
pub struct Logger {
    sink: Option<Sink>,
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger")
            .field("callback", &self.sink.is_some())
            .finish()
    }
}

impl Logger {
    /// A logger that calls `sink` for every message.
    pub fn new(sink: Sink) -> Self {
        Logger { sink: Some(sink) }
    }

    /// A logger that writes to stderr (when Bochs gave no callback).
    pub fn stderr() -> Self {
        Logger { sink: None }
    }

    /// A logger that records messages, for tests.
    pub fn capture() -> (Self, Captured) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&lines);
        let sink: Sink = Arc::new(move |level, msg| {
            l.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((level, msg.to_owned()));
        });
        (Logger::new(sink), lines)
    }

    /// Logs one message.
    pub fn log(&self, level: Level, msg: &str) {
        match &self.sink {
            Some(sink) => sink(level, msg),
            None => eprintln!("plex86-accel: {level}: {msg}"),
        }
    }

    /// Logs at INFO level.
    pub fn info(&self, msg: &str) {
        self.log(Level::Info, msg);
    }

    /// Logs at ERROR level.
    pub fn error(&self, msg: &str) {
        self.log(Level::Error, msg);
    }

    /// Logs at PANIC level (library bugs only; see the module documentation).
    pub fn panic(&self, msg: &str) {
        self.log(Level::Panic, msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_the_headers() {
        assert_eq!(Level::Debug.code(), 0);
        assert_eq!(Level::Info.code(), 1);
        assert_eq!(Level::Error.code(), 2);
        assert_eq!(Level::Panic.code(), 3);
    }

    #[test]
    fn capture_records_in_order() {
        let (log, lines) = Logger::capture();
        log.info("a");
        log.error("b");
        log.panic("c");
        let got = lines.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                (Level::Info, "a".into()),
                (Level::Error, "b".into()),
                (Level::Panic, "c".into())
            ]
        );
    }
}
