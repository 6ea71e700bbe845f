//! 64-bit guest code on the stub executor (issue 15, step 3), against a real stub: entry with
//! all 16 registers, RIP and RFLAGS whole and the FS/GS bases of null selectors; exits with the
//! exact state before the instruction that ended the run. Code, data and stack lie above
//! 4 GiB (test_support::vm64). Demand fills and exits: stub64_paging.rs, stub64_exits.rs.

use host_driver::{CodeModes, DriverError, Executor, ExecutorConfig, ExitReason};
use iced_x86::code_asm::*;
use test_support::executor_path;
use test_support::vm64::layout64::*;
use test_support::vm64::*;

/// Distinct values with both halves non-zero, for every register.
fn wide(i: usize) -> u64 {
    (0x0101_0101_0000_0000 * (i as u64 + 1)) | (0x1000 + i as u64)
}

#[test]
fn a_run_enters_with_all_sixteen_registers_and_exits_at_hlt_with_them_whole() {
    let mut vm = Vm64::new();
    assert_eq!(vm.stub.code_modes(), CodeModes::Legacy32Long64AndCompat);
    let bytes = vm.code(|a| {
        a.nop()?;
        a.hlt()
    });
    for i in 0..16 {
        if i != 4 {
            vm.state.gprs[i] = wide(i);
        }
    }
    vm.state.rflags = 0x202 | 0x8d5; // CF PF AF ZF SF OF set
    let before = vm.state;
    let exit = vm.run();
    assert_eq!(exit.reason, ExitReason::Privileged);
    let at = CODE + offset_in(&bytes, &[0xf4]);
    assert_eq!(vm.state.rip, at);
    assert_eq!(vm.state.gprs, before.gprs, "every register whole");
    assert_eq!(vm.state.rflags, before.rflags);
    assert_eq!(
        vm.state.segs, before.segs,
        "the guest's CS/SS, not the host's"
    );
}

#[test]
fn a_run_computes_with_upper_halves_and_r8_to_r15() {
    let mut vm = Vm64::new();
    vm.code(|a| {
        a.mov(r8, 0x1122_3344_5566_7788u64)?;
        a.add(r8, r15)?;
        a.mov(rax, r8)?;
        a.shl(rax, 4i32)?;
        a.push(rax)?;
        a.pop(r9)?;
        a.xor(r10d, r10d)?; // a 32-bit write zero-extends
        a.hlt()
    });
    vm.state.gprs[15] = 0x0100_0000_0000_0001;
    vm.state.gprs[10] = u64::MAX;
    vm.run();
    let g = &vm.state.gprs;
    assert_eq!(g[8], 0x1222_3344_5566_7789);
    assert_eq!(g[0], 0x2223_3445_5667_7890);
    assert_eq!(g[9], g[0]);
    assert_eq!(g[10], 0);
    assert_eq!(g[4], STACK_TOP - 64, "RSP back after push/pop");
}

/// A 64-bit process's TLS base rides on a null FS: the entry loads the state's bases whatever
/// the selector, and what 64-bit code writes with WRFSBASE/WRGSBASE comes back in the exit.
#[test]
fn null_fs_and_gs_carry_their_bases_in_and_wrfsbase_s_come_back() {
    let mut vm = Vm64::new();
    vm.ram.write_u64(DATA_PHYS + 0x10, 0x0bad_cafe_f00d_0001);
    vm.ram.write_u64(DATA_PHYS + 0x30, 0x0bad_cafe_f00d_0002); // GS base + 0x20
    vm.code(|a| {
        a.mov(rax, qword_ptr(0x10).fs())?;
        a.mov(rbx, qword_ptr(0x20).gs())?;
        a.wrfsbase(rcx)?;
        a.wrgsbase(rdx)?;
        a.hlt()
    });
    vm.state.segs[4].base = DATA;
    vm.state.segs[5].base = DATA + 0x10;
    vm.state.gprs[1] = 0x7f99_8877_6000; // RCX: the new FS base
    vm.state.gprs[2] = 0xffff_8000_1234_0000; // RDX: a kernel-half GS base is legal
    let exit = vm.run();
    assert_eq!(exit.reason, ExitReason::Privileged);
    assert_eq!(vm.state.gprs[0], 0x0bad_cafe_f00d_0001, "FS:0x10 read");
    assert_eq!(vm.state.gprs[3], 0x0bad_cafe_f00d_0002, "GS:0x20 read");
    assert_eq!(vm.state.segs[4].base, 0x7f99_8877_6000);
    assert_eq!(vm.state.segs[5].base, 0xffff_8000_1234_0000);
    assert_eq!(
        (vm.state.segs[4].selector, vm.state.segs[5].selector),
        (0, 0)
    );
    // The next run enters with the moved bases.
    vm.ram.write_u64(DATA_PHYS + 0x20, 0x5a5a); // the new FS base + 0x18
    vm.code(|a| {
        a.rdfsbase(rsi)?;
        a.mov(rdi, qword_ptr(0x18).fs())?;
        a.hlt()
    });
    vm.state.segs[4].base = DATA + 8;
    vm.run();
    assert_eq!(vm.state.gprs[6], DATA + 8);
    assert_eq!(vm.state.gprs[7], 0x5a5a);
}

