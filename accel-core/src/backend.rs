//! What runs guest code: one of the host driver's executors, behind a small trait so that the
//! accelerator's logic is tested without one.

use host_driver::{
    CodeModes, DriverError, Executor, ExecutorConfig, ExitRecord, GuestState, MmuCommand,
    NativeExecutor, StubExecutor, XsaveInfo, EXECUTOR_ENV,
};
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

/// Runs guest state natively.
pub trait Backend: Send {
    /// The XSAVE layout transferred (the host's offsets).
    fn xsave_info(&self) -> XsaveInfo;
    /// One native run (see [`Executor::run`]).
    fn run(
        &mut self,
        state: &mut GuestState,
        budget: Duration,
        commands: &[MmuCommand],
    ) -> Result<&ExitRecord, DriverError>;
    /// After `run` failed: whether guest code may have run natively in it (see
    /// [`Executor::failed_run_may_have_executed`]). When not, nothing was lost and emulation
    /// can go on.
    fn failed_run_may_have_executed(&self) -> bool {
        true
    }
    /// Starts over with a new plain-RAM map: a fresh executor with an empty mirror and no
    /// write-protected pages.
    fn respawn(&mut self, ram_map: &[Range<u64>]) -> Result<(), String>;
    /// One line for the log: what runs the guest.
    fn describe(&self) -> String;
    /// Whether native CPUID faults and exits (CPUID faulting), so that the emulator answers
    /// it with the guest CPU model; otherwise native code reads the host's CPUID.
    fn cpuid_faulting(&self) -> bool {
        false
    }
    /// What guest code it runs natively: 64-bit code (long mode, CS.L=1) and
    /// compatibility-mode code (long mode, CS.L=0) only when [`CodeModes::long64`] and
    /// [`CodeModes::compat`] say so; otherwise such states are declined (`long_mode_64`,
    /// `long_mode_compat`).
    fn code_modes(&self) -> CodeModes {
        CodeModes::Legacy32
    }
    /// Makes ready the executor that will run `state` (called before every entry; only the
    /// default backend starts one, the stub executor, this way). `Ok(Some(line))`: it started
    /// one, and `line` says which (logged, counted as `stub_starts`); `Err`: why it could not
    /// (nothing ran).
    fn prepare(&mut self, _state: &GuestState) -> Result<Option<String>, String> {
        Ok(None)
    }
    /// Which executor ran the last successful [`Backend::run`], for the statistics.
    fn ran_on(&self) -> Which;
}

/// One of the host driver's executors, as the statistics name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// Today's executor (`plex86-executor`, the monitor inside it).
    Executor = 0,
    /// The stub executor (`plex86-executor --stub`, the monitor in the library).
    Stub = 1,
}

impl Which {
    /// The statistics' key.
    pub fn name(self) -> &'static str {
        match self {
            Which::Executor => "executor",
            Which::Stub => "stub",
        }
    }
}

/// The host driver's executors that [`SpawnedBackend`] runs, and which each is.
pub trait Spawnable: NativeExecutor {
    /// Which executor this is.
    const WHICH: Which;
}

impl Spawnable for Executor {
    const WHICH: Which = Which::Executor;
}

impl Spawnable for StubExecutor {
    const WHICH: Which = Which::Stub;
}

/// A backend that [`crate::Accelerator::new`] starts: on the library's duplicate of the RAM fd
/// (which it keeps, for the exit statistics' view of guest RAM).
pub trait Start: Backend + Sized {
    /// Starts it as `cfg` says on `ram_fd`.
    fn start(ram_fd: OwnedFd, cfg: &crate::accel::Config) -> Result<Self, String>;
    /// The library's duplicate of the RAM fd.
    fn ram_fd(&self) -> &OwnedFd;
}

/// A host-driver executor process: today's [`Executor`] ([`ExecutorBackend`]) or the
/// [`StubExecutor`] ([`StubBackend`]; everything on it: `PLEX86_ACCEL_BACKEND=stub`).
#[derive(Debug)]
pub struct SpawnedBackend<E: Spawnable> {
    exe: Option<E>,
    ram_fd: OwnedFd,
    launch: Launch,
    xsave: XsaveInfo,
    cpuid_faulting: bool,
    code_modes: CodeModes,
}

/// What each executor of a backend is started with.
#[derive(Debug)]
struct Launch {
    ram_size: u64,
    path: Option<PathBuf>,
    stub_base: u64,
}

/// The sandboxed `plex86-executor` process, the monitor inside it (the default).
pub type ExecutorBackend = SpawnedBackend<Executor>;
/// The stub executor: `plex86-executor --stub` runs guest code, the monitor runs in the
/// library (issue 15; 32-bit and 64-bit code).
pub type StubBackend = SpawnedBackend<StubExecutor>;

