//! The default backend (`PLEX86_ACCEL_BACKEND` unset or `auto`): 32-bit code outside long
//! mode on today's executor; long-mode code, 64-bit and compatibility-mode (a 32-bit process
//! of a 64-bit guest, which today's executor cannot run: its monitor walks 2-level and PAE
//! tables only, and its own code lives above 4 GiB), on the stub executor, which starts at
//! the first long-mode entry (a 32-bit guest never pays for a second process).
//!
//! Coherence. The accelerator keeps one queue of MMU commands and hands it to whichever
//! executor runs next; the other one misses those commands. Two rules keep its mirror right:
//!
//! * **Flush on switch**: an executor that may hold mirror entries and did not run the last
//!   run gets a `FlushAll` before its next run. Everything it missed (INVLPGs, flushes, CR3
//!   changes) only removes entries, so dropping all of them covers it. Runs switch rarely (an
//!   amd64 guest's user code, 64-bit or compatibility-mode, all runs on the stub; a 686
//!   guest's all on today's executor), so the refills cost nothing measurable.
//! * **Write protections are replayed**: a flush keeps them, so the protections sent to one
//!   executor are kept for the other (`pending`) and sent with its next run, from the first
//!   one on (a freshly started stub gets every protection sent so far). A page that native
//!   code wrote (an exit's code pages: Bochs drops its decoded code) no longer needs it. An
//!   executor may still hold a protection Bochs no longer needs; a write there reports the
//!   page once more, which Bochs takes as one more (harmless) invalidation.
//!
//! A run refused before anything was sent (`UnsupportedState`, `StubRegionMapped`) changes
//! nothing here: the accelerator keeps its queue and sends it again.

use crate::accel::Config;
use crate::backend::{Backend, ExecutorBackend, Start, StubBackend, Which};
use host_driver::{CodeModes, DriverError, ExitRecord, GuestState, MmuCommand, XsaveInfo};
use std::collections::HashSet;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::time::Duration;

/// The default backend: today's executor, and the stub executor for long-mode code.
pub type AutoBackend = ByMode<ExecutorBackend, StubBackend>;

/// Starts the long-mode executor on a plain-RAM map, next to the 32-bit one `A` (whose RAM fd it
/// duplicates).
pub type StartStub<A, S> = Box<dyn FnMut(&A, &[Range<u64>]) -> Result<S, String> + Send>;

/// 32-bit code outside long mode on `A`, long-mode code on `S` (started by `start_stub` at
/// the first long-mode entry).
pub struct ByMode<A: Backend, S: Backend> {
    exec: A,
    stub: Option<S>,
    start_stub: StartStub<A, S>,
    /// The plain-RAM map the executors run with (the stub starts on it).
    ram_map: Vec<Range<u64>>,
    /// The executor of the last run that took its commands.
    last: Option<Which>,
    /// Per executor: it may hold mirror entries (it ran since it started).
    dirty: [bool; 2],
    /// Per executor: write protections sent to the other one and not to it yet.
    pending: [HashSet<u64>; 2],
    /// The executor the last `run` went to.
    attempted: Which,
    /// The commands of a run that needs more than the accelerator's.
    commands: Vec<MmuCommand>,
}

impl<A: Backend, S: Backend> std::fmt::Debug for ByMode<A, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByMode")
            .field("backend", &self.describe())
            .finish_non_exhaustive()
    }
}

impl<A: Backend, S: Backend> ByMode<A, S> {
    /// Over `exec` (already started on `ram_map`); the stub is started later by `start_stub`.
    pub fn new(exec: A, ram_map: Vec<Range<u64>>, start_stub: StartStub<A, S>) -> Self {
        ByMode {
            exec,
            stub: None,
            start_stub,
            ram_map,
            last: None,
            dirty: [false; 2],
            pending: [HashSet::new(), HashSet::new()],
            attempted: Which::Executor,
            commands: Vec::new(),
        }
    }

    /// The 32-bit executor.
    pub fn executor(&self) -> &A {
        &self.exec
    }

    /// The long-mode executor, once started.
    pub fn stub(&self) -> Option<&S> {
        self.stub.as_ref()
    }

    fn which(state: &GuestState) -> Which {
        if state.long_mode() {
            Which::Stub
        } else {
            Which::Executor
        }
    }

    /// `commands`, or `commands` after the flush and protections `w` missed.
    fn commands_for<'a>(
        out: &'a mut Vec<MmuCommand>,
        flush: bool,
        pending: &HashSet<u64>,
        commands: &'a [MmuCommand],
    ) -> &'a [MmuCommand] {
        if !flush && pending.is_empty() {
            return commands;
        }
        out.clear();
        if flush {
            out.push(MmuCommand::FlushAll);
        }
        out.extend_from_slice(commands);
        out.extend(pending.iter().map(|&p| MmuCommand::WriteProtectPhysPage(p)));
        out
    }
}

