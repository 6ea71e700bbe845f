//! Escapes of 64-bit code on the stub (issue 15, item 5): each costs the guest process a
//! #GP(0), not the VM. Code that tampers with the stub through S's pages (a fake signal
//! published in its words, a jump to the `syscall` in its code page) ends the run at the entry
//! state; each time a fresh stub runs the next entry. A far transfer between the host's user
//! code selectors is no escape but a mode switch, which the run follows. (A test
//! binary of its own: its guest code spins until the library notices, which would starve the
//! budget tests' 1 ms runs on a 2-vCPU machine.)

use host_driver::protocol::stub::{by_stub, DEFAULT_BASE, STUB};
use host_driver::{EscapeKind, ExitReason, Segment};
use iced_x86::code_asm::*;
use test_support::vm64::layout64::*;
use test_support::vm64::*;

#[test]
fn far_transfers_between_the_host_s_user_code_selectors_switch_modes_natively() {
    let mut vm = Vm64::new();
    // Below 4 GiB, where a 32-bit far pointer reaches: at `low` a HLT (#GP in compatibility
    // mode); at `low + 0x10` 32-bit code far-jumping to 0x33:`low + 0x20`, where 64-bit code
    // loads RAX whole and halts.
    let low = 0x40_0000u64;
    vm.map(low, CODE_PHYS + 0x8000, test_support::pagetables::bits::URW);
    let mut page = vec![0u8; 0x30];
    page[0] = 0xf4;
    page[0x10] = 0xea;
    page[0x11..0x15].copy_from_slice(&((low + 0x20) as u32).to_le_bytes());
    page[0x15..0x17].copy_from_slice(&0x33u16.to_le_bytes());
    page[0x20..0x22].copy_from_slice(&[0x48, 0xb8]);
    page[0x22..0x2a].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
    page[0x2a] = 0xf4;
    vm.ram.write(CODE_PHYS + 0x8000, &page);
    // 64-bit code: jmp far [rbx] with m16:32 0x23:`low`.
    vm.ram.write(DATA_PHYS, &(low as u32).to_le_bytes());
    vm.ram.write(DATA_PHYS + 4, &0x23u16.to_le_bytes());
    vm.code(|a| a.jmp(fword_ptr(rbx)));
    vm.state.gprs[3] = DATA;
    vm.state.gprs[12] = 0x1234_5678_9abc_def0;
    let pid = vm.stub.pid();
    let exit = vm.run();
    // The HLT's #GP in compatibility mode: CS the host's 0x23 for Bochs to reload (its kind
    // flat 32-bit code), the registers whole, no escape, the same stub.
    assert_eq!(exit.reason, ExitReason::Privileged, "{:?}", exit.reason);
    assert!(!exit.escape_contained);
    assert_eq!(vm.state.rip, low, "at the HLT");
    assert_eq!(vm.state.gprs[12], 0x1234_5678_9abc_def0, "R12 whole");
    assert_host_cs_for_reload(&vm.state, 0x23, 0xc0fb);
    assert!(!vm.state.code64());

    // From compatibility mode (the guest's 0x23 entered as such) to 64-bit code.
    vm.state.segs[1] = Segment::flat_code(0x23);
    vm.state.gprs = [0; 16];
    vm.state.gprs[4] = 0x40_0ff0;
    vm.state.gprs[12] = 0x0fed_cba9_8765_4321;
    vm.state.rip = low + 0x10;
    let exit = vm.run();
    assert_eq!(exit.reason, ExitReason::Privileged, "{:?}", exit.reason);
    assert_eq!(vm.state.rip, low + 0x2a, "at the 64-bit HLT");
    assert_eq!(vm.state.gprs[0], 0x1122_3344_5566_7788, "RAX whole");
    assert_eq!(
        vm.state.gprs[12], 0x0fed_cba9_8765_4321,
        "R12 entered and kept"
    );
    assert_host_cs_for_reload(&vm.state, 0x33, 0xa0fb);
    assert!(vm.state.code64());
    assert_eq!(vm.stub.pid(), pid, "no escape: the same stub");
    assert_eq!(vm.stub.escapes_contained(), 0);
}

