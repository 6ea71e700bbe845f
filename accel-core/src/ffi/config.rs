//! `plex86_accel_init` behind the export: reading `plex86_accel_config` (sizes first, then the
//! whole structure), turning it into a [`Config`], and starting the core it selects.

use super::registry::register;
use super::BACKEND_ENV;
use crate::accel::{normalize_ram_map, Accelerator, Config};
use crate::cpuid::CpuidFn;
use crate::log::{Level, Logger, Sink};
use crate::{sys, AccelOps, AutoBackend, ExecutorBackend, NullAccel, StubBackend};
use bochs_ffi::{raw, ABI_VERSION};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::PathBuf;
use std::sync::Arc;

/// Why init failed, with the logger when the configuration could be read that far.
pub(super) type InitError = (String, Option<Logger>);

/// Validates the configuration and starts the accelerator.
///
/// # Safety
/// As [`super::plex86_accel_init`] for `config`.
pub(super) unsafe fn init(
    config: *const raw::plex86_accel_config,
) -> Result<*mut raw::plex86_accel, InitError> {
    // SAFETY: the caller's contract covers `config`.
    let c = unsafe { read_config(config) }.map_err(|m| (m, None))?;
    let log = logger(c.log, c.log_opaque);
    let fail = |m: String| (m, Some(log.clone()));
    // SAFETY: `c` was read from a configuration that satisfies the caller's contract.
    let cfg = unsafe { Config::from_raw(&c) }.map_err(fail)?;
    if let Some(path) = &cfg.stats_path {
        if let Err(e) = check_writable(path) {
            return Err(fail(format!(
                "stats={}: the statistics file cannot be written: {e}",
                path.display()
            )));
        }
    }
    let core = start_core(&cfg, &c, &log).map_err(fail)?;
    Ok(register(core))
}

/// Reads the configuration after checking the pointer, `abi_version` and `struct_size`.
///
/// # Safety
/// As [`super::plex86_accel_init`] for `config`.
unsafe fn read_config(
    config: *const raw::plex86_accel_config,
) -> Result<raw::plex86_accel_config, String> {
    if config.is_null() {
        return Err("config is NULL".into());
    }
    if !config.is_aligned() {
        return Err("config is misaligned".into());
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
        return Err(format!("config.abi_version is {abi} but this library implements ABI {ABI_VERSION}: build Bochs and the library from the same plex86_accel.h"));
    }
    let want = std::mem::size_of::<raw::plex86_accel_config>();
    if size as usize != want {
        return Err(format!("config.struct_size is {size} but sizeof(plex86_accel_config) is {want} in ABI {ABI_VERSION}: build Bochs and the library from the same plex86_accel.h"));
    }
    // SAFETY: struct_size says the whole structure is there; it is plain data.
    Ok(unsafe { config.read() })
}

impl Config {
    /// The configuration `c` describes: flags, RAM ranges (normalised; any problem refuses)
    /// and paths, validated.
    ///
    /// # Safety
    /// `c.executor_path` and `c.stats_path` are NULL or NUL-terminated strings.
    unsafe fn from_raw(c: &raw::plex86_accel_config) -> Result<Config, String> {
        let n = c.n_ram_ranges as usize;
        if n > c.ram_ranges.len() {
            return Err(format!(
                "config.n_ram_ranges is {n}, more than PLEX86_ACCEL_MAX_RAM_RANGES ({})",
                c.ram_ranges.len()
            ));
        }
        const KNOWN_FLAGS: u32 = raw::plex86_accel_config_flag_PLEX86_ACCEL_CONFIG_PREALLOC_RAM
            | raw::plex86_accel_config_flag_PLEX86_ACCEL_CONFIG_ALLOW_CPU_MISMATCH
            | raw::plex86_accel_config_flag_PLEX86_ACCEL_CONFIG_CPU_MODEL_HOST;
        if c.flags & !KNOWN_FLAGS != 0 {
            return Err(format!(
                "config.flags is {:#x}: ABI {ABI_VERSION} defines no PLEX86_ACCEL_CONFIG_* flag {:#x}",
                c.flags,
                c.flags & !KNOWN_FLAGS
            ));
        }
        let ranges: Vec<(u64, u64)> = c.ram_ranges[..n].iter().map(|r| (r.start, r.end)).collect();
        let (ram_map, problems) = normalize_ram_map(&ranges, c.ram_size);
        if !problems.is_empty() {
            return Err(format!("config.ram_ranges: {}", problems.join("; ")));
        }
        // SAFETY: NULL or NUL-terminated per the caller's contract.
        let (executor_path, stats_path) =
            unsafe { (c_path(c.executor_path), c_path(c.stats_path)) };
        let flag = |f: u32| c.flags & f != 0;
        let cfg = Config {
            ram_size: c.ram_size,
            ram_map,
            ips: c.ips,
            executor_path,
            stats_path,
            min_user_insns: c.min_user_insns,
            prealloc_ram: flag(raw::plex86_accel_config_flag_PLEX86_ACCEL_CONFIG_PREALLOC_RAM),
            allow_cpu_mismatch: flag(
                raw::plex86_accel_config_flag_PLEX86_ACCEL_CONFIG_ALLOW_CPU_MISMATCH,
            ),
            cpu_model_host: flag(raw::plex86_accel_config_flag_PLEX86_ACCEL_CONFIG_CPU_MODEL_HOST),
            stub_base: match c.stub_base {
                0 => host_driver::protocol::stub::DEFAULT_BASE,
                b => b,
            },
        };
        cfg.validate().map_err(|m| format!("config: {m}"))?;
        Ok(cfg)
    }
}

