//! The C ABI of `bochs-ffi/include/plex86_accel.h`: thin wrappers over [`AccelOps`].
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
//! [`NullAccel`] (declines everything, needs no executor) for testing the Bochs side.

use crate::accel::{normalize_ram_map, Accelerator, Config};
use crate::cpuid::CpuidFn;
use crate::log::{Level, Logger, Sink};
use crate::{sys, AccelOps, CpuState, NullAccel, RunOutcome};
use bochs_ffi::{raw, ABI_VERSION};
use std::any::Any;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

/// Environment variable that selects the backend (`null`: [`NullAccel`]).
pub const BACKEND_ENV: &str = "PLEX86_ACCEL_BACKEND";

struct Handle {
    key: usize,
    core: Mutex<Box<dyn AccelOps>>,
}

static REGISTRY: Mutex<Vec<Arc<Handle>>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

fn registry() -> MutexGuard<'static, Vec<Arc<Handle>>> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registers `core` and returns its handle value.
fn register(core: Box<dyn AccelOps>) -> *mut raw::plex86_accel {
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

fn lookup(accel: *mut raw::plex86_accel) -> Option<Arc<Handle>> {
    registry()
        .iter()
        .find(|h| handle_ptr(h.key) == accel)
        .cloned()
}

/// Why a call could not reach the core.
#[derive(Debug)]
enum CallError {
    Null,
    Unknown,
    Busy,
    Panicked { message: String, uncertain: bool },
}

impl CallError {
    fn message(&self) -> String {
        match self {
            CallError::Null => "accel is NULL".into(),
            CallError::Unknown => "accel is not a live accelerator handle (already shut down?)".into(),
            CallError::Busy => "re-entrant or concurrent call on the same accelerator (the library is not reentrant)".into(),
            CallError::Panicked { message, .. } => format!("internal error (panic): {message}; accelerator disabled"),
        }
    }

    fn lost_native_progress(&self) -> bool {
        matches!(
            self,
            CallError::Panicked {
                uncertain: true,
                ..
            }
        )
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// Runs `f` on the core of `accel` (validated, locked, panics caught).
fn with_core<R>(
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

/// Reports a failed notification where it can.
fn notify(accel: *mut raw::plex86_accel, what: &str, f: impl FnOnce(&mut dyn AccelOps)) {
    match with_core(accel, f) {
        Ok(()) | Err(CallError::Panicked { .. }) => {} // a panic was logged by with_core
        Err(e) => eprintln!("plex86-accel: {what}: {}", e.message()),
    }
}

/// `s` as a C string (interior NULs shown as `\0`).
fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

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

/// Bochs's log callback.
struct CLog {
    f: unsafe extern "C" fn(*mut c_void, c_int, *const c_char),
    opaque: *mut c_void,
}

// SAFETY: the callback and its opaque pointer are Bochs's; the contract is one guest CPU on
// one thread, and the library only passes `opaque` back to Bochs's own callback.
unsafe impl Send for CLog {}
// SAFETY: as above; `CLog` has no interior state.
unsafe impl Sync for CLog {}

impl CLog {
    fn emit(&self, level: Level, msg: &str) {
        let c = c_string(msg);
        // SAFETY: `f` is the log callback Bochs registered in `plex86_accel_init` (valid until
        // shutdown, per the header), called with its own `opaque` and a NUL-terminated string
        // that outlives the call.
        unsafe { (self.f)(self.opaque, level.code(), c.as_ptr()) }
    }
}

fn logger(f: raw::plex86_accel_log_fn, opaque: *mut c_void) -> Logger {
    match f {
        Some(f) => {
            let clog = CLog { f, opaque };
            let sink: Sink = Arc::new(move |level, msg| clog.emit(level, msg));
            Logger::new(sink)
        }
        None => Logger::stderr(),
    }
}

/// Reads an optional path (NULL or "" → `None`).
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
unsafe fn c_path(p: *const c_char) -> Option<PathBuf> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    (!bytes.is_empty()).then(|| {
        PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes))
    })
}

/// Validates the configuration and starts the accelerator.
///
/// # Safety
/// As [`plex86_accel_init`] for `config`.
unsafe fn init(
    config: *const raw::plex86_accel_config,
) -> Result<*mut raw::plex86_accel, (String, Option<Logger>)> {
    if config.is_null() {
        return Err(("config is NULL".into(), None));
    }
    if !config.is_aligned() {
        return Err(("config is misaligned".into(), None));
    }
    // SAFETY: non-NULL and aligned; per the header `config` points to a configuration whose
    // first two fields (abi_version, struct_size) are read before anything else.
    let (abi, size) = unsafe {
        (
            std::ptr::addr_of!((*config).abi_version).read(),
            std::ptr::addr_of!((*config).struct_size).read(),
        )
    };
    if abi != ABI_VERSION {
        return Err((
            format!("config.abi_version is {abi} but this library implements ABI {ABI_VERSION}: build Bochs and the library from the same plex86_accel.h"),
            None,
        ));
    }
    let want = std::mem::size_of::<raw::plex86_accel_config>();
    if size as usize != want {
        return Err((
            format!("config.struct_size is {size} but sizeof(plex86_accel_config) is {want} in ABI {ABI_VERSION}: build Bochs and the library from the same plex86_accel.h"),
            None,
        ));
    }
    // SAFETY: struct_size says the whole structure is there; it is plain data.
    let c = unsafe { config.read() };
    let log = logger(c.log, c.log_opaque);
    let fail = |m: String| Err((m, Some(log.clone())));
    let n = c.n_ram_ranges as usize;
    if n > c.ram_ranges.len() {
        return fail(format!(
            "config.n_ram_ranges is {n}, more than PLEX86_ACCEL_MAX_RAM_RANGES ({})",
            c.ram_ranges.len()
        ));
    }
    const KNOWN_FLAGS: u32 = raw::plex86_accel_config_flag_PLEX86_ACCEL_CONFIG_PREALLOC_RAM
        | raw::plex86_accel_config_flag_PLEX86_ACCEL_CONFIG_ALLOW_CPU_MISMATCH
        | raw::plex86_accel_config_flag_PLEX86_ACCEL_CONFIG_CPU_MODEL_HOST;
    if c.flags & !KNOWN_FLAGS != 0 {
        return fail(format!(
            "config.flags is {:#x}: ABI {ABI_VERSION} defines no PLEX86_ACCEL_CONFIG_* flag {:#x}",
            c.flags,
            c.flags & !KNOWN_FLAGS
        ));
    }
    let ranges: Vec<(u64, u64)> = c.ram_ranges[..n].iter().map(|r| (r.start, r.end)).collect();
    let (ram_map, problems) = normalize_ram_map(&ranges, c.ram_size);
    if !problems.is_empty() {
        return fail(format!("config.ram_ranges: {}", problems.join("; ")));
    }
    // SAFETY: the header makes both fields NULL or NUL-terminated strings.
    let (executor_path, stats_path) = unsafe { (c_path(c.executor_path), c_path(c.stats_path)) };
    let cfg = Config {
        ram_size: c.ram_size,
        ram_map,
        ips: c.ips,
        executor_path,
        stats_path,
        min_user_insns: c.min_user_insns,
        prealloc_ram: c.flags & raw::plex86_accel_config_flag_PLEX86_ACCEL_CONFIG_PREALLOC_RAM != 0,
        allow_cpu_mismatch: c.flags
            & raw::plex86_accel_config_flag_PLEX86_ACCEL_CONFIG_ALLOW_CPU_MISMATCH
            != 0,
        cpu_model_host: c.flags & raw::plex86_accel_config_flag_PLEX86_ACCEL_CONFIG_CPU_MODEL_HOST
            != 0,
    };
    if let Err(m) = cfg.validate() {
        return fail(format!("config: {m}"));
    }
    if let Some(path) = &cfg.stats_path {
        if let Err(e) = check_writable(path) {
            return fail(format!(
                "stats={}: the statistics file cannot be written: {e}",
                path.display()
            ));
        }
    }
    let core: Box<dyn AccelOps> = if std::env::var_os(BACKEND_ENV).is_some_and(|v| v == "null") {
        Box::new(NullAccel::new(log.clone(), cfg.stats_path.clone()))
    } else {
        let fd = match sys::dup_fd(c.ram_fd) {
            Ok(fd) => fd,
            Err(e) => return fail(format!("config.ram_fd {}: {e}", c.ram_fd)),
        };
        let guest_cpuid = c.guest_cpuid.map(|f| {
            let opaque = c.cpuid_opaque;
            move |leaf: u32, subleaf: u32| {
                let mut out = [0u32; 4];
                // SAFETY: Bochs's CPUID callback with its own opaque pointer, during init, and
                // a writable array of four u32 as the header's prototype requires.
                unsafe { f(opaque, leaf, subleaf, out.as_mut_ptr()) };
                out
            }
        });
        let cpuid: Option<CpuidFn<'_>> = guest_cpuid.as_ref().map(|f| f as CpuidFn<'_>);
        match Accelerator::new(&cfg, fd, log.clone(), cpuid) {
            Ok(a) => Box::new(a),
            Err(m) => return fail(m),
        }
    };
    Ok(register(core))
}

