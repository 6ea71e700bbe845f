//! The budget and foreign signals for 64-bit code on the stub (issue 15, step 3), as tests/stub.rs
//! has them for 32-bit code: the budget's `tgkill` ends an endless loop at an instruction
//! boundary with its exact 64-bit state, no signal from another process ends a run or passes
//! for a guest fault, and a stale library SIGALRM is ignored. (Escapes: stub64_escapes.rs.)

use host_driver::{ExitReason, GuestState};
use iced_x86::code_asm::*;
use std::time::Duration;
use test_support::kill_from_another_process as kill;
use test_support::vm64::layout64::*;
use test_support::vm64::*;

/// A loop counting in RAX (upper half included: it starts at 2^32) and R9 in step.
fn counting_loop(vm: &mut Vm64) {
    vm.code(|a| {
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.inc(rax)?; // CODE, 3 bytes
        a.inc(r9)?; // CODE + 3, 3 bytes
        a.jmp(l) // CODE + 6
    });
    vm.state.gprs[0] = 1 << 32;
    vm.state.gprs[9] = 1 << 32;
}

/// The state of [`counting_loop`] is one it can be in at an instruction boundary.
fn assert_boundary_state(state: &GuestState, what: &str) {
    let (count_a, count_9) = (state.gprs[0], state.gprs[9]);
    match state.rip {
        r if r == CODE || r == CODE + 6 => assert_eq!(count_a, count_9, "{what}: at {r:#x}"),
        r if r == CODE + 3 => assert_eq!(count_a, count_9 + 1, "{what}: at {r:#x}"),
        r => panic!("{what}: RIP {r:#x} is no instruction boundary of the loop"),
    }
    assert!(count_a >= 1 << 32, "{what}: the count went back");
}

/// One test at a time: each stub's threads are pinned to its library's CPU, so two tests on
/// the two vCPUs here can keep a guest thread from its first instruction for the whole 1 ms
/// of the budget test's first run (seen once this binary held two tests instead of three).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn the_budget_ends_a_64_bit_loop_at_an_instruction_boundary_with_its_exact_state() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut vm = Vm64::new();
    counting_loop(&mut vm);
    let mut last = 0;
    for (i, ms) in [1u64, 5, 20, 2].into_iter().enumerate() {
        let budget = Duration::from_millis(ms);
        let exit = vm
            .stub
            .run(&mut vm.state, budget, &[])
            .expect("run")
            .clone();
        assert_eq!(exit.reason, ExitReason::BudgetExpired, "run {i}");
        assert!(
            exit.native_time() >= budget,
            "run {i}: {:?}",
            exit.native_time()
        );
        assert_boundary_state(&vm.state, &format!("run {i}"));
        // A run may end before its first instruction: the budget is wall time, and a loaded
        // host can hold the guest thread off the CPU between its entry and the guest's code.
        assert!(vm.state.gprs[0] >= last, "run {i}: the count went back");
        last = vm.state.gprs[0];
    }
    assert!(last > 1 << 32, "the loop ran");
}

#[test]
fn foreign_and_stale_signals_never_end_a_64_bit_run() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut vm = Vm64::new();
    counting_loop(&mut vm);
    let pid = vm.stub.pid().unwrap();
    let sender = std::thread::spawn(move || {
        for sig in ["-ALRM", "-SEGV", "-SYS", "-TRAP", "-ALRM"] {
            std::thread::sleep(Duration::from_millis(10));
            kill(pid, sig);
        }
    });
    let budget = Duration::from_millis(150);
    let exit = vm
        .stub
        .run(&mut vm.state, budget, &[])
        .expect("run")
        .clone();
    sender.join().unwrap();
    assert_eq!(exit.reason, ExitReason::BudgetExpired);
    assert!(exit.native_time() >= budget);
    assert_boundary_state(&vm.state, "after foreign signals");

    // A SIGALRM of the library's own, pending before the run: stale.
    vm.stub.signal_guest_thread(libc::SIGALRM).unwrap();
    let budget = Duration::from_millis(50);
    let exit = vm
        .stub
        .run(&mut vm.state, budget, &[])
        .expect("run")
        .clone();
    assert_eq!(exit.reason, ExitReason::BudgetExpired);
    assert!(exit.native_time() >= budget, "{:?}", exit.native_time());
    assert_boundary_state(&vm.state, "after a stale signal");
}
