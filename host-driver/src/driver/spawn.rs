//! Starting the executor: its configuration, where its binary is, the control region's
//! library-written header, and the handshake until its sandbox is in place.

use super::transport::DEFAULT_SPIN;
use super::Executor;
use crate::child::ChildProcess;
use crate::error::{DeathCause, DriverError};
use crate::protocol::xsave::{header, xfeature};
use crate::protocol::{
    self, view::Pod, ExecArea, ExitReason, ExitRecord, LibArea, RamRange, Status, MAX_RAM_RANGES,
    REGION_SIZE,
};
use crate::sys::{self, SharedMapping};
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Name of the executor binary.
pub const EXECUTOR_NAME: &str = "plex86-executor";
/// Environment variable naming the executor binary when it is not next to this library.
pub const EXECUTOR_ENV: &str = "PLEX86_EXECUTOR";

/// The executor's default place: [`EXECUTOR_NAME`] in the directory of the shared object or
/// executable that contains this library (`None` when the loader cannot say which that is).
pub fn executor_next_to_module() -> Option<PathBuf> {
    let module = sys::current_module_path()?;
    Some(module.parent()?.join(EXECUTOR_NAME))
}

/// Which clock the executor's budget timer uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BudgetClock {
    /// `CLOCK_MONOTONIC` (a high-resolution timer: precise slices; counts time the executor
    /// was preempted too). The default.
    #[default]
    Monotonic,
    /// The executor thread's CPU-time clock (charges only CPU time, but the kernel checks
    /// CPU-time timers at the scheduler tick, so expiry can be late by up to a tick).
    ThreadCpuTime,
}

/// Configuration of [`Executor::spawn`].
#[derive(Debug)]
pub struct ExecutorConfig<'a> {
    /// The executor binary. Default: `plex86-executor` next to the shared object or executable
    /// that contains this library, else the path in the `PLEX86_EXECUTOR` environment variable.
    pub executor_path: Option<PathBuf>,
    /// The guest-RAM memfd (guest-physical address = file offset).
    pub ram_fd: BorrowedFd<'a>,
    /// Size of guest RAM in bytes (a multiple of 4 KiB, at most the file's size).
    pub ram_size: u64,
    /// Guest-physical ranges that are plain RAM (page aligned). Only pages inside them are
    /// mirrored; accesses elsewhere exit as [`crate::ExitReason::NeedsEmulation`].
    pub ram_map: Vec<Range<u64>>,
    /// Clock of the budget timer.
    pub budget_clock: BudgetClock,
    /// Spin iterations on the sequence word before sleeping on the futex (both sides).
    pub spin: u32,
    /// Demand fills after which a run ends with [`crate::ExitReason::FillLimit`] (0 = no
    /// limit). A run that only mirrors pages (a fill costs far more than the emulator needs for
    /// an access) can then be handed back to the emulator.
    pub max_fills_per_run: u32,
    /// How long to wait for the executor's setup.
    pub startup_timeout: Duration,
    /// Where the stub executor puts its region S (`plex86_protocol::stub::check_base`); today's
    /// executor ignores it.
    pub stub_base: u64,
}

impl<'a> ExecutorConfig<'a> {
    /// A configuration where all of `[0, ram_size)` is plain RAM.
    pub fn new(ram_fd: BorrowedFd<'a>, ram_size: u64) -> Self {
        ExecutorConfig {
            executor_path: None,
            ram_fd,
            ram_size,
            ram_map: std::iter::once(0..ram_size).collect(),
            budget_clock: BudgetClock::default(),
            spin: DEFAULT_SPIN,
            max_fills_per_run: 0,
            startup_timeout: Duration::from_secs(20),
            stub_base: crate::protocol::stub::DEFAULT_BASE,
        }
    }
}