/// Checks at start that the statistics can be written at exit: opens the file for writing
/// (creating it, and removing it again when it did not exist).
fn check_writable(path: &std::path::Path) -> std::io::Result<()> {
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?;
    if !existed {
        std::fs::remove_file(path)?;
    }
    Ok(())
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
    let result = catch_unwind(AssertUnwindSafe(|| unsafe { init(config) }));
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
        } => {
            exit.status = raw::plex86_accel_status_PLEX86_ACCEL_RAN;
            exit.reason = reason;
            exit.ticks = ticks;
            exit.seg_reload = seg_reload;
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
            eprintln!(
                "plex86-accel: plex86_accel_native_cpuid_is_hosts: {}",
                e.message()
            );
            1
        }
    }
}

/// Bochs declined an entry at its hook (`reason`: `PLEX86_ACCEL_DECLINE_*`), for the
/// statistics.
#[no_mangle]
pub extern "C" fn plex86_accel_note_declined(accel: *mut raw::plex86_accel, reason: u32) {
    notify(accel, "plex86_accel_note_declined", |c| {
        c.note_declined(reason)
    });
}

/// Bochs's TLB was flushed: all entries (`include_global` != 0) or all but global ones.
#[no_mangle]
pub extern "C" fn plex86_accel_flush_tlb(accel: *mut raw::plex86_accel, include_global: c_int) {
    notify(accel, "plex86_accel_flush_tlb", |c| {
        c.flush_tlb(include_global != 0)
    });
}

