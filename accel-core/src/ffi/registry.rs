//! The live accelerators. A `plex86_accel *` is only a key into this registry (a never-reused
//! number, not an address), so a stale, foreign or doubly shut-down pointer is reported, not
//! followed. Calls on one handle are serialised with a try-lock and run inside
//! `catch_unwind`.

use crate::AccelOps;
use bochs_ffi::raw;
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

pub(super) struct Handle {
    key: usize,
    pub(super) core: Mutex<Box<dyn AccelOps>>,
}

static REGISTRY: Mutex<Vec<Arc<Handle>>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

fn registry() -> MutexGuard<'static, Vec<Arc<Handle>>> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registers `core` and returns its handle value.
pub(super) fn register(core: Box<dyn AccelOps>) -> *mut raw::plex86_accel {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let key = 0x1000 + 16 * id;
    registry().push(Arc::new(Handle {
        key,
        core: Mutex::new(core),
    }));
    handle_ptr(key)
}

fn handle_ptr(key: usize) -> *mut raw::plex86_accel {
    std::ptr::null_mut::<u8>().wrapping_add(key).cast()
}

pub(super) fn lookup(accel: *mut raw::plex86_accel) -> Option<Arc<Handle>> {
    registry()
        .iter()
        .find(|h| handle_ptr(h.key) == accel)
        .cloned()
}

/// Takes `accel` out of the registry (`None`: not a live handle).
pub(super) fn unregister(accel: *mut raw::plex86_accel) -> Option<Arc<Handle>> {
    let mut reg = registry();
    reg.iter()
        .position(|h| handle_ptr(h.key) == accel)
        .map(|i| reg.swap_remove(i))
}

/// Why a call could not reach the core.
#[derive(Debug)]
pub(super) enum CallError {
    Null,
    Unknown,
    Busy,
    Panicked { message: String, uncertain: bool },
}

impl CallError {
    pub(super) fn message(&self) -> String {
        match self {
            CallError::Null => "accel is NULL".into(),
            CallError::Unknown => "accel is not a live accelerator handle (already shut down?)".into(),
            CallError::Busy => "re-entrant or concurrent call on the same accelerator (the library is not reentrant)".into(),
            CallError::Panicked { message, .. } => format!("internal error (panic): {message}; accelerator disabled"),
        }
    }

    pub(super) fn lost_native_progress(&self) -> bool {
        matches!(
            self,
            CallError::Panicked {
                uncertain: true,
                ..
            }
        )
    }
}

pub(super) fn panic_text(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// Runs `f` on the core of `accel` (validated, locked, panics caught).
pub(super) fn with_core<R>(
    accel: *mut raw::plex86_accel,
    f: impl FnOnce(&mut dyn AccelOps) -> R,
) -> Result<R, CallError> {
    if accel.is_null() {
        return Err(CallError::Null);
    }
    let handle = lookup(accel).ok_or(CallError::Unknown)?;
    let mut guard = match handle.core.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => return Err(CallError::Busy),
    };
    let result = catch_unwind(AssertUnwindSafe(|| f(&mut **guard)));
    result.map_err(|payload| {
        let message = panic_text(&*payload);
        let uncertain = catch_unwind(AssertUnwindSafe(|| {
            let core = &mut **guard;
            let uncertain = core.native_progress_uncertain();
            core.disable(&format!("internal error: {message}"));
            core.log().panic(&format!(
                "internal error (panic): {message}; accelerator disabled"
            ));
            uncertain
        }))
        .unwrap_or(true);
        CallError::Panicked { message, uncertain }
    })
}

/// Runs a notification on the core of `accel`; a call that cannot reach it is reported on
/// stderr (a panic was logged by [`with_core`]).
pub(super) fn notify(
    accel: *mut raw::plex86_accel,
    what: &str,
    f: impl FnOnce(&mut dyn AccelOps),
) -> Result<(), CallError> {
    let result = with_core(accel, f);
    if let Err(e) = &result {
        if !matches!(e, CallError::Panicked { .. }) {
            report(what, &e.message());
        }
    }
    result
}

/// Reports on stderr what cannot go to an accelerator's logger (no live handle, or busy).
pub(super) fn report(what: &str, message: &str) {
    let line = format!("plex86-accel: {what}: {message}");
    #[cfg(test)]
    REPORTED.with(|r| r.borrow_mut().push(line.clone()));
    eprintln!("{line}");
}

#[cfg(test)]
thread_local! {
    /// What [`report`] wrote on this thread, for the tests.
    pub(super) static REPORTED: std::cell::RefCell<Vec<String>> =
        const { std::cell::RefCell::new(Vec::new()) };
}
