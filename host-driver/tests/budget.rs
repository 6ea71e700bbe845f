//! Budget and time accounting (no timing assertions: only ordering facts that hold on any
//! machine), and the library's deadline for an executor that does not answer.

use host_driver::{BudgetClock, DriverError, ExecutorConfig, ExitReason, NativeExecutor};
use iced_x86::code_asm::*;
use std::time::Duration;
use test_support::both_executors;
use test_support::vm::*;

/// A looping guest, and a second executor on the same RAM using `clock` (the stub's budget is
/// always the library's CLOCK_MONOTONIC).
fn looping_vm(clock: BudgetClock) -> (Box<dyn NativeExecutor>, Vm) {
    let mut vm = Vm::new(Mode::TwoLevel);
    vm.code(|a| {
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.inc(eax)?;
        a.jmp(l)
    });
    let mut cfg = ExecutorConfig::new(vm.ram.fd(), RAM_SIZE);
    cfg.executor_path = Some(executor_path());
    cfg.budget_clock = clock;
    let exe = spawn(cfg);
    (exe, vm)
}

both_executors! {
    #[test]
    fn both_budget_clocks_end_an_infinite_loop() {
        for clock in [BudgetClock::Monotonic, BudgetClock::ThreadCpuTime] {
            let (mut exe, mut vm) = looping_vm(clock);
            for _ in 0..3 {
                let exit = exe
                    .run(&mut vm.state, Duration::from_millis(5), &[])
                    .unwrap();
                assert_eq!(exit.reason, ExitReason::BudgetExpired, "{clock:?}");
                assert!(
                    exit.native_time() >= Duration::from_millis(5),
                    "{clock:?}: {:?}",
                    exit.native_time()
                );
                assert!(
                    vm.state.rip == u64::from(CODE) || vm.state.rip == u64::from(CODE + 1),
                    "at an instruction boundary"
                );
            }
            assert!(vm.state.gprs[0] > 0, "the loop ran");
        }
    }
}

both_executors! {
    #[test]
    fn tiny_budgets_always_end_the_run() {
        // Budgets shorter than an entry expire before the guest starts, often while an earlier
        // run's expiry is still pending: every run must still end (a lost expiry used to leave the
        // guest looping forever; the library's deadline now turns that into an error too).
        let (mut exe, mut vm) = looping_vm(BudgetClock::Monotonic);
        for i in 0..2000u64 {
            let budget = Duration::from_nanos(1 + (i * 7919) % 40_000);
            let exit = exe.run(&mut vm.state, budget, &[]).unwrap();
            assert_eq!(
                exit.reason,
                ExitReason::BudgetExpired,
                "run {i}, budget {budget:?}"
            );
        }
    }
}

both_executors! {
    #[test]
    fn a_stopped_executor_is_reported_and_killed_not_waited_for() {
        let (mut exe, mut vm) = looping_vm(BudgetClock::Monotonic);
        exe.run(&mut vm.state, Duration::from_millis(1), &[])
            .unwrap();
        let pid = exe.pid().expect("running").to_string();
        let stopped = std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status();
        assert!(stopped.expect("kill(1)").success());
        match exe.run(&mut vm.state, Duration::from_millis(1), &[]) {
            Err(DriverError::ExecutorUnresponsive(_)) => {}
            other => panic!("expected ExecutorUnresponsive, got {other:?}"),
        }
        assert!(
            matches!(
                exe.run(&mut vm.state, Duration::from_millis(1), &[]),
                Err(DriverError::ExecutorDied(_))
            ),
            "killed: later runs fail at once"
        );
    }
}

both_executors! {
    #[test]
    fn a_run_that_ends_early_does_not_wait_for_its_budget() {
        // The library sleeps until shortly before a run's budget ends; an exception long before
        // that must still wake it at once (through the executor's futex wake).
        let mut vm = Vm::new(Mode::TwoLevel);
        vm.code(|a| a.hlt());
        let started = std::time::Instant::now();
        let exit = vm
            .exe
            .run(&mut vm.state, Duration::from_secs(30), &[])
            .unwrap();
        assert_ne!(exit.reason, ExitReason::BudgetExpired);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "returned after {:?} of a 30 s budget",
            started.elapsed()
        );
    }
}

both_executors! {
    #[test]
    fn an_executor_killed_during_a_long_run_is_reported_within_seconds() {
        let (mut exe, mut vm) = looping_vm(BudgetClock::Monotonic);
        let pid = exe.pid().expect("running").to_string();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status()
        });
        let started = std::time::Instant::now();
        match exe.run(&mut vm.state, Duration::from_secs(60), &[]) {
            Err(DriverError::ExecutorDied(_)) => {}
            other => panic!("expected ExecutorDied, got {other:?}"),
        }
        assert!(killer.join().unwrap().expect("kill(1)").success());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "noticed after {:?} of a 60 s budget",
            started.elapsed()
        );
    }
}
