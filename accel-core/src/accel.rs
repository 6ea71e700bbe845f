//! The accelerator: entry policy, MMU coherence, native runs, exit translation, statistics.
//!
//! * `config` — the validated configuration and the plain-RAM map normalisation.
//! * `run` — one native run: the entry checks, the backend call, the accounting, and the
//!   state handed back to Bochs.
//! * `report` — the log and the statistics, with the "log only the first few" limits.

mod config;
mod report;
mod run;

pub use config::{normalize_ram_map, Config, MAX_RAM_RANGES};

use crate::backend::{Backend, Start};
use crate::cpuid::{self, CpuidFn};
use crate::decode::GuestMemory;
use crate::log::Logger;
use crate::mmu::MmuQueue;
use crate::policy::{Backoff, Decision, Decline, HotSpaces, Policy, MIN_BUDGET_NS};
use crate::prealloc::Prealloc;
use crate::stats::Stats;
use crate::{AccelOps, CpuState, RunOutcome};
use host_driver::{ExitReason, ExitRecord, GuestState, MmuCommand, XsaveInfo};
use report::Reporting;
use run::PagingKey;
use std::collections::HashSet;
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};

/// The accelerator over a [`Backend`] (the executor, or a fake in tests).
pub struct Accelerator<B: Backend> {
    backend: B,
    /// The running executor's XSAVE layout.
    xsave: XsaveInfo,
    /// Guest RAM, read-only, for naming the instruction behind an exit.
    memory: Option<Box<dyn GuestMemory + Send>>,
    /// Set by a failure: every later entry declines with DISABLED.
    disabled: bool,
    /// Native code may have run since the current `run` began (for a panic inside it).
    native_started: bool,
    mirror: Mirror,
    pacing: Pacing,
    scratch: Scratch,
    report: Reporting,
}

/// What the executor's mirror of guest memory depends on, kept coherent with Bochs's
/// notifications.
struct Mirror {
    ram_size: u64,
    /// The plain-RAM map Bochs reported last.
    ram_map: Vec<Range<u64>>,
    /// The map the running executor was started with.
    backend_map: Vec<Range<u64>>,
    /// Commands for the next run.
    mmu: MmuQueue,
    /// Physical pages write-protected in the executor (sent or queued, not yet written).
    protected: HashSet<u64>,
    /// The paging state of the last run (`None`: the mirror is empty).
    last_paging: Option<PagingKey>,
    /// The stub executor's reserved 4 GiB block (never mirrored), for the statistics.
    stub_block: Range<u64>,
}

/// When to enter: the entry policy and what recent runs taught it.
struct Pacing {
    /// Guest ticks per second.
    ips: u64,
    policy: Policy,
    backoff: Backoff,
    hot: HotSpaces,
}

/// Buffers every run reuses, so that a run allocates nothing.
struct Scratch {
    gs: Box<GuestState>,
    commands: Vec<MmuCommand>,
    /// The last run's exit (its code pages are handed to Bochs by reference).
    exit: ExitRecord,
}

impl<B: Backend> std::fmt::Debug for Accelerator<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accelerator")
            .field("backend", &self.backend.describe())
            .field("policy", &self.pacing.policy)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

impl<B: Start> Accelerator<B> {
    /// Starts the accelerator: checks that the guest CPU model `guest_cpuid` emulates what
    /// native user code can use ([`cpuid::admit`]: refused unless `cpu: model=host` or
    /// `allow_cpu_mismatch`), starts the backend `B` on `ram_fd` (the library's duplicate of
    /// Bochs's fd), maps RAM read-only for the exit statistics, and logs the start-up summary
    /// and the CPUID/XCR0 comparison.
    pub fn new(
        cfg: &Config,
        ram_fd: OwnedFd,
        log: Logger,
        guest_cpuid: Option<CpuidFn<'_>>,
    ) -> Result<Self, String> {
        cfg.validate()?;
        // The host against the model (and the most XCR0 the model supports), once: for the
        // refusal here and for the log below.
        let cmp = guest_cpuid.map(|guest| {
            (
                cpuid::compare(&cpuid::host_cpuid, guest),
                cpuid::supported_xcr0(guest),
            )
        });
        let verdict = match &cmp {
            Some((c, guest_xcr0)) => cpuid::admit(
                &cpuid::user_gap(c, crate::sys::host_xcr0(), *guest_xcr0),
                cfg.model_choice(),
            )?,
            None => Vec::new(),
        };
        let backend = B::start(ram_fd, cfg)?;
        let memory: Option<Box<dyn GuestMemory + Send>> = match crate::sys::RamView::map(
            backend.ram_fd().as_fd(),
            cfg.ram_size,
        ) {
            Ok(v) => Some(Box::new(v)),
            Err(e) => {
                log.info(&format!("guest RAM not mapped for exit statistics ({e}): instructions behind exits are not named"));
                None
            }
        };
        let prealloc = if cfg.prealloc_ram {
            match backend
                .ram_fd()
                .try_clone()
                .and_then(|fd| Prealloc::start(fd, cfg.ram_size))
            {
                Ok(p) => Some(p),
                Err(e) => {
                    log.error(&format!("cannot start allocating guest RAM up front: {e}"));
                    None
                }
            }
        } else {
            None
        };
        let mut accel =
            Accelerator::with_backend(backend, cfg, log, memory, crate::sys::host_xcr0());
        accel.report.prealloc = prealloc;
        accel.log_cpuid(cmp.as_ref().map(|(c, x)| (c, *x)));
        for (level, line) in verdict {
            accel.report.log.log(level, &line);
        }
        Ok(accel)
    }
}

