//! The C ABI of `bochs-ffi/include/plex86_accel.h`: thin wrappers over
//! [`AccelOps`](crate::AccelOps).
//!
//! Every exported function
//!
//! * validates its pointer arguments (NULL, alignment) and sizes (`abi_version`, `struct_size`,
//!   `n_ram_ranges`) before reading anything else;
//! * finds the handle in a registry of live accelerators. The `plex86_accel *` is only a key
//!   (a never-reused number, not an address): it is never dereferenced, so a stale, foreign or
//!   doubly shut-down pointer is reported, not followed, and cannot alias a later accelerator;
//! * serialises calls on one handle with a try-lock: a re-entrant call (e.g. from Bochs's log
//!   callback) or a concurrent one fails cleanly instead of blocking;
//! * runs the safe core inside `catch_unwind`: a panic never unwinds into Bochs. In
//!   `plex86_accel_run` it becomes FAILED (with `lost_native_progress` set if native code may
//!   have run); either way the accelerator disables itself and logs the panic at PANIC level.
//!
//! `PLEX86_ACCEL_BACKEND=null` in the environment makes `plex86_accel_init` return a
//! [`NullAccel`](crate::NullAccel) (declines everything, needs no executor) for testing the
//! Bochs side.
//!
//! The exports are here; `config` reads `plex86_accel_config` and starts the core,
//! `registry` holds the live handles and runs calls on them.

mod config;
mod registry;

use crate::{CpuState, RunOutcome};
use bochs_ffi::{raw, ABI_VERSION};
use registry::{notify, panic_text, report, with_core, CallError};
use std::ffi::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::TryLockError;

/// Environment variable that selects the backend (`null`: [`NullAccel`](crate::NullAccel)).
pub const BACKEND_ENV: &str = "PLEX86_ACCEL_BACKEND";

/// Copies `msg` NUL-terminated into `buf` (truncated at a character boundary).
fn copy_message(buf: &mut [c_char], msg: &str) {
    let Some(max) = buf.len().checked_sub(1) else {
        return;
    };
    let mut n = msg.len().min(max);
    while !msg.is_char_boundary(n) {
        n -= 1;
    }
    for (d, &s) in buf.iter_mut().zip(&msg.as_bytes()[..n]) {
        *d = s as c_char;
    }
    buf[n] = 0;
}

/// Returns `PLEX86_ACCEL_ABI_VERSION` as this library was built.
#[no_mangle]
pub extern "C" fn plex86_accel_abi_version() -> u32 {
    ABI_VERSION
}

/// Starts the accelerator (spawns the executor). On failure returns NULL and writes a
/// NUL-terminated message into `error` (at most `error_len` bytes); the message is also logged
/// through the configuration's callback when the configuration could be read.
///
/// # Safety
/// * `config` is NULL or points to a `plex86_accel_config` whose `abi_version` and
///   `struct_size` fields are readable; when they match this library, to the whole structure.
/// * Its `executor_path` and `stats_path` are NULL or NUL-terminated strings.
/// * Its `log` callback (if any) stays callable with `log_opaque` until
///   [`plex86_accel_shutdown`]; `guest_cpuid` (if any) is callable with `cpuid_opaque` during
///   this call. `ram_fd` is the caller's: the library duplicates it and never closes it.
/// * `error` is NULL or writable for `error_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn plex86_accel_init(
    config: *const raw::plex86_accel_config,
    error: *mut c_char,
    error_len: usize,
) -> *mut raw::plex86_accel {
    // SAFETY: the caller's contract covers `config`.
    let result = catch_unwind(AssertUnwindSafe(|| unsafe { config::init(config) }));
    let (message, log) = match result {
        Ok(Ok(p)) => return p,
        Ok(Err(e)) => e,
        Err(payload) => (
            format!(
                "internal error (panic) during init: {}",
                panic_text(&*payload)
            ),
            None,
        ),
    };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if let Some(log) = log {
            log.error(&format!("init failed: {message}"));
        }
    }));
    if !error.is_null() && error_len > 0 {
        // SAFETY: non-NULL and writable for `error_len` bytes per the contract; c_char has no
        // alignment requirement.
        let buf = unsafe { std::slice::from_raw_parts_mut(error, error_len) };
        copy_message(buf, &message);
    }
    std::ptr::null_mut()
}

