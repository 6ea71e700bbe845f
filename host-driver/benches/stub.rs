//! Issue 14's gate: the stub executor (guest code in a process holding only S and mirrors, the
//! monitor in the library, fills through the mapper thread) beside today's executor, in one
//! run, on the same guest: exit + re-entry, and one demand fill. Each measured with the other
//! vCPU idle and with it busy (a spinning thread pinned to CPU 1), rounds interleaved between
//! the executors so that drift of the VM hits all alike.
//!
//! Variants of the stub: who polls a shared word before sleeping on it (both sides, the library
//! only, or nobody: every hand-over a futex wake); and `fill-ahead 16`: a fill
//! also mirrors up to 16 following pages the guest has used already (Accessed set), in one
//! mapper op, so that fewer touches fault at all (the toucher's pages all have A set, as a
//! process's working set has after a context switch flushed the mirror).
//!
//! `cargo bench -p host-driver --bench stub` runs the criterion benchmarks, then prints the
//! summary table; `-- --summary-only` prints only the table.

use criterion::{criterion_group, Criterion};
use host_driver::stub::{Placement, Polling, StubExecutor};
use host_driver::{ExitReason, GuestState, MmuCommand};
use std::time::{Duration, Instant};
use test_support::calibration::{median, BusyCpu};
use test_support::vm::toucher::{vm_with_toucher, FILL_PAGES, TOUCHER};
use test_support::vm::*;

/// Rounds of the summary: the wake-up of an idle vCPU makes single samples bimodal (a few µs
/// or tens of µs), so the median needs many.
const ROUNDS: usize = 41;

/// Pages a fill may mirror ahead in the batching variant.
const FILL_AHEAD: u32 = 16;

/// One executor under test, over the toucher guest.
enum Subject {
    Today(Box<Vm>),
    Stub {
        /// Owns the guest RAM the stub runs on.
        _vm: Box<Vm>,
        stub: Box<StubExecutor>,
        state: Box<GuestState>,
    },
}

impl Subject {
    fn today() -> Subject {
        Subject::Today(Box::new(vm_with_toucher(FILL_PAGES)))
    }
    fn stub(polling: Polling, fill_ahead: u32) -> Subject {
        Self::stub_placed(polling, fill_ahead, Placement::Free)
    }
    fn stub_placed(polling: Polling, fill_ahead: u32, placement: Placement) -> Subject {
        let vm = vm_with_toucher(FILL_PAGES);
        let mut cfg = host_driver::ExecutorConfig::new(vm.ram.fd(), vm.ram.size());
        cfg.executor_path = Some(executor_path());
        let mut stub = StubExecutor::spawn(cfg).expect("stub starts");
        stub.set_polling(polling);
        stub.set_fill_ahead(fill_ahead);
        stub.set_placement(placement);
        let state = Box::new(vm.state);
        Subject::Stub {
            _vm: Box::new(vm),
            stub: Box::new(stub),
            state,
        }
    }

    /// Runs from `eip` with ECX = `pages` to the HLT.
    fn run(&mut self, eip: u32, pages: u32, cmds: &[MmuCommand]) {
        let reason = match self {
            Subject::Today(vm) => {
                vm.state.rip = u64::from(eip);
                vm.state.gprs[1] = u64::from(pages);
                let mut st = vm.state;
                let r = vm
                    .exe
                    .run(&mut st, Duration::from_secs(10), cmds)
                    .expect("run")
                    .reason;
                r
            }
            Subject::Stub { stub, state, .. } => {
                state.rip = u64::from(eip);
                state.gprs[1] = u64::from(pages);
                stub.run(state, Duration::from_secs(10), cmds)
                    .expect("stub run")
                    .reason
            }
        };
        assert_eq!(reason, ExitReason::Privileged);
    }

    fn exit_reentry(&mut self, n: u32) -> Duration {
        let t = Instant::now();
        for _ in 0..n {
            self.run(CODE, 0, &[]);
        }
        t.elapsed() / n
    }

