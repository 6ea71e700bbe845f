//! The accelerator's logic over a scripted fake backend (no executor).

use super::*;
use crate::decode::tests::setup as paging_setup;
use crate::log::Level;
use crate::state::{layouts, sample_state};
use bochs_ffi::raw;
use host_driver::{DeathCause, EscapeKind, Exit};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

const IPS: u64 = 60_000_000;
const RAM: u64 = 16 << 20;

type Mutate = Box<dyn Fn(&mut GuestState) + Send>;

struct Step {
    result: Result<ExitReason, DriverError>,
    native_ns: u64,
    pages: Vec<u64>,
    eip_lost: bool,
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
    pages: Vec<u64>,
    log: Arc<Mutex<Log>>,
    respawn_error: Option<String>,
    xs: XsaveInfo,
    executed: bool,
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
    ) -> Result<Exit<'_>, DriverError> {
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
        self.pages = s.pages;
        Ok(Exit {
            reason,
            native_time: Duration::from_nanos(s.native_ns),
            code_pages_written: &self.pages,
            ecx_clobbered: false,
            eip_lost: s.eip_lost,
            demand_fills: s.fills,
            fill_time: Duration::from_nanos(s.fill_ns),
        })
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
        pages: vec![],
        log: Arc::clone(&log),
        respawn_error: None,
        xs: layouts::AMD,
        executed: true,
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
        } => {
            // Leak the slice to keep the helper simple: tests are short.
            RunOutcome::Ran {
                reason,
                ticks,
                seg_reload,
                code_pages: Vec::leak(code_pages.to_vec()),
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

#[test]
fn ran_maps_reason_ticks_and_state() {
    let mut s = step(ExitReason::Privileged);
    s.native_ns = 1_000_000; // 1 ms → 60,000 ticks
    s.fills = 3;
    s.mutate = Some(Box::new(|g: &mut GuestState| {
        g.gprs[0] = 0xdead_beef;
        g.eip += 7;
        g.eflags |= 1;
        g.xsave.0[160] ^= 0xff; // XMM0 byte 0
    }));
    let mut t = accel(vec![s]);
    let mut cpu = sample_state();
    let before = cpu;
    let out = run(&mut t, &mut cpu);
    assert_eq!(
        out,
        RunOutcome::Ran {
            reason: 10,
            ticks: 60_000,
            seg_reload: 0,
            code_pages: &[]
        }
    );
    assert_eq!(cpu.gpr[0], 0xdead_beef);
    assert_eq!(cpu.eip, before.eip + 7);
    assert_eq!(cpu.eflags, before.eflags | 1);
    assert_eq!(cpu.fpu.zmm[0][0], before.fpu.zmm[0][0] ^ 0xff);
    assert_eq!(cpu.fpu.zmm[0][1..], before.fpu.zmm[0][1..]);
    assert_eq!(cpu.seg[1].selector, before.seg[1].selector);
    // The budget was converted to host time: 600,000 ticks at 60 MIPS = 10 ms.
    let log = t.log.lock().unwrap();
    assert_eq!(log.runs[0].0, Duration::from_millis(10));
    assert_eq!(log.runs[0].2.xcr0, 0xe7);
    drop(log);
    let st = t.accel.stats();
    assert_eq!(
        (
            st.calls,
            st.runs,
            st.exits[10],
            st.ticks_charged,
            st.demand_fills,
            st.native_ns
        ),
        (1, 1, 1, 60_000, 3, 1_000_000)
    );
}

#[test]
fn short_runs_back_off_and_long_or_budget_runs_reset() {
    let short = |fills| {
        let mut s = step(ExitReason::Privileged);
        s.fill_ns = u64::from(fills) * 200_000;
        s.native_ns = 5_000 + s.fill_ns;
        s.fills = fills;
        s
    };
    let mut t = accel(vec![
        short(0),
        short(4),
        step(ExitReason::Privileged), // 1 ms: pays off
        short(0),
        {
            let mut s = step(ExitReason::BudgetExpired);
            s.native_ns = 5_000;
            s
        },
        short(0),
    ]);
    let mut cpu = sample_state();
    let backoff = |retry_after_ticks| RunOutcome::Declined {
        reason: Decline::Backoff.code(),
        retry_after_ticks,
    };
    let start = crate::policy::BACKOFF_START_TICKS;
    let mut outcomes = Vec::new();
    for _ in 0..9 {
        outcomes.push(match run(&mut t, &mut cpu) {
            RunOutcome::Ran { .. } => None,
            other => Some(other),
        });
    }
    assert_eq!(
        outcomes,
        [
            None,                     // short run
            Some(backoff(start)),     // ...so the next call declines
            None,                     // short, its time all demand fills
            Some(backoff(2 * start)), // the distance doubles
            None,                     // a run that paid off: no back-off
            None,                     // short again: starts over
            Some(backoff(start)),
            None, // short but ended by the budget: neutral
            None, // the last short run
        ]
    );
    assert_eq!(
        t.log.lock().unwrap().runs.len(),
        6,
        "declines never reach the backend"
    );
}

#[test]
fn a_process_whose_runs_pay_off_is_entered_right_after_the_kernel() {
    let mut t = accel(vec![
        step(ExitReason::Privileged),
        step(ExitReason::Privileged),
    ]);
    let mut cpu = sample_state();
    let short_burst = |o: RunOutcome<'_>| matches!(o, RunOutcome::Declined { reason: 1, .. });
    assert!(
        short_burst(t.accel.run(&mut cpu, BUDGET, 0)),
        "cold: the first 100 are emulated"
    );
    assert!(
        matches!(run(&mut t, &mut cpu), RunOutcome::Ran { .. }),
        "a 1 ms run: pays off"
    );
    assert!(
        matches!(t.accel.run(&mut cpu, BUDGET, 0), RunOutcome::Ran { .. }),
        "hot: entered at once"
    );
    cpu.cr3 += 0x1000;
    assert!(
        short_burst(t.accel.run(&mut cpu, BUDGET, 0)),
        "another process is cold"
    );
}

#[test]
fn at_least_one_tick_is_charged() {
    let mut s = step(ExitReason::PageFault {
        linear: 0x1000,
        access: host_driver::Access::Read,
        error_code: 4,
    });
    s.native_ns = 0;
    let mut t = accel(vec![s]);
    let mut cpu = sample_state();
    assert_eq!(
        run(&mut t, &mut cpu),
        RunOutcome::Ran {
            reason: 0,
            ticks: 1,
            seg_reload: 0,
            code_pages: &[]
        }
    );
}

/// A single step taken natively reaches Bochs as its own reason, with TF set in the state (the
/// state is after the stepped instruction), and is counted under its name.
#[test]
fn single_step_exit_keeps_tf_and_is_counted() {
    let mut s = step(ExitReason::SingleStep);
    s.mutate = Some(Box::new(|g: &mut GuestState| {
        g.eflags |= 0x100;
        g.eip += 5;
    }));
    let mut t = accel(vec![s]);
    let mut cpu = sample_state();
    let before = cpu;
    let RunOutcome::Ran { reason, .. } = run(&mut t, &mut cpu) else {
        panic!("not RAN");
    };
    let want = raw::plex86_accel_exit_reason_PLEX86_ACCEL_EXIT_SINGLE_STEP;
    assert_eq!(reason, want);
    assert_eq!(cpu.eflags, before.eflags | 0x100);
    assert_eq!(cpu.eip, before.eip + 5);
    let json = t.accel.stats().to_json(1);
    assert!(json.contains("\"single_step\":1"), "{json}");
    assert_eq!(t.accel.stats().exits[want as usize], 1);
}

#[test]
fn notifications_become_deduplicated_commands_sent_once() {
    let mut t = accel(vec![]);
    t.accel.invlpg(0x0804_8123);
    t.accel.invlpg(0x0804_8fff);
    t.accel.flush_tlb(false);
    t.accel.protect_code_page(0x0012_3456);
    t.accel.protect_code_page(0x0012_3000);
    t.accel.protect_code_page(RAM + 0x1000); // outside RAM: ignored
    let mut cpu = sample_state();
    run(&mut t, &mut cpu);
    assert_eq!(
        commands_of(&t, 0),
        vec![
            MmuCommand::FlushNonGlobal,
            MmuCommand::InvalidatePage(0x0804_8000),
            MmuCommand::WriteProtectPhysPage(0x0012_3000)
        ]
    );
    run(&mut t, &mut cpu);
    assert!(commands_of(&t, 1).is_empty(), "sent once");
    // Already protected and not written since: no new command.
    t.accel.protect_code_page(0x0012_3000);
    run(&mut t, &mut cpu);
    assert!(commands_of(&t, 2).is_empty());
    let st = t.accel.stats();
    assert_eq!(
        (
            st.invlpg,
            st.flush_non_global,
            st.protect_requests,
            st.write_protects_sent,
            st.commands_sent
        ),
        (2, 1, 4, 1, 3)
    );
}

#[test]
fn written_code_pages_are_reported_and_unprotected() {
    let mut s = step(ExitReason::Privileged);
    s.pages = vec![0x0012_3000];
    let mut t = accel(vec![s]);
    t.accel.protect_code_page(0x0012_3000);
    let mut cpu = sample_state();
    match run(&mut t, &mut cpu) {
        RunOutcome::Ran { code_pages, .. } => assert_eq!(code_pages, &[0x0012_3000]),
        o => panic!("{o:?}"),
    }
    assert_eq!(t.accel.stats().code_page_invalidations, 1);
    // Bochs decodes the page again and asks for protection again: it is sent again.
    t.accel.protect_code_page(0x0012_3000);
    run(&mut t, &mut cpu);
    assert_eq!(
        commands_of(&t, 1),
        vec![MmuCommand::WriteProtectPhysPage(0x0012_3000)]
    );
}

#[test]
fn paging_changes_add_flushes() {
    let mut t = accel(vec![]);
    let mut cpu = sample_state();
    run(&mut t, &mut cpu);
    assert!(
        commands_of(&t, 0).is_empty(),
        "a fresh mirror needs no flush"
    );
    // CR3 changed and Bochs reported the flush: only what Bochs reported.
    cpu.cr3 += 0x1000;
    t.accel.flush_tlb(false);
    run(&mut t, &mut cpu);
    assert_eq!(commands_of(&t, 1), vec![MmuCommand::FlushNonGlobal]);
    // CR3 changed without a report: a full flush, counted.
    cpu.cr3 += 0x1000;
    run(&mut t, &mut cpu);
    assert_eq!(commands_of(&t, 2), vec![MmuCommand::FlushAll]);
    assert_eq!(t.accel.stats().unreported_cr3_flushes, 1);
    // Paging-mode bits: PAE, PGE, NXE, WP.
    for f in [
        |c: &mut CpuState| c.cr4 ^= 1 << 5,
        |c: &mut CpuState| c.cr4 ^= 1 << 7,
        |c: &mut CpuState| c.efer ^= 1 << 11,
        |c: &mut CpuState| c.cr0 ^= 1 << 16,
    ] {
        f(&mut cpu);
        let n = t.log.lock().unwrap().runs.len();
        run(&mut t, &mut cpu);
        assert_eq!(commands_of(&t, n), vec![MmuCommand::FlushAll]);
    }
    assert_eq!(t.accel.stats().paging_mode_flushes, 4);
    // Other CR4 bits do not matter.
    cpu.cr4 ^= 1 << 9;
    let n = t.log.lock().unwrap().runs.len();
    run(&mut t, &mut cpu);
    assert!(commands_of(&t, n).is_empty());
}

#[test]
fn policy_declines_do_not_reach_the_backend() {
    let mut t = accel(vec![]);
    let mut cpu = sample_state();
    assert_eq!(
        t.accel.run(&mut cpu, BUDGET, 40),
        RunOutcome::Declined {
            reason: 1,
            retry_after_ticks: 60
        }
    );
    assert_eq!(
        t.accel.run(&mut cpu, 100, 1000),
        RunOutcome::Declined {
            reason: 3,
            retry_after_ticks: 100
        }
    );
    cpu.seg[3].selector |= 4;
    assert_eq!(
        t.accel.run(&mut cpu, BUDGET, 1000),
        RunOutcome::Declined {
            reason: 2,
            retry_after_ticks: 3000
        }
    );
    assert!(t.log.lock().unwrap().runs.is_empty());
    let st = t.accel.stats();
    assert_eq!(
        (
            st.declines[1],
            st.declines[2],
            st.declines[3],
            st.calls,
            st.runs
        ),
        (1, 1, 1, 3, 0)
    );
    assert!(t
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|(_, m)| m.contains("LDT selector")));
}

#[test]
fn drivers_unsupported_state_is_a_decline_and_keeps_commands() {
    let mut t = accel(vec![error(DriverError::UnsupportedState(
        "something new".into(),
    ))]);
    t.accel.flush_tlb(true);
    let mut cpu = sample_state();
    let before = cpu;
    assert_eq!(
        run(&mut t, &mut cpu),
        RunOutcome::Declined {
            reason: 2,
            retry_after_ticks: 3000
        }
    );
    assert_eq!(format!("{cpu:?}"), format!("{before:?}"), "state unchanged");
    assert!(!t.accel.is_disabled());
    run(&mut t, &mut cpu);
    assert_eq!(
        commands_of(&t, 1),
        vec![MmuCommand::FlushAll],
        "the flush is still sent"
    );
    assert!(t
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|(_, m)| m.contains("unsupported state: host driver: something new")));
}