/// A fresh stub (not the process `pid`), one escape contained, runs 64-bit code from an empty
/// mirror.
fn assert_a_fresh_stub_runs(vm: &mut Vm64, pid: Option<u32>) {
    assert!(
        vm.stub.pid().is_some() && vm.stub.pid() != pid,
        "a fresh stub"
    );
    assert_eq!(vm.stub.escapes_contained(), 1);
    vm.code(|a| a.hlt());
    assert_eq!(vm.run().reason, ExitReason::Privileged);
    assert_eq!(vm.state.rip, CODE);
}

/// The run ends in a contained `StubTampered` escape at the entry state; a fresh stub runs the
/// next entry.
fn expect_tampering_contained(vm: &mut Vm64) {
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
    assert_a_fresh_stub_runs(vm, pid);
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
    expect_tampering_contained(&mut vm);
}

#[test]
fn a_jump_into_the_stub_s_code_at_its_syscall_is_a_contained_escape() {
    // S's code page is readable natively where the guest maps nothing: the guest finds a
    // `syscall` (0f 05) there and jumps to it with fork's number, which the guest thread's
    // filter kills the stub for (from S's code page only futex, rt_sigreturn, sched_yield and
    // clock_gettime pass).
    let mut vm = Vm64::new();
    vm.code(|a| {
        find_syscall_in_s(a)?;
        a.mov(eax, 57)?; // fork
        a.jmp(rsi)
    });
    expect_tampering_contained(&mut vm);
}

#[test]
fn a_guest_thread_hung_in_the_stub_s_futex_wait_with_signals_blocked_is_a_contained_escape() {
    // The guest forges an rt_sigreturn frame on its stack: all signals blocked, RIP at a
    // `syscall` in S's code page, registers for a futex wait on a zero word with no timeout;
    // then jumps to that `syscall` with rt_sigreturn's number. The guest thread sleeps for
    // good, the budget's signals pending: after the library's grace (4 s) it is not stopped,
    // so only guest code can have done it.
    let mut vm = Vm64::new();
    const MC: i32 = 40; // uc_mcontext in struct ucontext
    let reg = |i: i32| MC + 8 * i; // r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags
    vm.code(|a| {
        find_syscall_in_s(a)?;
        a.sub(rsp, 0x400)?;
        a.and(rsp, -16)?;
        a.mov(rdi, rsp)?;
        a.xor(eax, eax)?;
        a.mov(ecx, 0x160 / 8)?;
        a.rep().stosq()?; // the frame, zeroed (a zero futex word at +0x150 too)
        a.mov(rdi, rsp)?;
        a.mov(dword_ptr(rdi + 24), 2)?; // uc_stack.ss_flags = SS_DISABLE
        a.lea(rax, ptr(rdi + 0x150))?;
        a.mov(qword_ptr(rdi + reg(8)), rax)?; // rdi: the futex word
        a.mov(qword_ptr(rdi + reg(13)), 202)?; // rax: futex (rsi FUTEX_WAIT, rdx 0, r10 NULL)
        a.mov(qword_ptr(rdi + reg(15)), rdi)?; // rsp
        a.mov(qword_ptr(rdi + reg(16)), rsi)?; // rip: the `syscall`
        a.mov(qword_ptr(rdi + reg(17)), 0x202)?; // eflags
        a.mov(word_ptr(rdi + MC + 144), 0x33)?; // cs
        a.mov(qword_ptr(rdi + 296), -1)?; // uc_sigmask: all
        a.mov(eax, 15)?; // rt_sigreturn
        a.jmp(rsi)
    });
    let t0 = std::time::Instant::now();
    expect_tampering_contained(&mut vm);
    assert!(
        t0.elapsed() >= std::time::Duration::from_secs(4),
        "after the grace"
    );
}

/// Guest code that scans S's code page (readable natively where the guest maps nothing) for
/// a `syscall` (0f 05) and leaves its address in RSI.
fn find_syscall_in_s(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let (mut scan, mut found) = (a.create_label(), a.create_label());
    a.mov(rsi, DEFAULT_BASE)?;
    a.set_label(&mut scan)?;
    a.cmp(word_ptr(rsi), 0x050f)?;
    a.je(found)?;
    a.inc(rsi)?;
    a.jmp(scan)?;
    a.set_label(&mut found)
}