/// Whether `new` runs with the XSAVE layout and CPUID faulting of `first`: Bochs learned both
/// at start, from the first executor.
fn agrees(new: &impl Backend, first: &impl Backend) -> Result<(), String> {
    let (n, f) = (new.xsave_info(), first.xsave_info());
    if n != f {
        return Err(format!(
            "its XSAVE layout ({} bytes, components {:#x}) differs from the {}'s ({} bytes, {:#x})",
            n.size,
            n.features,
            first.ran_on().name(),
            f.size,
            f.features
        ));
    }
    if new.cpuid_faulting() != first.cpuid_faulting() {
        return Err(format!(
            "its CPUID faulting ({}) differs from the {}'s ({})",
            new.cpuid_faulting(),
            first.ran_on().name(),
            first.cpuid_faulting()
        ));
    }
    Ok(())
}

impl<A: Backend, S: Backend> Backend for ByMode<A, S> {
    fn xsave_info(&self) -> XsaveInfo {
        self.exec.xsave_info()
    }

    fn prepare(&mut self, state: &GuestState) -> Result<Option<String>, String> {
        if Self::which(state) == Which::Executor || self.stub.is_some() {
            return Ok(None);
        }
        let cannot = |e| format!("the stub executor for long-mode code cannot start: {e}");
        let stub = (self.start_stub)(&self.exec, &self.ram_map).map_err(cannot)?;
        agrees(&stub, &self.exec).map_err(cannot)?;
        let started = format!("long-mode code: started the {}", stub.describe());
        self.stub = Some(stub);
        self.dirty[Which::Stub as usize] = false;
        Ok(Some(started))
    }

    fn run(
        &mut self,
        state: &mut GuestState,
        budget: Duration,
        commands: &[MmuCommand],
    ) -> Result<&ExitRecord, DriverError> {
        let w = Self::which(state);
        let (i, other) = (w as usize, 1 - w as usize);
        self.attempted = w;
        let flush = self.dirty[i] && self.last != Some(w);
        let sent = Self::commands_for(&mut self.commands, flush, &self.pending[i], commands);
        let result = match w {
            Which::Executor => self.exec.run(state, budget, sent),
            Which::Stub => match self.stub.as_mut() {
                Some(s) => s.run(state, budget, sent),
                None => {
                    return Err(DriverError::UnsupportedState(
                        "long-mode code, and the stub executor has not been started".into(),
                    ))
                }
            },
        };
        let exit = result?;
        self.last = Some(w);
        self.dirty[i] = true;
        self.pending[i].clear();
        for c in commands {
            if let MmuCommand::WriteProtectPhysPage(p) = *c {
                self.pending[other].insert(p);
            }
        }
        for p in exit.code_pages.as_slice() {
            self.pending[other].remove(p);
        }
        Ok(exit)
    }

    fn failed_run_may_have_executed(&self) -> bool {
        match (self.attempted, &self.stub) {
            (Which::Stub, Some(s)) => s.failed_run_may_have_executed(),
            (Which::Stub, None) => false,
            (Which::Executor, _) => self.exec.failed_run_may_have_executed(),
        }
    }

    fn respawn(&mut self, ram_map: &[Range<u64>]) -> Result<(), String> {
        // Both start over empty, and the accelerator queues every protection again.
        self.ram_map = ram_map.to_vec();
        self.last = None;
        self.dirty = [false; 2];
        self.pending.iter_mut().for_each(HashSet::clear);
        self.exec.respawn(ram_map)?;
        match self.stub.as_mut() {
            Some(s) => s
                .respawn(ram_map)
                .map_err(|e| format!("the stub executor: {e}")),
            None => Ok(()),
        }
    }

    fn describe(&self) -> String {
        let stub = match &self.stub {
            Some(s) => s.describe(),
            None => "the stub executor at the first long-mode entry".to_string(),
        };
        format!(
            "{} for 32-bit code; for long-mode code (64-bit and compatibility mode) {stub}",
            self.exec.describe()
        )
    }

    fn cpuid_faulting(&self) -> bool {
        self.exec.cpuid_faulting()
    }

    fn code_modes(&self) -> CodeModes {
        CodeModes::Legacy32Long64AndCompat
    }

    fn ran_on(&self) -> Which {
        self.attempted
    }
}

impl Start for AutoBackend {
    /// Starts today's executor now; keeps `cfg` for the stub, which gets a duplicate of the
    /// executor's RAM fd when it starts (none is held until then).
    fn start(ram_fd: OwnedFd, cfg: &Config) -> Result<Self, String> {
        let exec = ExecutorBackend::spawn(ram_fd, cfg)?;
        let stub_cfg = cfg.clone();
        let start: StartStub<ExecutorBackend, StubBackend> = Box::new(move |exec, map| {
            let fd = exec
                .ram_fd()
                .try_clone()
                .map_err(|e| format!("duplicating the RAM fd: {e}"))?;
            let c = Config {
                ram_map: map.to_vec(),
                ..stub_cfg.clone()
            };
            StubBackend::spawn(fd, &c)
        });
        Ok(ByMode::new(exec, cfg.ram_map.clone(), start))
    }

    fn ram_fd(&self) -> &OwnedFd {
        self.exec.ram_fd()
    }
}

#[cfg(test)]
mod tests;