#[test]
fn driver_errors_fail_with_lost_progress_and_disable() {
    let mut t = accel(vec![error(DriverError::ExecutorDied(DeathCause::Signal(
        9,
    )))]);
    let mut cpu = sample_state();
    match run(&mut t, &mut cpu) {
        RunOutcome::Failed {
            message,
            lost_native_progress,
        } => {
            assert!(
                message.contains("executor died: killed by signal 9"),
                "{message}"
            );
            assert!(lost_native_progress);
        }
        o => panic!("{o:?}"),
    }
    assert!(t.accel.is_disabled());
    assert_eq!(
        t.accel.run(&mut cpu, BUDGET, 1000),
        RunOutcome::Declined {
            reason: 4,
            retry_after_ticks: crate::policy::NEVER_TICKS
        }
    );
    let st = t.accel.stats();
    assert_eq!((st.failures, st.declines[4]), (1, 1));
    assert!(st.failure.as_deref().unwrap().contains("executor died"));
    assert!(t
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|(l, m)| *l == Level::Error && m.contains("cannot be vouched for")));
}

#[test]
fn a_run_that_never_started_fails_without_lost_progress() {
    // The executor died while waiting for the request: emulation may go on.
    let mut t = accel(vec![Step {
        executed: false,
        ..error(DriverError::ExecutorDied(DeathCause::Signal(9)))
    }]);
    let mut cpu = sample_state();
    let (eip, gprs) = (cpu.eip, cpu.gpr);
    match run(&mut t, &mut cpu) {
        RunOutcome::Failed {
            message,
            lost_native_progress,
        } => {
            assert!(message.contains("executor died"), "{message}");
            assert!(!lost_native_progress);
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(
        (cpu.eip, cpu.gpr),
        (eip, gprs),
        "the CPU state is left as it was"
    );
    assert!(t.accel.is_disabled());
    assert!(t
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|(l, m)| *l == Level::Error && m.contains("nothing ran; emulation can go on")));
}

#[test]
fn corrupted_shared_memory_fails() {
    let mut t = accel(vec![error(DriverError::CorruptedSharedMemory(
        "status 9".into(),
    ))]);
    let mut cpu = sample_state();
    assert!(
        matches!(run(&mut t, &mut cpu), RunOutcome::Failed { lost_native_progress: true, ref message } if message.contains("corrupted shared memory"))
    );
}

#[test]
fn guest_escape_and_lost_eip_fail() {
    let escape = ExitReason::GuestEscape {
        kind: EscapeKind::LongMode,
        address: 0x4000_1000,
        diagnostic: 0,
    };
    let mut t = accel(vec![step(escape)]);
    let mut cpu = sample_state();
    let before = cpu;
    match run(&mut t, &mut cpu) {
        RunOutcome::Failed {
            message,
            lost_native_progress: true,
        } => assert!(message.contains("guest escape"), "{message}"),
        o => panic!("{o:?}"),
    }
    assert_eq!(cpu.gpr, before.gpr, "no state is returned from an escape");
    let mut s = step(ExitReason::SystemCall {
        instruction: SyscallInstruction::Syscall,
    });
    s.eip_lost = true;
    let mut t = accel(vec![s]);
    match run(&mut t, &mut cpu) {
        RunOutcome::Failed {
            message,
            lost_native_progress: true,
        } => {
            assert!(
                message.starts_with("SYSCALL executed natively"),
                "{message}"
            )
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn memory_map_change_restarts_the_executor_and_reprotects() {
    let mut t = accel(vec![]);
    t.accel.protect_code_page(0x5000);
    let mut cpu = sample_state();
    run(&mut t, &mut cpu);
    // Same map: just a flush.
    t.accel.memory_map_changed(&[(0, RAM)]);
    run(&mut t, &mut cpu);
    assert_eq!(commands_of(&t, 1), vec![MmuCommand::FlushAll]);
    assert!(t.log.lock().unwrap().respawns.is_empty());
    // A hole: restart with the new map; the protection is sent to the new executor.
    t.accel
        .memory_map_changed(&[(0, 0xa0000), (0x10_0000, RAM), (0xc0000, 0xc8000)]);
    t.accel.invlpg(0x1000);
    run(&mut t, &mut cpu);
    assert_eq!(
        t.log.lock().unwrap().respawns,
        vec![vec![0..0xa0000, 0xc0000..0xc8000, 0x10_0000..RAM]]
    );
    assert_eq!(
        commands_of(&t, 2),
        vec![MmuCommand::WriteProtectPhysPage(0x5000)]
    );
    let st = t.accel.stats();
    assert_eq!((st.memory_map_changes, st.respawns), (2, 1));
    // A failing restart: FAILED without lost progress.
    t.accel.backend.respawn_error = Some("spawn failed".into());
    t.accel.memory_map_changed(&[(0, RAM)]);
    match run(&mut t, &mut cpu) {
        RunOutcome::Failed {
            message,
            lost_native_progress: false,
        } => assert!(message.contains("spawn failed")),
        o => panic!("{o:?}"),
    }
}

#[test]
fn ram_maps_are_normalised() {
    let (m, p) = normalize_ram_map(
        &[
            (0x1800, 0x5800),
            (0, 0x2000),
            (0x9000, 0x9000),
            (0x8000, 0x7000),
        ],
        0x10000,
    );
    assert_eq!(m, vec![0..0x5000]);
    assert_eq!(p.len(), 1);
    assert!(p[0].contains("reversed"));
    let (m, p) = normalize_ram_map(&[(0, 0x20000)], 0x10000);
    assert_eq!(m, vec![0..0x10000]);
    assert!(p[0].contains("beyond ram_size"));
    let many: Vec<(u64, u64)> = (0..70u64)
        .map(|i| (i * 0x2000, i * 0x2000 + 0x1000))
        .collect();
    let (m, p) = normalize_ram_map(&many, 1 << 30);
    assert_eq!(m.len(), MAX_RAM_RANGES);
    assert!(p[0].contains("only the first"));
    let (m, _) = normalize_ram_map(&[(u64::MAX - 5, u64::MAX)], u64::MAX);
    assert!(m.is_empty());
}

#[test]
fn config_validation() {
    assert_eq!(config().validate(), Ok(()));
    let bad = |f: fn(&mut Config)| {
        let mut c = config();
        f(&mut c);
        c.validate().unwrap_err()
    };
    assert!(bad(|c| c.ips = 0).contains("ips"));
    assert!(bad(|c| c.ram_size = 4097).contains("ram_size"));
    assert!(bad(|c| c.ram_map.clear()).contains("no plain-RAM range"));
}

#[test]
fn exit_instructions_are_named_for_the_statistics() {
    let (mem, gs) = paging_setup();
    mem.put(0x10000, &[0x8e, 0xd8, 0xf4]); // mov ds, eax; hlt
    let mut cpu = sample_state();
    cpu.cr0 = gs.cr0;
    cpu.cr3 = gs.cr3;
    cpu.cr4 &= !(1 << 5);
    cpu.eip = 0x40_0000;
    let mut hlt = step(ExitReason::Privileged);
    hlt.mutate = Some(Box::new(|g: &mut GuestState| g.eip = 0x40_0002));
    let mut t = accel_with(
        vec![
            step(ExitReason::SegmentLoad),
            hlt,
            step(ExitReason::Privileged),
            step(ExitReason::Rdtsc { rdtscp: false }),
        ],
        config(),
        Some(Box::new(mem)),
    );
    run(&mut t, &mut cpu);
    assert_eq!(cpu.eip, 0x40_0000);
    run(&mut t, &mut cpu);
    assert_eq!(cpu.eip, 0x40_0002);
    cpu.eip = 0x80_0000; // unmapped: counted as undecoded
    run(&mut t, &mut cpu);
    run(&mut t, &mut cpu); // RDTSC: not decoded at all
    let st = t.accel.stats();
    let mut named: Vec<(usize, String, u64)> = st
        .instructions
        .iter()
        .map(|(&(r, k), &n)| (r, k.label(), n))
        .collect();
    named.sort();
    assert_eq!(
        named,
        vec![(10, "hlt".to_string(), 1), (11, "mov ds".to_string(), 1)]
    );
    assert_eq!(st.undecoded, 1);
}

#[test]
fn finish_logs_the_table_and_writes_json_once() {
    let dir = std::env::temp_dir().join(format!("plex86-accel-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("stats.json");
    let mut cfg = config();
    cfg.stats_path = Some(path.clone());
    let mut t = accel_with(vec![step(ExitReason::Privileged)], cfg, None);
    let mut cpu = sample_state();
    run(&mut t, &mut cpu);
    t.accel.note_declined(17);
    t.accel.finish();
    t.accel.finish();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(v["runs"], 1);
    assert_eq!(v["exits"]["privileged"], 1);
    assert_eq!(v["declines"]["event_pending"], 1);
    let lines = t.lines.lock().unwrap();
    assert_eq!(
        lines
            .iter()
            .filter(|(_, m)| m.starts_with("statistics:"))
            .count(),
        1
    );
    assert!(lines
        .iter()
        .any(|(_, m)| m.starts_with("started: fake backend")));
    assert!(lines
        .iter()
        .any(|(_, m)| m.starts_with("guest XCR0 in force: 0xe7")));
    drop(lines);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn xcr0_leak_is_logged_once_per_value() {
    let mut t = accel(vec![]);
    let mut cpu = sample_state();
    cpu.xcr0 = 7;
    run(&mut t, &mut cpu);
    run(&mut t, &mut cpu);
    let lines = t.lines.lock().unwrap();
    let x: Vec<&String> = lines
        .iter()
        .map(|(_, m)| m)
        .filter(|m| m.starts_with("guest XCR0"))
        .collect();
    assert_eq!(x.len(), 1);
    assert!(
        x[0].contains("native code can also use opmask zmm_hi256 hi16_zmm"),
        "{}",
        x[0]
    );
}

#[test]
fn cpuid_comparison_is_logged() {
    let t = accel(vec![]);
    let guest = |leaf: u32, sub: u32| {
        let mut r = cpuid::host_cpuid(leaf, sub);
        if leaf == 1 {
            r[2] &= !(1 << 23); // the guest model lacks POPCNT
        }
        r
    };
    let cmp = cpuid::compare(&cpuid::host_cpuid, &guest);
    t.accel
        .log_cpuid(Some((&cmp, cpuid::supported_xcr0(&guest))));
    let lines = t.lines.lock().unwrap();
    assert!(lines.iter().any(|(_, m)| m
        == "CPUID: native code sees popcnt (leaf 1 ECX bit 23), which the guest CPU model lacks"));
    assert!(lines
        .iter()
        .any(|(_, m)| m.starts_with("CPUID: 1 feature(s)")));
    assert!(lines.iter().any(|(_, m)| m.starts_with("XCR0: host 0xe7")));
}
