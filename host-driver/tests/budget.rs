//! Budget and time accounting (no timing assertions: only ordering facts that hold on any
//! machine). `cargo test -p host-driver --test budget -- --ignored --nocapture` prints how
//! precisely each budget clock ends a run.

mod common;

use common::*;
use host_driver::{BudgetClock, Executor, ExecutorConfig, ExitReason};
use iced_x86::code_asm::*;
use std::time::Duration;

/// A looping guest, and a second executor on the same RAM using `clock`.
fn looping_vm(clock: BudgetClock) -> (Executor, Vm) {
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
    let exe = Executor::spawn(cfg).unwrap();
    (exe, vm)
}

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
                exit.native_time >= Duration::from_millis(5),
                "{clock:?}: {:?}",
                exit.native_time
            );
            assert!(
                vm.state.eip == CODE || vm.state.eip == CODE + 1,
                "at an instruction boundary"
            );
        }
        assert!(vm.state.gprs[0] > 0, "the loop ran");
    }
}