/// What [`BACKEND_ENV`] selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BackendChoice {
    /// Unset, empty or `auto`: 32-bit code on today's executor, 64-bit code on the stub
    /// executor, started at the first 64-bit entry ([`AutoBackend`]).
    Auto,
    /// `executor`: today's executor only (long mode declined, emulated).
    Executor,
    /// `stub`: everything on the stub executor.
    Stub,
    /// `null`: every entry declined, no executor.
    Null,
}

/// Reads [`BACKEND_ENV`]'s value; an unknown one is refused rather than taken for the default
/// (a misspelt `stub` would otherwise run today's executor unnoticed).
fn backend_choice(value: Option<&std::ffi::OsStr>) -> Result<BackendChoice, String> {
    match value.map(|v| v.to_str()) {
        None | Some(Some("" | "auto")) => Ok(BackendChoice::Auto),
        Some(Some("executor")) => Ok(BackendChoice::Executor),
        Some(Some("stub")) => Ok(BackendChoice::Stub),
        Some(Some("null")) => Ok(BackendChoice::Null),
        Some(v) => Err(format!(
            "{BACKEND_ENV}={}: unknown backend (auto, executor, stub or null; unset: auto)",
            v.unwrap_or("<not UTF-8>")
        )),
    }
}

/// Starts the core `cfg` selects by [`BACKEND_ENV`]: a [`NullAccel`] with `null`, else an
/// [`Accelerator`] over the default [`AutoBackend`], today's executor alone (`executor`) or
/// the stub executor alone (`stub`), on a duplicate of `c.ram_fd`, checked against Bochs's
/// CPUID callback.
fn start_core(
    cfg: &Config,
    c: &raw::plex86_accel_config,
    log: &Logger,
) -> Result<Box<dyn AccelOps>, String> {
    let choice = backend_choice(std::env::var_os(BACKEND_ENV).as_deref())?;
    if choice == BackendChoice::Null {
        return Ok(Box::new(NullAccel::new(
            log.clone(),
            cfg.stats_path.clone(),
        )));
    }
    let fd = sys::dup_fd(c.ram_fd).map_err(|e| format!("config.ram_fd {}: {e}", c.ram_fd))?;
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
    let log = log.clone();
    Ok(match choice {
        BackendChoice::Auto => Box::new(Accelerator::<AutoBackend>::new(cfg, fd, log, cpuid)?),
        BackendChoice::Executor => {
            Box::new(Accelerator::<ExecutorBackend>::new(cfg, fd, log, cpuid)?)
        }
        BackendChoice::Stub => Box::new(Accelerator::<StubBackend>::new(cfg, fd, log, cpuid)?),
        BackendChoice::Null => unreachable!("returned above"),
    })
}

/// Checks at start that the statistics can be written at exit: opens the file for writing
/// (creating it, and removing it again when it did not exist).
pub(super) fn check_writable(path: &std::path::Path) -> std::io::Result<()> {
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

/// `s` as a C string (interior NULs shown as `\0`).
pub(super) fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn the_backend_variable_selects_the_backend() {
        let pick = |v: Option<&str>| backend_choice(v.map(OsStr::new));
        assert_eq!(pick(None), Ok(BackendChoice::Auto));
        assert_eq!(pick(Some("")), Ok(BackendChoice::Auto));
        assert_eq!(pick(Some("auto")), Ok(BackendChoice::Auto));
        assert_eq!(pick(Some("executor")), Ok(BackendChoice::Executor));
        assert_eq!(pick(Some("stub")), Ok(BackendChoice::Stub));
        assert_eq!(pick(Some("null")), Ok(BackendChoice::Null));
        for bad in ["Stub", "stub ", "nul", "Auto"] {
            let e = pick(Some(bad)).unwrap_err();
            assert!(
                e.contains(BACKEND_ENV)
                    && e.contains("unknown backend (auto, executor, stub or null; unset: auto)"),
                "{e}"
            );
        }
        assert!(backend_choice(Some(OsStr::from_bytes(b"\xff")))
            .unwrap_err()
            .contains("not UTF-8"));
    }
}