impl<E: Spawnable> SpawnedBackend<E> {
    /// Spawns the executor `cfg` describes on the library's own duplicate of the RAM fd. No
    /// executor path: next to this library (then `$PLEX86_EXECUTOR`), as the host driver
    /// looks.
    pub fn spawn(ram_fd: OwnedFd, cfg: &crate::accel::Config) -> Result<Self, String> {
        let launch = Launch {
            ram_size: cfg.ram_size,
            path: cfg.executor_path.clone(),
            stub_base: cfg.stub_base,
        };
        let exe: E = launch.spawn(&ram_fd, &cfg.ram_map)?;
        Ok(SpawnedBackend {
            xsave: exe.xsave_info(),
            cpuid_faulting: exe.cpuid_faulting(),
            code_modes: exe.code_modes(),
            exe: Some(exe),
            ram_fd,
            launch,
        })
    }
}

impl<E: Spawnable> Start for SpawnedBackend<E> {
    fn start(ram_fd: OwnedFd, cfg: &crate::accel::Config) -> Result<Self, String> {
        Self::spawn(ram_fd, cfg)
    }

    fn ram_fd(&self) -> &OwnedFd {
        &self.ram_fd
    }
}

/// Where the executor is looked for when no path is given, for error messages.
pub fn default_executor_location() -> String {
    let next_to = host_driver::executor_next_to_module().map_or_else(
        || "(the library's directory is unknown)".to_string(),
        |p| p.display().to_string(),
    );
    let env = match std::env::var_os(EXECUTOR_ENV) {
        Some(v) => format!("${EXECUTOR_ENV}={}", PathBuf::from(v).display()),
        None => format!("${EXECUTOR_ENV} unset"),
    };
    format!("looked for {next_to} (next to this library), {env}")
}

impl Launch {
    fn spawn<E: NativeExecutor>(
        &self,
        ram_fd: &OwnedFd,
        ram_map: &[Range<u64>],
    ) -> Result<E, String> {
        let path = self.path.as_ref();
        let mut cfg = ExecutorConfig::new(ram_fd.as_fd(), self.ram_size);
        cfg.ram_map = ram_map.to_vec();
        cfg.executor_path = path.cloned();
        cfg.max_fills_per_run = crate::policy::MAX_FILLS_PER_RUN;
        cfg.stub_base = self.stub_base;
        E::spawn(cfg).map_err(|e| match (&e, path) {
            (DriverError::ExecutorNotFound(_), None) => {
                format!("{e} ({})", default_executor_location())
            }
            (_, Some(p)) => format!("{e} (executor {})", p.display()),
            _ => e.to_string(),
        })
    }
}

impl<E: Spawnable> Backend for SpawnedBackend<E> {
    fn xsave_info(&self) -> XsaveInfo {
        self.xsave
    }

    fn run(
        &mut self,
        state: &mut GuestState,
        budget: Duration,
        commands: &[MmuCommand],
    ) -> Result<&ExitRecord, DriverError> {
        match self.exe.as_mut() {
            Some(exe) => exe.run(state, budget, commands),
            None => Err(DriverError::ExecutorDied(
                host_driver::DeathCause::KilledByLibrary,
            )),
        }
    }

    fn failed_run_may_have_executed(&self) -> bool {
        self.exe
            .as_ref()
            .is_some_and(E::failed_run_may_have_executed)
    }

    fn respawn(&mut self, ram_map: &[Range<u64>]) -> Result<(), String> {
        drop(self.exe.take());
        let exe: E = self.launch.spawn(&self.ram_fd, ram_map)?;
        self.xsave = exe.xsave_info();
        // Bochs learned at start whether CPL 3 CPUID is the host's; a new executor on the same
        // host must agree.
        if exe.cpuid_faulting() != self.cpuid_faulting {
            return Err("the new executor's CPUID faulting differs from the first one's".into());
        }
        self.exe = Some(exe);
        Ok(())
    }

    fn describe(&self) -> String {
        let pid = self
            .exe
            .as_ref()
            .and_then(E::pid)
            .map_or("none".to_string(), |p| p.to_string());
        let path = self.launch.path.as_ref().map_or_else(
            || "next to the library".to_string(),
            |p| p.display().to_string(),
        );
        let kind = self.exe.as_ref().map_or("executor", E::kind);
        format!("{kind} {path} (pid {pid})")
    }

    fn cpuid_faulting(&self) -> bool {
        self.cpuid_faulting
    }

    fn code_modes(&self) -> CodeModes {
        self.code_modes
    }

    fn ran_on(&self) -> Which {
        E::WHICH
    }
}