impl<B: Backend> Accelerator<B> {
    /// An accelerator over `backend` (already started with `cfg.ram_map`). `memory` is guest
    /// RAM for naming exit instructions; `host_xcr0` the host's XCR0, for the logs.
    pub fn with_backend(
        backend: B,
        cfg: &Config,
        log: Logger,
        memory: Option<Box<dyn GuestMemory + Send>>,
        host_xcr0: Option<u64>,
    ) -> Self {
        let xsave = backend.xsave_info();
        let policy = Policy::new(cfg.ips, cfg.min_user_insns);
        log.info(&format!(
            "started: {}; {} MiB RAM in {} range(s); XSAVE {} bytes ({}); ips {}; entry after {} user instructions and with at least {} ticks of budget ({} µs)",
            backend.describe(),
            cfg.ram_size >> 20,
            cfg.ram_map.len(),
            xsave.size,
            cpuid::xcr0_names(xsave.features),
            cfg.ips,
            cfg.min_user_insns,
            policy.min_budget_ticks,
            MIN_BUDGET_NS / 1000,
        ));
        Accelerator {
            backend,
            xsave,
            memory,
            disabled: false,
            native_started: false,
            mirror: Mirror {
                ram_size: cfg.ram_size,
                ram_map: cfg.ram_map.clone(),
                backend_map: cfg.ram_map.clone(),
                mmu: MmuQueue::new(),
                protected: HashSet::new(),
                last_paging: None,
                stub_block: host_driver::protocol::stub::reserved_block(cfg.stub_base),
            },
            pacing: Pacing {
                ips: cfg.ips,
                policy,
                backoff: Backoff::default(),
                hot: HotSpaces::default(),
            },
            scratch: Scratch {
                gs: Box::new(GuestState::default()),
                commands: Vec::with_capacity(64),
                exit: ExitRecord::new(ExitReason::BudgetExpired),
            },
            report: Reporting::new(log, cfg.stats_path.clone(), host_xcr0),
        }
    }

    /// Logs how CPUID reaches native code, and the CPUID/XCR0 comparison of the host with the
    /// guest model (`cmp`: [`cpuid::compare`] and the model's most XCR0; `None`: no model).
    pub fn log_cpuid(&self, cmp: Option<(&cpuid::Comparison, u64)>) {
        let log = &self.report.log;
        log.info(if self.backend.cpuid_faulting() {
            "CPUID faulting: native CPUID exits and Bochs answers with the guest CPU model, at every privilege level"
        } else {
            "no CPUID faulting on this host: native user code reads the host's CPUID, so Bochs answers CPUID at CPL 3 with the host's values too"
        });
        let Some((cmp, guest_xcr0)) = cmp else {
            log.info("no guest CPUID callback: CPUID comparison skipped");
            return;
        };
        for (level, line) in cpuid::report(cmp, self.report.host_xcr0, guest_xcr0) {
            log.log(level, &line);
        }
    }

    /// The statistics so far.
    pub fn stats(&self) -> &Stats {
        &self.report.stats
    }

    /// The entry policy in force.
    pub fn policy(&self) -> &Policy {
        &self.pacing.policy
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// True once the accelerator has disabled itself.
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    fn decline(&mut self, reason: Decline, retry_after_ticks: u64) -> RunOutcome<'static> {
        self.report.stats.decline(reason.code());
        RunOutcome::Declined {
            reason: reason.code(),
            retry_after_ticks,
        }
    }