/// Today's executor keeps refusing long mode (its own code lives above 4 GiB), saying why.
#[test]
fn today_s_executor_refuses_64_bit_code_with_its_reason() {
    let vm = Vm64::new();
    let mut cfg = ExecutorConfig::new(vm.ram.fd(), vm.ram.size());
    cfg.executor_path = Some(executor_path());
    let mut today = Executor::spawn(cfg).expect("executor starts");
    let mut state = vm.state;
    match today.run(&mut state, BUDGET, &[]) {
        Err(DriverError::UnsupportedState(m)) => assert_eq!(
            m,
            "long mode (64-bit, EFER 0xd00): this executor runs 32-bit code only"
        ),
        other => panic!("{other:?}"),
    }
}

/// The stub refuses what it cannot load: compatibility-mode code at a 64-bit RIP (it runs
/// compatibility mode below 4 GiB: stub_compat.rs), a non-canonical FS base.
#[test]
fn the_stub_refuses_a_wide_eip_in_compatibility_mode_and_non_canonical_bases() {
    let mut vm = Vm64::new();
    let mut compat = vm.state;
    compat.segs[1] = host_driver::Segment::flat_code(0x23);
    compat.gprs[4] = 0x1000; // a 32-bit ESP: the EIP is what is refused
    let e = vm.stub.run(&mut compat, BUDGET, &[]).unwrap_err();
    assert!(
        e.to_string()
            .contains("EIP 0x555555550000 has an upper half"),
        "{e}"
    );
    let mut bad = vm.state;
    bad.segs[4].base = 0x8000_0000_0000;
    let e = vm.stub.run(&mut bad, BUDGET, &[]).unwrap_err();
    assert!(
        e.to_string()
            .contains("FS base 0x800000000000 is not canonical"),
        "{e}"
    );
    // Refusals come before anything runs: the stub still works.
    vm.code(|a| a.hlt());
    assert_eq!(vm.run().reason, ExitReason::Privileged);
}

/// XMM8-15 exist only in 64-bit code: they enter from the state's XSAVE image and come back.
#[test]
fn xmm8_to_xmm15_enter_and_come_back() {
    use host_driver::protocol::xsave::fx;
    let mut vm = Vm64::new();
    let xmm = |i: usize| fx::XMM + 16 * i;
    for i in 8..16 {
        vm.state
            .xsave
            .set_u64_at(xmm(i), 0x1111_0000_0000_0000 * i as u64 + i as u64);
        vm.state.xsave.set_u64_at(xmm(i) + 8, u64::MAX - i as u64);
    }
    vm.code(|a| {
        a.movq(rax, xmm15)?;
        a.paddq(xmm8, xmm9)?;
        a.hlt()
    });
    let before = vm.state;
    assert_eq!(vm.run().reason, ExitReason::Privileged);
    assert_eq!(vm.state.gprs[0], before.xsave.u64_at(xmm(15)));
    let sum = |off: usize| {
        before
            .xsave
            .u64_at(xmm(8) + off)
            .wrapping_add(before.xsave.u64_at(xmm(9) + off))
    };
    assert_eq!(vm.state.xsave.u64_at(xmm(8)), sum(0));
    assert_eq!(vm.state.xsave.u64_at(xmm(8) + 8), sum(8));
    for i in 9..16 {
        assert_eq!(
            vm.state.xsave.0[xmm(i)..xmm(i) + 16],
            before.xsave.0[xmm(i)..xmm(i) + 16],
            "XMM{i}"
        );
    }
}

