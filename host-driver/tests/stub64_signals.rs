//! The budget and foreign signals for 64-bit code on the stub (issue 15, step 3), as tests/stub.rs
//! has them for 32-bit code: the budget's `tgkill` ends an endless loop at an instruction
//! boundary with its exact 64-bit state, no signal from another process ends a run or passes
//! for a guest fault, and a stale library SIGALRM is ignored; and 64-bit code that leaves
//! 64-bit mode (a far jump to the host's compat selector) ends the run as an escape that the
//! stub contains: a fresh stub, the guest's state for its #GP(0).

use host_driver::protocol::stub::{by_stub, DEFAULT_BASE, STUB};
use host_driver::{EscapeKind, ExitReason, GuestState};
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
    assert!(count_a > 1 << 32, "{what}: the loop ran");
}

#[test]
fn the_budget_ends_a_64_bit_loop_at_an_instruction_boundary_with_its_exact_state() {
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
        assert!(vm.state.gprs[0] > last, "run {i}: the loop went on");
        last = vm.state.gprs[0];
    }
}

#[test]
fn foreign_and_stale_signals_never_end_a_64_bit_run() {
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

#[test]
fn leaving_64_bit_mode_by_a_far_jump_to_the_host_s_compat_selector_is_a_contained_escape() {
    let mut vm = Vm64::new();
    // 32-bit code below 4 GiB the far jump lands on: a HLT (#GP in compat mode).
    let low = 0x40_0000u64;
    vm.map(low, CODE_PHYS + 0x8000, test_support::pagetables::bits::URW);
    vm.ram.write(CODE_PHYS + 0x8000, &[0xf4]);
    // m16:32 far pointer: offset, then selector 0x23.
    vm.ram.write(DATA_PHYS, &(low as u32).to_le_bytes());
    vm.ram.write(DATA_PHYS + 4, &0x23u16.to_le_bytes());
    vm.code(|a| a.jmp(fword_ptr(rbx)));
    vm.state.gprs[3] = DATA;
    vm.state.gprs[12] = 0x1234_5678_9abc_def0;
    let entry = vm.state;
    let pid = vm.stub.pid();
    let exit = vm.run();
    assert!(
        matches!(
            exit.reason,
            ExitReason::GuestEscape {
                kind: EscapeKind::LongMode,
                ..
            }
        ),
        "{:?}",
        exit.reason
    );
    // Contained: the state at the signal (the HLT's #GP in compatibility mode), 64 bits wide,
    // with the entry's segments, for the guest's #GP(0); a fresh stub in place of the old.
    assert!(exit.escape_contained);
    assert_eq!(vm.state.rip, low, "at the HLT");
    assert_eq!(vm.state.gprs[3], DATA);
    assert_eq!(vm.state.gprs[12], 0x1234_5678_9abc_def0, "R12 whole");
    assert_eq!(
        vm.state.segs, entry.segs,
        "the entry's CS/SS (and the rest)"
    );
    assert!(
        vm.stub.pid().is_some() && vm.stub.pid() != pid,
        "a fresh stub"
    );
    assert_eq!(vm.stub.escapes_contained(), 1);
    // It runs 64-bit code from an empty mirror.
    vm.code(|a| a.hlt());
    assert_eq!(vm.run().reason, ExitReason::Privileged);
    assert_eq!(vm.state.rip, CODE);
}

#[test]
fn a_stub_word_written_by_guest_code_is_a_contained_escape_at_the_entry_state() {
    // The guest maps nothing where S is, so its native accesses there reach S's pages: it
    // publishes a "signal" with an info address no honest stub writes, and loops.
    let mut vm = Vm64::new();
    let words = DEFAULT_BASE + STUB;
    vm.code(|a| {
        a.mov(rax, words)?;
        a.mov(qword_ptr(rax + by_stub::INFO as u64), 1i32)?;
        a.add(dword_ptr(rax + by_stub::EXIT_SEQ as u64), 1i32)?;
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.jmp(l)
    });
    vm.state.gprs[12] = 0x1234_5678_9abc_def0;
    let entry = vm.state;
    let pid = vm.stub.pid();
    let exit = vm.run();
    assert_eq!(
        exit.reason,
        ExitReason::GuestEscape {
            kind: EscapeKind::StubTampered,
            address: 0,
            diagnostic: 0
        }
    );
    assert!(exit.escape_contained);
    assert!(exit.reason.describe().contains("tampered with"));
    assert_eq!(vm.state, entry, "no trusted state but the entry's");
    assert!(
        vm.stub.pid().is_some() && vm.stub.pid() != pid,
        "a fresh stub"
    );
    assert_eq!(vm.stub.escapes_contained(), 1);
    vm.code(|a| a.hlt());
    assert_eq!(vm.run().reason, ExitReason::Privileged);
}

#[test]
fn a_jump_into_the_stub_s_code_at_its_syscall_is_a_contained_escape() {
    // S's code page is readable natively where the guest maps nothing: the guest finds a
    // `syscall` (0f 05) there and jumps to it with fork's number, which the guest thread's
    // filter kills the stub for (from S's code page only futex, rt_sigreturn, sched_yield and
    // clock_gettime pass).
    let mut vm = Vm64::new();
    vm.code(|a| {
        let (mut scan, mut found) = (a.create_label(), a.create_label());
        a.mov(rsi, DEFAULT_BASE)?;
        a.set_label(&mut scan)?;
        a.cmp(word_ptr(rsi), 0x050f)?;
        a.je(found)?;
        a.inc(rsi)?;
        a.jmp(scan)?;
        a.set_label(&mut found)?;
        a.mov(eax, 57)?; // fork
        a.jmp(rsi)
    });
    let entry = vm.state;
    let pid = vm.stub.pid();
    let exit = vm.run();
    assert_eq!(
        exit.reason,
        ExitReason::GuestEscape {
            kind: EscapeKind::StubTampered,
            address: 0,
            diagnostic: 0
        }
    );
    assert!(exit.escape_contained);
    assert_eq!(vm.state, entry, "no trusted state but the entry's");
    assert!(
        vm.stub.pid().is_some() && vm.stub.pid() != pid,
        "a fresh stub"
    );
    assert_eq!(vm.stub.escapes_contained(), 1);
    vm.code(|a| a.hlt());
    assert_eq!(vm.run().reason, ExitReason::Privileged);
}