    fn fail(&mut self, message: String, lost_native_progress: bool) -> RunOutcome<'static> {
        self.disabled = true;
        self.native_started = false;
        self.report.stats.failures += 1;
        let consequence = if lost_native_progress {
            "the guest state cannot be vouched for"
        } else {
            "nothing ran; emulation can go on"
        };
        self.report
            .log
            .error(&format!("accelerator disabled: {message} ({consequence})"));
        self.report
            .stats
            .failure
            .get_or_insert_with(|| message.clone());
        RunOutcome::Failed {
            message,
            lost_native_progress,
        }
    }

    /// Declines a CPU mode the library cannot run (long mode, see
    /// [`crate::policy::mode_decline`]): logged the first time for each reason, retried after
    /// the unsupported-state distance.
    fn decline_mode(&mut self, reason: Decline, mode: u32) -> RunOutcome<'static> {
        if self.report.stats.declines[reason.code() as usize] == 0 {
            let why = reason.explanation().unwrap_or("CPU mode not run natively");
            self.report
                .log
                .info(&format!("{why} (mode {mode}; counted from now on)"));
        }
        self.decline(reason, self.pacing.policy.unsupported_retry_ticks)
    }

    /// Declines a state the host driver cannot run (`why` is its rule), logging the first few.
    fn unsupported(&mut self, why: &str) -> RunOutcome<'static> {
        self.native_started = false;
        self.report.note_unsupported(&format!("host driver: {why}"));
        self.decline(
            Decline::Unsupported,
            self.pacing.policy.unsupported_retry_ticks,
        )
    }
}

impl<B: Backend> AccelOps for Accelerator<B> {
    fn run(&mut self, cpu: &mut CpuState, budget_ticks: u64, user_insns: u64) -> RunOutcome<'_> {
        self.report.stats.calls += 1;
        if self.report.prealloc.is_some() {
            self.report.report_prealloc(false);
        }
        if self.disabled {
            return self.decline(Decline::Disabled, crate::policy::NEVER_TICKS);
        }
        if let Some(reason) = crate::policy::mode_decline(cpu.mode, self.backend.code_modes()) {
            return self.decline_mode(reason, cpu.mode);
        }
        if let Some(ticks) = self.pacing.backoff.take() {
            return self.decline(Decline::Backoff, ticks);
        }
        let hot = self.pacing.hot.contains(cpu.cr3);
        match self.pacing.policy.decide(budget_ticks, user_insns, hot) {
            Decision::Enter => self.run_native(cpu, budget_ticks),
            Decision::Decline {
                reason,
                retry_after_ticks,
            } => self.decline(reason, retry_after_ticks),
        }
    }

    fn note_declined(&mut self, reason: u32) {
        self.report.stats.decline(reason);
    }

    fn flush_tlb(&mut self, include_global: bool) {
        if include_global {
            self.report.stats.flush_all += 1;
        } else {
            self.report.stats.flush_non_global += 1;
        }
        self.mirror.mmu.flush(include_global);
    }

    fn invlpg(&mut self, linear: u64) {
        self.report.stats.invlpg += 1;
        self.mirror.mmu.invalidate(linear);
    }

    fn protect_code_page(&mut self, physical: u64) {
        self.report.stats.protect_requests += 1;
        let page = physical & !0xfff;
        if page < self.mirror.ram_size && self.mirror.protected.insert(page) {
            self.mirror.mmu.protect(page);
        }
    }

    fn memory_map_changed(&mut self, ranges: &[(u64, u64)]) {
        self.report.stats.memory_map_changes += 1;
        let (map, problems) = normalize_ram_map(ranges, self.mirror.ram_size);
        for p in problems {
            self.report.log.error(&format!("memory map: {p}"));
        }
        self.mirror.ram_map = map;
        self.mirror.mmu.flush(true);
    }

    fn finish(&mut self) {
        self.report.finish();
    }

    fn native_progress_uncertain(&self) -> bool {
        self.native_started
    }

    fn disable(&mut self, why: &str) {
        self.disabled = true;
        self.native_started = false;
        self.report.stats.failures += 1;
        self.report
            .stats
            .failure
            .get_or_insert_with(|| why.to_string());
    }

    fn log(&self) -> &Logger {
        &self.report.log
    }

    fn native_cpuid_is_hosts(&self) -> bool {
        !self.backend.cpuid_faulting()
    }
}

impl<B: Backend> Drop for Accelerator<B> {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests;