fn blank_exit() -> raw::plex86_accel_exit {
    raw::plex86_accel_exit {
        status: raw::plex86_accel_status_PLEX86_ACCEL_DECLINED,
        reason: 0,
        decline_reason: raw::plex86_accel_decline_reason_PLEX86_ACCEL_DECLINE_NONE,
        seg_reload: 0,
        ticks: 0,
        retry_after_ticks: 0,
        lost_native_progress: 0,
        n_code_pages: 0,
        contained: 0,
        reserved: 0,
        code_pages: std::ptr::null(),
        message: [0; 256],
    }
}

fn set_failed(exit: &mut raw::plex86_accel_exit, message: &str, lost: bool) {
    *exit = blank_exit();
    exit.status = raw::plex86_accel_status_PLEX86_ACCEL_FAILED;
    exit.lost_native_progress = u32::from(lost);
    copy_message(&mut exit.message, message);
}

fn fill_exit(exit: &mut raw::plex86_accel_exit, outcome: RunOutcome<'_>) {
    match outcome {
        RunOutcome::Declined {
            reason,
            retry_after_ticks,
        } => {
            exit.status = raw::plex86_accel_status_PLEX86_ACCEL_DECLINED;
            exit.decline_reason = reason;
            exit.retry_after_ticks = retry_after_ticks;
        }
        RunOutcome::Ran {
            reason,
            ticks,
            seg_reload,
            code_pages,
            contained,
        } => {
            exit.status = raw::plex86_accel_status_PLEX86_ACCEL_RAN;
            exit.reason = reason;
            exit.ticks = ticks;
            exit.seg_reload = seg_reload;
            exit.contained = u32::from(contained);
            exit.n_code_pages = u32::try_from(code_pages.len()).unwrap_or(u32::MAX);
            exit.code_pages = if code_pages.is_empty() {
                std::ptr::null()
            } else {
                code_pages.as_ptr()
            };
        }
        RunOutcome::Failed {
            message,
            lost_native_progress,
        } => set_failed(exit, &message, lost_native_progress),
    }
}

/// Runs the guest natively from `*state` for at most `budget_ticks`, or declines; the result
/// is in `*exit` (see the header). `exit.code_pages` points into library memory valid until
/// the next call on this accelerator.
///
/// # Safety
/// * `exit` is NULL or valid for writes of a `plex86_accel_exit` (with NULL nothing is done).
/// * `state` is NULL or valid for reads and writes of a `plex86_accel_cpu_state`, not accessed
///   by anything else during the call.
/// * `accel` may be anything: it is checked against the live handles.
#[no_mangle]
pub unsafe extern "C" fn plex86_accel_run(
    accel: *mut raw::plex86_accel,
    state: *mut raw::plex86_accel_cpu_state,
    budget_ticks: u64,
    user_insns: u64,
    exit: *mut raw::plex86_accel_exit,
) {
    if exit.is_null() || !exit.is_aligned() {
        let _ = with_core(accel, |c| {
            c.log()
                .error("plex86_accel_run: exit is NULL or misaligned; nothing done")
        });
        return;
    }
    // SAFETY: non-NULL, aligned and writable per the contract; initialised here before any
    // read.
    let exit = unsafe {
        exit.write(blank_exit());
        &mut *exit
    };
    if state.is_null() || !state.is_aligned() {
        const WHY: &str = "plex86_accel_run: state is NULL or misaligned; nothing done";
        // Like every FAILED, this one disables the accelerator.
        let _ = with_core(accel, |c| {
            c.disable(WHY);
            c.log().error(&format!("accelerator disabled: {WHY}"));
        });
        set_failed(exit, WHY, false);
        return;
    }
    // SAFETY: non-NULL, aligned, valid for reads and writes and unaliased per the contract.
    let state: &mut CpuState = unsafe { &mut *state };
    let result = with_core(accel, |core| {
        fill_exit(&mut *exit, core.run(state, budget_ticks, user_insns))
    });
    if let Err(e) = result {
        set_failed(
            exit,
            &format!("plex86_accel_run: {}", e.message()),
            e.lost_native_progress(),
        );
    }
}