    /// A run touching FILL_PAGES fresh pages minus one touching none, per page (FlushAll
    /// before each, so that every touched page is a fill).
    fn fill(&mut self, n: u32) -> Duration {
        let mut timed = |pages: u32| {
            let t = Instant::now();
            for _ in 0..n {
                self.run(TOUCHER, pages, &[MmuCommand::FlushAll]);
            }
            t.elapsed() / n
        };
        let without = timed(0);
        let with = timed(FILL_PAGES);
        with.saturating_sub(without) / FILL_PAGES
    }
}

fn benches(c: &mut Criterion) {
    for (name, mut s) in [
        ("today", Subject::today()),
        ("stub sleep", Subject::stub(Polling::SLEEP, 0)),
        (
            "stub sleep fill-ahead 16",
            Subject::stub(Polling::SLEEP, FILL_AHEAD),
        ),
    ] {
        c.bench_function(&format!("{name}: exit + re-entry"), |b| {
            b.iter(|| s.run(CODE, 0, &[]))
        });
        c.bench_function(
            &format!("{name}: run touching 64 fresh pages (FlushAll first)"),
            |b| b.iter(|| s.run(TOUCHER, FILL_PAGES, &[MmuCommand::FlushAll])),
        );
    }
}

criterion_group! {
    name = group;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = benches
}

/// Medians over `rounds`, each round measuring every subject once in turn.
fn interleaved(
    subjects: &mut [(&str, Subject)],
    rounds: usize,
    f: impl Fn(&mut Subject) -> Duration,
) -> Vec<(Duration, Duration, Duration)> {
    let mut samples = vec![Vec::new(); subjects.len()];
    for _ in 0..rounds {
        for (i, (_, s)) in subjects.iter_mut().enumerate() {
            samples[i].push(f(s));
        }
    }
    samples
        .into_iter()
        .map(|mut v| {
            v.sort();
            (v[0], median(v.clone()), v[v.len() - 1])
        })
        .collect()
}

fn summary() {
    let mut subjects = [
        ("today's executor", Subject::today()),
        ("stub, both sleep", Subject::stub(Polling::SLEEP, 0)),
        ("stub, library polls", Subject::stub(Polling::LIBRARY, 0)),
        ("stub, both poll", Subject::stub(Polling::BOTH, 0)),
        (
            "stub, sleep, fill-ahead 16",
            Subject::stub(Polling::SLEEP, FILL_AHEAD),
        ),
        (
            "stub, sleep, with library",
            Subject::stub_placed(Polling::SLEEP, 0, Placement::WithLibrary),
        ),
        (
            "stub, sleep, w/ lib, ahead 16",
            Subject::stub_placed(Polling::SLEEP, FILL_AHEAD, Placement::WithLibrary),
        ),
    ];
    println!();
    println!("=== issue 14 gate: stub executor beside today's (median [min-max] of {ROUNDS} interleaved rounds) ===");
    println!("targets: exit + re-entry within 10% of today's; a demand fill <= 2x today's");
    for busy in [false, true] {
        let _spinner = busy.then(|| BusyCpu::start(1));
        let other = if busy { "busy" } else { "idle" };
        let rt = interleaved(&mut subjects, ROUNDS, |s| s.exit_reentry(200));
        let fill = interleaved(&mut subjects, ROUNDS, |s| s.fill(10));
        println!();
        println!("--- other vCPU {other} ---");
        println!(
            "{:<28} {:>28} {:>8}   {:>28} {:>8}",
            "executor", "exit + re-entry", "ratio", "demand fill, per page", "ratio"
        );
        let fmt = |(lo, med, hi): (Duration, Duration, Duration)| {
            format!("{med:>8.2?} [{lo:.2?}-{hi:.2?}]")
        };
        for (i, (name, _)) in subjects.iter().enumerate() {
            println!(
                "{:<28} {:>28} {:>7.2}x   {:>28} {:>7.2}x",
                name,
                fmt(rt[i]),
                rt[i].1.as_secs_f64() / rt[0].1.as_secs_f64(),
                fmt(fill[i]),
                fill[i].1.as_secs_f64() / fill[0].1.as_secs_f64(),
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--summary-only") {
        group();
        Criterion::default().configure_from_args().final_summary();
    }
    summary();
}
