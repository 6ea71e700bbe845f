//! The accelerator's logic over a scripted fake backend (no executor).

mod config;
mod entry;
mod failures;
mod mmu;
mod reporting;

use super::*;
use crate::decode::tests::setup as paging_setup;
use crate::log::Level;
use bochs_ffi::raw;
use host_driver::{
    DeathCause, DriverError, EscapeKind, ExitReason, ExitRecord, SyscallInstruction,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use test_support::guest_state::{layouts, sample_state};

const IPS: u64 = 60_000_000;
const RAM: u64 = 16 << 20;

type Mutate = Box<dyn Fn(&mut GuestState) + Send>;

struct Step {
    result: Result<ExitReason, DriverError>,
    native_ns: u64,
    pages: Vec<u64>,
    eip_lost: bool,
    /// The backend contained a guest escape (the stub's replacement of its process).
    contained: bool,
    fills: u32,
    fill_ns: u64,
    mutate: Option<Mutate>,
    /// For an error: whether the failed run may have executed guest code.
    executed: bool,
}

fn step(reason: ExitReason) -> Step {
    Step {
        result: Ok(reason),
        native_ns: 1_000_000,
        pages: vec![],
        eip_lost: false,
        contained: false,
        fills: 0,
        fill_ns: 0,
        mutate: None,
        executed: true,
    }
}

fn error(e: DriverError) -> Step {
    Step {
        result: Err(e),
        ..step(ExitReason::BudgetExpired)
    }
}

#[derive(Default)]
struct Log {
    runs: Vec<(Duration, Vec<MmuCommand>, GuestState)>,
    respawns: Vec<Vec<Range<u64>>>,
}

struct Fake {
    script: VecDeque<Step>,
    exit: ExitRecord,
    log: Arc<Mutex<Log>>,
    respawn_error: Option<String>,
    xs: XsaveInfo,
    executed: bool,
    /// What the next `prepare` returns (then `Ok(None)`).
    prepare: Option<Result<Option<String>, String>>,
    /// What it runs natively (today's executor's by default).
    code_modes: host_driver::CodeModes,
}

impl Backend for Fake {
    fn xsave_info(&self) -> XsaveInfo {
        self.xs
    }
    fn run(
        &mut self,
        state: &mut GuestState,
        budget: Duration,
        commands: &[MmuCommand],
    ) -> Result<&ExitRecord, DriverError> {
        self.log
            .lock()
            .unwrap()
            .runs
            .push((budget, commands.to_vec(), *state));
        let s = self
            .script
            .pop_front()
            .unwrap_or_else(|| step(ExitReason::BudgetExpired));
        self.executed = s.executed;
        let reason = s.result?;
        if let Some(m) = &s.mutate {
            m(state);
        }
        self.exit = ExitRecord {
            native_ns: s.native_ns,
            fill_ns: s.fill_ns,
            demand_fills: s.fills,
            eip_lost: s.eip_lost,
            escape_contained: s.contained,
            ..ExitRecord::new(reason)
        };
        for &p in &s.pages {
            self.exit
                .code_pages
                .push(p)
                .expect("a test logs at most 256 pages");
        }
        Ok(&self.exit)
    }
    fn respawn(&mut self, ram_map: &[Range<u64>]) -> Result<(), String> {
        self.log.lock().unwrap().respawns.push(ram_map.to_vec());
        match &self.respawn_error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
    fn failed_run_may_have_executed(&self) -> bool {
        self.executed
    }
    fn describe(&self) -> String {
        "fake backend".into()
    }
    fn ran_on(&self) -> crate::backend::Which {
        crate::backend::Which::Executor
    }
    fn prepare(&mut self, _state: &GuestState) -> Result<Option<String>, String> {
        self.prepare.take().unwrap_or(Ok(None))
    }
    fn code_modes(&self) -> host_driver::CodeModes {
        self.code_modes
    }
}

fn config() -> Config {
    Config {
        ram_size: RAM,
        ram_map: std::iter::once(0..RAM).collect(),
        ips: IPS,
        executor_path: None,
        stats_path: None,
        min_user_insns: 100,
        prealloc_ram: false,
        allow_cpu_mismatch: false,
        cpu_model_host: false,
        stub_base: host_driver::protocol::stub::DEFAULT_BASE,
    }
}

struct T {
    accel: Accelerator<Fake>,
    log: Arc<Mutex<Log>>,
    lines: Arc<Mutex<Vec<(Level, String)>>>,
}

fn accel_with(script: Vec<Step>, cfg: Config, memory: Option<Box<dyn GuestMemory + Send>>) -> T {
    let log = Arc::new(Mutex::new(Log::default()));
    let fake = Fake {
        script: script.into(),
        exit: ExitRecord::new(ExitReason::BudgetExpired),
        log: Arc::clone(&log),
        respawn_error: None,
        xs: layouts::AMD,
        executed: true,
        prepare: None,
        code_modes: host_driver::CodeModes::Legacy32,
    };
    let (logger, lines) = Logger::capture();
    T {
        accel: Accelerator::with_backend(fake, &cfg, logger, memory, Some(0xe7)),
        log,
        lines,
    }
}

fn accel(script: Vec<Step>) -> T {
    accel_with(script, config(), None)
}

const BUDGET: u64 = 600_000; // 10 ms at 60 MIPS

fn run(t: &mut T, cpu: &mut CpuState) -> RunOutcome<'static> {
    match t.accel.run(cpu, BUDGET, 1000) {
        RunOutcome::Ran {
            reason,
            ticks,
            seg_reload,
            code_pages,
            contained,
        } => {
            // Leak the slice to keep the helper simple: tests are short.
            RunOutcome::Ran {
                reason,
                ticks,
                seg_reload,
                code_pages: Vec::leak(code_pages.to_vec()),
                contained,
            }
        }
        RunOutcome::Declined {
            reason,
            retry_after_ticks,
        } => RunOutcome::Declined {
            reason,
            retry_after_ticks,
        },
        RunOutcome::Failed {
            message,
            lost_native_progress,
        } => RunOutcome::Failed {
            message,
            lost_native_progress,
        },
    }
}

fn commands_of(t: &T, i: usize) -> Vec<MmuCommand> {
    t.log.lock().unwrap().runs[i].1.clone()
}