/// Nonzero when native user code reads the host's CPUID (no CPUID faulting): Bochs answers
/// CPL 3 CPUID with the host's values. An unknown handle or a panic answers 1, the answer
/// that keeps a program from seeing two CPUs when native CPUID is the host's.
#[no_mangle]
pub extern "C" fn plex86_accel_native_cpuid_is_hosts(accel: *const raw::plex86_accel) -> u32 {
    match with_core(accel.cast_mut(), |c| c.native_cpuid_is_hosts()) {
        Ok(v) => u32::from(v),
        Err(e) => {
            report("plex86_accel_native_cpuid_is_hosts", &e.message());
            1
        }
    }
}

/// Bochs declined an entry at its hook (`reason`: `PLEX86_ACCEL_DECLINE_*`), for the
/// statistics.
#[no_mangle]
pub extern "C" fn plex86_accel_note_declined(accel: *mut raw::plex86_accel, reason: u32) {
    let _ = notify(accel, "plex86_accel_note_declined", |c| {
        c.note_declined(reason)
    });
}

/// Bochs's TLB was flushed: all entries (`include_global` != 0) or all but global ones.
#[no_mangle]
pub extern "C" fn plex86_accel_flush_tlb(accel: *mut raw::plex86_accel, include_global: c_int) {
    let _ = notify(accel, "plex86_accel_flush_tlb", |c| {
        c.flush_tlb(include_global != 0)
    });
}

/// INVLPG of one linear address.
#[no_mangle]
pub extern "C" fn plex86_accel_invlpg(accel: *mut raw::plex86_accel, linear: u64) {
    let _ = notify(accel, "plex86_accel_invlpg", |c| c.invlpg(linear));
}

/// Bochs holds decoded code from this guest-physical page.
#[no_mangle]
pub extern "C" fn plex86_accel_protect_code_page(accel: *mut raw::plex86_accel, physical: u64) {
    let _ = notify(accel, "plex86_accel_protect_code_page", |c| {
        c.protect_code_page(physical)
    });
}

/// The plain-RAM ranges changed. An unreadable list (NULL or misaligned with `n_ranges` > 0)
/// is logged and treated as "no RAM": nothing is mirrored until the next change.
///
/// # Safety
/// `ranges` is NULL or valid for reads of `n_ranges` `plex86_accel_ram_range` structures.
#[no_mangle]
pub unsafe extern "C" fn plex86_accel_memory_map_changed(
    accel: *mut raw::plex86_accel,
    ranges: *const raw::plex86_accel_ram_range,
    n_ranges: u32,
) {
    let list: Result<Vec<(u64, u64)>, &str> = if n_ranges == 0 {
        Ok(Vec::new())
    } else if ranges.is_null() || !ranges.is_aligned() {
        Err("ranges is NULL or misaligned")
    } else {
        // SAFETY: non-NULL, aligned and readable for `n_ranges` elements per the contract.
        let s = unsafe { std::slice::from_raw_parts(ranges, n_ranges as usize) };
        Ok(s.iter().map(|r| (r.start, r.end)).collect())
    };
    let _ = notify(accel, "plex86_accel_memory_map_changed", |c| match list {
        Ok(l) => c.memory_map_changed(&l),
        Err(why) => {
            c.log().error(&format!("plex86_accel_memory_map_changed: {why} with n_ranges = {n_ranges}: mirroring no RAM"));
            c.memory_map_changed(&[]);
        }
    });
}

/// Stops the executor, logs the statistics and writes the JSON file if configured. `accel`
/// may be NULL; an unknown or already shut-down handle is reported on stderr and ignored.
#[no_mangle]
pub extern "C" fn plex86_accel_shutdown(accel: *mut raw::plex86_accel) {
    if accel.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Some(handle) = registry::unregister(accel) else {
            report("plex86_accel_shutdown", &CallError::Unknown.message());
            return;
        };
        match handle.core.try_lock() {
            Ok(mut g) => g.finish(),
            Err(TryLockError::Poisoned(p)) => p.into_inner().finish(),
            Err(TryLockError::WouldBlock) => {
                report(
                    "plex86_accel_shutdown during a call",
                    "the accelerator stops when that call returns",
                );
            }
        }
        drop(handle); // the last reference: the executor is killed here
    }));
}

#[cfg(test)]
mod tests;