/// INVLPG of one linear address.
#[no_mangle]
pub extern "C" fn plex86_accel_invlpg(accel: *mut raw::plex86_accel, linear: u32) {
    notify(accel, "plex86_accel_invlpg", |c| c.invlpg(linear));
}

/// Bochs holds decoded code from this guest-physical page.
#[no_mangle]
pub extern "C" fn plex86_accel_protect_code_page(accel: *mut raw::plex86_accel, physical: u64) {
    notify(accel, "plex86_accel_protect_code_page", |c| {
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
    notify(accel, "plex86_accel_memory_map_changed", |c| match list {
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
        let handle = {
            let mut reg = registry();
            reg.iter()
                .position(|h| handle_ptr(h.key) == accel)
                .map(|i| reg.swap_remove(i))
        };
        let Some(handle) = handle else {
            eprintln!(
                "plex86-accel: plex86_accel_shutdown: {}",
                CallError::Unknown.message()
            );
            return;
        };
        match handle.core.try_lock() {
            Ok(mut g) => g.finish(),
            Err(TryLockError::Poisoned(p)) => p.into_inner().finish(),
            Err(TryLockError::WouldBlock) => {
                eprintln!("plex86-accel: plex86_accel_shutdown during a call: the accelerator stops when that call returns");
            }
        }
        drop(handle); // the last reference: the executor is killed here
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same<T>(_: T, _: T) {}

    #[test]
    fn exports_have_the_headers_signatures() {
        // Each pair must have the same type: compile errors when the header and the exports
        // drift apart. (The bindings' declarations resolve to these very definitions.)
        same(
            raw::plex86_accel_abi_version as unsafe extern "C" fn() -> _,
            plex86_accel_abi_version as unsafe extern "C" fn() -> _,
        );
        same(
            raw::plex86_accel_init as unsafe extern "C" fn(_, _, _) -> _,
            plex86_accel_init as unsafe extern "C" fn(_, _, _) -> _,
        );
        same(
            raw::plex86_accel_run as unsafe extern "C" fn(_, _, _, _, _),
            plex86_accel_run as unsafe extern "C" fn(_, _, _, _, _),
        );
        same(
            raw::plex86_accel_note_declined as unsafe extern "C" fn(_, _),
            plex86_accel_note_declined as unsafe extern "C" fn(_, _),
        );
        same(
            raw::plex86_accel_flush_tlb as unsafe extern "C" fn(_, _),
            plex86_accel_flush_tlb as unsafe extern "C" fn(_, _),
        );
        same(
            raw::plex86_accel_invlpg as unsafe extern "C" fn(_, _),
            plex86_accel_invlpg as unsafe extern "C" fn(_, _),
        );
        same(
            raw::plex86_accel_protect_code_page as unsafe extern "C" fn(_, _),
            plex86_accel_protect_code_page as unsafe extern "C" fn(_, _),
        );
        same(
            raw::plex86_accel_memory_map_changed as unsafe extern "C" fn(_, _, _),
            plex86_accel_memory_map_changed as unsafe extern "C" fn(_, _, _),
        );
        same(
            raw::plex86_accel_native_cpuid_is_hosts as unsafe extern "C" fn(_) -> _,
            plex86_accel_native_cpuid_is_hosts as unsafe extern "C" fn(_) -> _,
        );
        same(
            raw::plex86_accel_shutdown as unsafe extern "C" fn(_),
            plex86_accel_shutdown as unsafe extern "C" fn(_),
        );
        assert_eq!(plex86_accel_abi_version(), bochs_ffi::ABI_VERSION);
    }

    #[test]
    fn the_statistics_path_is_checked_at_start_and_left_as_it_was() {
        let dir = std::env::temp_dir().join(format!("plex86-stats-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("stats.json");
        check_writable(&file).unwrap();
        assert!(!file.exists(), "a file the check created is removed");
        std::fs::write(&file, "old").unwrap();
        check_writable(&file).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "old");
        assert!(check_writable(&dir).is_err(), "a directory");
        assert!(check_writable(&dir.join("missing/stats.json")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn messages_are_truncated_and_terminated() {
        let mut buf = [1 as c_char; 8];
        copy_message(&mut buf, "héllo world");
        let bytes: Vec<u8> = buf.iter().map(|&c| c as u8).collect();
        assert_eq!(
            CStr::from_bytes_until_nul(&bytes)
                .unwrap()
                .to_str()
                .unwrap(),
            "héllo "
        );
        let mut one = [1 as c_char; 1];
        copy_message(&mut one, "x");
        assert_eq!(one[0], 0);
        copy_message(&mut [], "x");
        assert_eq!(c_string("a\0b").as_bytes(), b"a\\0b");
    }

    #[test]
    fn stray_handles_are_reported_not_followed() {
        let bogus = 0x1000 as *mut raw::plex86_accel;
        assert!(matches!(with_core(bogus, |_| ()), Err(CallError::Unknown)));
        assert!(matches!(
            with_core(std::ptr::null_mut(), |_| ()),
            Err(CallError::Null)
        ));
        // Calls with the stray handle touch no live accelerator.
        let (log, lines) = Logger::capture();
        let live = register(Box::new(NullAccel::new(log, None)));
        let logged = lines.lock().unwrap().len();
        plex86_accel_shutdown(bogus);
        plex86_accel_flush_tlb(bogus, 1);
        assert_eq!(plex86_accel_native_cpuid_is_hosts(bogus), 1);
        assert!(matches!(with_core(bogus, |_| ()), Err(CallError::Unknown)));
        assert!(with_core(live, |_| ()).is_ok(), "the live handle survives");
        assert_eq!(
            lines.lock().unwrap().len(),
            logged,
            "nothing logged on the live one"
        );
        plex86_accel_shutdown(live);
        assert!(matches!(with_core(live, |_| ()), Err(CallError::Unknown)));
    }

    #[test]
    fn panics_become_failures_and_disable_the_core() {
        let (log, lines) = Logger::capture();
        let ptr = register(Box::new(NullAccel::new(log, None)));
        let r: Result<(), CallError> = with_core(ptr, |_| panic!("boom"));
        let e = r.unwrap_err();
        assert!(e.message().contains("boom"));
        assert!(!e.lost_native_progress());
        assert!(lines
            .lock()
            .unwrap()
            .iter()
            .any(|(l, m)| *l == Level::Panic && m.contains("boom")));
        // Still usable afterwards (not poisoned), and re-entrant calls are refused.
        let inner = with_core(ptr, |_| {
            matches!(with_core(ptr, |_| ()), Err(CallError::Busy))
        })
        .unwrap();
        assert!(inner);
        plex86_accel_shutdown(ptr);
        assert!(matches!(with_core(ptr, |_| ()), Err(CallError::Unknown)));
    }
}