/// The XSAVE layout the executor transfers: the host CPU's standard (non-compacted) format.
/// Component offsets are the host's (CPUID leaf 0xD) and differ between CPUs: e.g. AMD Zen 4
/// has no MPX area, so the opmask state is at 832 there and at 1088 on Intel. Whoever builds
/// the image (bochs-ffi, from Bochs's registers) must use these offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XsaveInfo {
    /// Bytes of [`crate::XsaveImage`] that are transferred (standard format).
    pub size: u32,
    /// Components the host supports for guests (the most a guest XCR0 may enable).
    pub features: u64,
    /// (offset, size) of components 2..=7 (index = XCR0 bit); (0, 0) when absent. Components
    /// 0 and 1 live in the legacy FXSAVE area (bytes 0..512).
    pub components: [(u32, u32); 8],
}

impl XsaveInfo {
    pub(crate) fn from_host(size: u32, features: u64) -> Self {
        let mut components = [(0, 0); 8];
        for (bit, c) in components.iter_mut().enumerate().skip(2) {
            if features & (1 << bit) != 0 {
                let r = std::arch::x86_64::__cpuid_count(0xd, bit as u32);
                *c = (r.ebx, r.eax);
            }
        }
        XsaveInfo {
            size,
            features,
            components,
        }
    }
}

