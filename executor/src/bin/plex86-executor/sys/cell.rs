//! The monitor cell shared by the executor loop and the signal handler.

use super::exit_group;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};
/// A cell for the executor's monitor state, shared by the main loop and the signal handler.
/// Access is exclusive by construction (signals are blocked while the loop runs, and the loop is
/// suspended while the handler runs); a busy flag turns any violation into a clean exit.
pub struct MonitorCell<T> {
    busy: AtomicBool,
    value: UnsafeCell<Option<T>>,
}

// SAFETY: the executor is single-threaded; see the type documentation for exclusivity.
unsafe impl<T> Sync for MonitorCell<T> {}

impl<T> MonitorCell<T> {
    /// An empty cell.
    pub const fn new() -> Self {
        MonitorCell {
            busy: AtomicBool::new(false),
            value: UnsafeCell::new(None),
        }
    }
    /// Runs `f` with exclusive access to the value (which must have been set).
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        if self.busy.swap(true, Ordering::Acquire) {
            exit_group(plex86_protocol::exit_code::PANIC);
        }
        // SAFETY: the busy flag guarantees that no other reference to the value exists.
        let v = unsafe { &mut *self.value.get() };
        let Some(v) = v.as_mut() else {
            exit_group(plex86_protocol::exit_code::PANIC)
        };
        let r = f(v);
        self.busy.store(false, Ordering::Release);
        r
    }
    /// Sets the value (setup only).
    pub fn set(&self, v: T) {
        if self.busy.swap(true, Ordering::Acquire) {
            exit_group(plex86_protocol::exit_code::PANIC);
        }
        // SAFETY: exclusive by the busy flag.
        unsafe { *self.value.get() = Some(v) };
        self.busy.store(false, Ordering::Release);
    }
}

impl<T> Default for MonitorCell<T> {
    fn default() -> Self {
        Self::new()
    }
}