/// SS: 0x2b runs on the host's SS; any other is mirrored, so that an SS of 0x2b the guest
/// loads itself comes back as its own selector for the emulator to reload, never taken for the
/// entry's.
#[test]
fn an_ss_other_than_0x2b_is_mirrored_and_a_loaded_0x2b_is_reported_as_loaded() {
    let mut vm = Vm64::new();
    vm.state.segs[2] = host_driver::Segment::flat_data(0x23);
    vm.code(|a| {
        a.push(rbx)?;
        a.pop(rcx)?;
        a.hlt()
    });
    vm.state.gprs[3] = 0x1234_5678_9abc;
    let before = vm.state;
    assert_eq!(vm.run().reason, ExitReason::Privileged);
    assert_eq!(vm.state.segs, before.segs, "the entry's SS 0x23");
    assert_eq!(vm.state.gprs[1], 0x1234_5678_9abc);

    vm.code(|a| {
        a.mov(eax, 0x2bu32)?;
        a.mov(ss, eax)?;
        a.hlt()
    });
    assert_eq!(vm.run().reason, ExitReason::Privileged);
    assert_eq!(vm.state.segs[2].selector, 0x2b);
    assert_eq!(
        vm.state.segs[2].flags,
        host_driver::protocol::SEG_NOT_INSTALLED
    );

    // With SS 0x2b at entry the same code leaves it as the entry's.
    let mut vm = Vm64::new();
    vm.code(|a| {
        a.mov(eax, 0x2bu32)?;
        a.mov(ss, eax)?;
        a.hlt()
    });
    let before = vm.state;
    assert_eq!(vm.run().reason, ExitReason::Privileged);
    assert_eq!(vm.state.segs[2], before.segs[2]);
}

/// A 64-bit CS other than 0x33 (FreeBSD's is 0x43) runs on the host's 0x33 too, and its exits
/// report the guest's own.
#[test]
fn a_cs_other_than_0x33_runs_on_the_host_s_and_comes_back_as_the_guest_s() {
    let mut vm = Vm64::new();
    vm.state.segs[1] = host_driver::Segment::flat_code64(0x43);
    vm.code(|a| {
        a.mov(r8, 0x0123_4567_89ab_cdefu64)?;
        a.hlt()
    });
    let before = vm.state;
    assert_eq!(vm.run().reason, ExitReason::Privileged);
    assert_eq!(vm.state.segs, before.segs, "the guest's CS 0x43");
    assert_eq!(vm.state.gprs[8], 0x0123_4567_89ab_cdef, "64-bit code ran");
}

#[test]
fn a_guest_that_maps_pages_over_s_is_refused_and_runs_again_once_they_are_gone() {
    use test_support::pagetables::bits::{NX, P, URW};
    // Native code at S's addresses would use the stub's own pages: such a process must run
    // emulated (accel-core declines the state), whatever the page's permissions.
    let mut vm = Vm64::new();
    vm.code(|a| a.hlt());
    let s = host_driver::protocol::stub::DEFAULT_BASE;
    for (page, flags) in [(s, URW), (s + 0x5000, URW | NX), (s + 0x16000, P)] {
        vm.map(page, DATA_PHYS, flags);
        let e = vm
            .stub
            .run(&mut vm.state, BUDGET, &[])
            .expect_err("refused");
        assert!(
            matches!(e, DriverError::StubRegionMapped { base } if base == s),
            "{page:#x}: {e}"
        );
        let pte = vm.tables.pte_addr(&vm.ram, page);
        vm.ram.write_u64(pte, 0);
    }
    // Elsewhere in S's 4 GiB block (never mirrored, emulated access by access): entered.
    vm.map(s + (2 << 20), DATA_PHYS, URW);
    assert_eq!(vm.run().reason, ExitReason::Privileged);
}