pub(crate) fn locate_executor(cfg: &ExecutorConfig<'_>) -> Result<PathBuf, DriverError> {
    if let Some(p) = &cfg.executor_path {
        use std::os::unix::fs::PermissionsExt;
        return match std::fs::metadata(p) {
            Err(e) => Err(DriverError::ExecutorNotFound(format!(
                "{}: {e}",
                p.display()
            ))),
            Ok(m) if !m.is_file() => Err(DriverError::CannotStart(format!(
                "{} is not a regular file",
                p.display()
            ))),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => Err(DriverError::CannotStart(format!(
                "{} is not executable",
                p.display()
            ))),
            Ok(_) => Ok(p.clone()),
        };
    }
    if let Some(p) = executor_next_to_module() {
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(p) = std::env::var_os(EXECUTOR_ENV).map(PathBuf::from) {
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(DriverError::ExecutorNotFound(format!(
        "no {EXECUTOR_NAME} next to this library and ${EXECUTOR_ENV} unset or invalid"
    )))
}

pub(crate) fn death_cause(st: std::process::ExitStatus) -> DeathCause {
    if let Some(sig) = st.signal() {
        if sig == libc::SIGSYS {
            DeathCause::SeccompViolation
        } else {
            DeathCause::Signal(sig)
        }
    } else {
        DeathCause::ExitCode(st.code().unwrap_or(-1))
    }
}

impl Executor {
    /// Spawns the executor and waits until its sandbox is in place.
    pub fn spawn(config: ExecutorConfig<'_>) -> Result<Executor, DriverError> {
        check_config(&config)?;
        let path = locate_executor(&config)?;
        let control_fd = sys::memfd(c"plex86-control", REGION_SIZE as u64)?;
        let region = SharedMapping::new(control_fd.as_fd(), REGION_SIZE, 0)?;
        region.lib_side().init(&lib_header(&config));
        let child = sys::spawn_executor(&path, config.ram_fd, control_fd.as_fd(), &[])
            .map_err(|e| DriverError::CannotStart(format!("{}: {e}", path.display())))?;
        let mut exe = Executor {
            child: ChildProcess::new(child),
            region,
            _control_fd: control_fd,
            seq: 1,
            xsave: XsaveInfo {
                size: 0,
                features: 0,
                components: [(0, 0); 8],
            },
            cpuid_faulting: false,
            ram_size: config.ram_size,
            spin: config.spin,
            last_exit: ExitRecord::new(ExitReason::BudgetExpired),
            run_may_have_executed: false,
        };
        exe.await_ready(&path, config.startup_timeout)?;
        let area = exe.region.lib_side().snapshot();
        match accept_ready(&area) {
            Ok((xsave, cpuid_faulting)) => {
                exe.xsave = xsave;
                exe.cpuid_faulting = cpuid_faulting;
                Ok(exe)
            }
            Err(e) => {
                exe.kill();
                Err(e)
            }
        }
    }

    /// Waits for the executor's first response: its setup finished (or failed with a message).
    fn await_ready(&mut self, path: &Path, timeout: Duration) -> Result<(), DriverError> {
        match self.wait_response(1, Some(timeout)) {
            Ok(()) => Ok(()),
            // Not our executor (another program, a script, a build of another protocol
            // version that refused the control region...): say which binary it was.
            Err(DriverError::ExecutorDied(cause)) => Err(DriverError::CannotStart(format!(
                "{} ended before it was ready ({cause}): is it a {EXECUTOR_NAME} of protocol version {}?",
                path.display(),
                protocol::VERSION
            ))),
            Err(e) => Err(e),
        }
    }
}

/// Refuses a configuration the executor could not mirror guest RAM with.
pub(crate) fn check_config(config: &ExecutorConfig<'_>) -> Result<(), DriverError> {
    let invalid = |m: String| Err(DriverError::InvalidConfig(m));
    if config.ram_size == 0 || config.ram_size % 4096 != 0 {
        return invalid(format!(
            "ram_size {:#x} is not a positive multiple of 4 KiB",
            config.ram_size
        ));
    }
    if sys::file_size(config.ram_fd)? < config.ram_size {
        return invalid("ram_fd is smaller than ram_size".into());
    }
    if config.ram_map.len() > MAX_RAM_RANGES {
        return invalid(format!("more than {MAX_RAM_RANGES} RAM ranges"));
    }
    for r in &config.ram_map {
        if r.start % 4096 != 0 || r.end % 4096 != 0 || r.start > r.end || r.end > config.ram_size {
            return invalid(format!("bad RAM range {:#x}..{:#x}", r.start, r.end));
        }
    }
    crate::protocol::stub::check_base(config.stub_base)
        .or_else(|why| invalid(format!("stub_base: {why}")))
}

/// The library-written header of the control region: what the executor reads at start.
fn lib_header(config: &ExecutorConfig<'_>) -> LibArea {
    let mut lib: LibArea = Pod::zeroed();
    lib.magic = protocol::MAGIC;
    lib.version = protocol::VERSION;
    lib.library_pid = std::process::id();
    lib.ram_size = config.ram_size;
    lib.n_ram_ranges = config.ram_map.len() as u32;
    for (d, r) in lib.ram_ranges.iter_mut().zip(&config.ram_map) {
        *d = RamRange {
            start: r.start,
            end: r.end,
        };
    }
    lib.budget_clock = match config.budget_clock {
        BudgetClock::Monotonic => 0,
        BudgetClock::ThreadCpuTime => 1,
    };
    lib.spin = config.spin;
    lib.max_fills = config.max_fills_per_run;
    lib
}

/// Checks the executor's report after setup: its XSAVE layout and whether CPUID faults. A
/// setup failure is [`DriverError::SetupFailed`] with the executor's message; anything an
/// honest executor cannot report is [`DriverError::CorruptedSharedMemory`] (the caller kills
/// the executor either way).
fn accept_ready(area: &ExecArea) -> Result<(XsaveInfo, bool), DriverError> {
    let corrupted = |m: String| Err(DriverError::CorruptedSharedMemory(m));
    match Status::try_from(area.status) {
        Ok(Status::Ready) => {}
        Ok(Status::Failed) => {
            let n = (area.msg_len as usize).min(area.msg.len());
            return Err(DriverError::SetupFailed {
                code: area.fail_code as i32,
                message: String::from_utf8_lossy(&area.msg[..n]).into_owned(),
            });
        }
        _ => return corrupted(format!("status {} after setup", area.status)),
    }
    let size = area.xsave_size;
    let legacy = xfeature::X87 | xfeature::SSE;
    let smallest = header::END as u32;
    if !(smallest..=protocol::XSAVE_AREA_SIZE as u32).contains(&size)
        || area.xsave_features & legacy != legacy
    {
        return corrupted(format!(
            "xsave size {size} / features {:#x}",
            area.xsave_features
        ));
    }
    let xsave = XsaveInfo::from_host(size, area.xsave_features);
    let cpuid_faulting = match area.cpuid_faulting {
        0 => false,
        1 => true,
        v => return corrupted(format!("cpuid_faulting {v}")),
    };
    if xsave
        .components
        .iter()
        .any(|&(o, s)| o as usize + s as usize > size as usize)
    {
        return corrupted(format!("xsave size {size} smaller than the host layout"));
    }
    Ok((xsave, cpuid_faulting))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_executor_place_is_next_to_the_containing_object() {
        // In a unit test the crate is linked into the test binary itself.
        let exe = std::env::current_exe().unwrap().canonicalize().unwrap();
        let want = exe.parent().unwrap().join(EXECUTOR_NAME);
        let got = executor_next_to_module().expect("dladdr knows the test binary");
        assert_eq!(
            got.parent().unwrap().canonicalize().unwrap(),
            want.parent().unwrap()
        );
        assert_eq!(got.file_name(), want.file_name());
    }

    #[test]
    fn death_causes() {
        let st = |raw| std::process::ExitStatus::from_raw(raw);
        assert_eq!(death_cause(st(libc::SIGSYS)), DeathCause::SeccompViolation);
        assert_eq!(death_cause(st(libc::SIGKILL)), DeathCause::Signal(9));
        assert_eq!(death_cause(st(15 << 8)), DeathCause::ExitCode(15));
        assert!(format!(
            "{}",
            DriverError::ExecutorDied(DeathCause::SeccompViolation)
        )
        .contains("seccomp violation"));
    }

    #[test]
    fn bad_configs_are_refused() {
        let ram = crate::GuestRam::new(1 << 20).unwrap();
        let refused = |f: &dyn Fn(&mut ExecutorConfig<'_>), want: &str| {
            let mut cfg = ExecutorConfig::new(ram.fd(), 1 << 20);
            f(&mut cfg);
            match check_config(&cfg) {
                Err(DriverError::InvalidConfig(m)) => assert!(m.contains(want), "{m}"),
                other => panic!("{want}: got {other:?}"),
            }
        };
        assert!(check_config(&ExecutorConfig::new(ram.fd(), 1 << 20)).is_ok());
        refused(&|c| c.ram_size = 0, "positive multiple of 4 KiB");
        refused(&|c| c.ram_size = 4097, "positive multiple of 4 KiB");
        refused(&|c| c.ram_size = 2 << 20, "smaller than ram_size");
        refused(
            &|c| c.ram_map = vec![0..4096; MAX_RAM_RANGES + 1],
            "RAM ranges",
        );
        for (start, end) in [(4096, 0), (0, 2 << 20), (0, 100)] {
            refused(&|c| c.ram_map = vec![Range { start, end }], "bad RAM range");
        }
    }

    #[test]
    fn ready_reports_are_checked() {
        let mut area: ExecArea = Pod::zeroed();
        area.status = Status::Ready as u32;
        area.xsave_size = 576;
        area.xsave_features = 3;
        let (xs, faulting) = accept_ready(&area).unwrap();
        assert_eq!((xs.size, xs.features, faulting), (576, 3, false));
        let corrupted = |f: &dyn Fn(&mut ExecArea), want: &str| {
            let mut a = area;
            f(&mut a);
            match accept_ready(&a) {
                Err(DriverError::CorruptedSharedMemory(m)) => assert!(m.contains(want), "{m}"),
                other => panic!("{want}: got {other:?}"),
            }
        };
        corrupted(&|a| a.status = Status::Exited as u32, "after setup");
        corrupted(&|a| a.xsave_size = 512, "xsave size");
        corrupted(&|a| a.xsave_features = 1, "features");
        corrupted(&|a| a.cpuid_faulting = 2, "cpuid_faulting 2");
        let mut failed = area;
        failed.status = Status::Failed as u32;
        failed.fail_code = 12;
        failed.msg[..4].copy_from_slice(b"oops");
        failed.msg_len = 4;
        match accept_ready(&failed) {
            Err(DriverError::SetupFailed { code: 12, message }) => assert_eq!(message, "oops"),
            other => panic!("got {other:?}"),
        }
    }
}
