//! Escape attempts: far transfers to the host's 64-bit code selector, loads of each host
//! selector, host system calls through all three instructions. Each must be contained: either a
//! normal exit (the executor keeps working), or a "guest escape" exit after which the executor
//! is gone — and never a host system call executed on the guest's behalf.

use host_driver::{DeathCause, DriverError, EscapeKind, ExitReason, GuestState, SEG_NOT_INSTALLED};
use iced_x86::code_asm::*;
use std::time::Duration;
use test_support::both_executors;
use test_support::vm::*;

const TARGET: u32 = CODE + 0x100;

/// Puts 64-bit code at TARGET.
fn code64(vm: &mut Vm, f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>) {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a).unwrap();
    let bytes = a.assemble(u64::from(TARGET)).unwrap();
    vm.ram.write(CODE_PHYS + u64::from(TARGET - CODE), &bytes);
}

/// The run ends in a guest escape of `kind`. Today's executor is gone afterwards (it holds
/// all of guest RAM: the VM must stop) and further runs fail cleanly. The stub contains it: a
/// fresh stub replaces the one the escape ran in, the state is the guest's for a #GP(0) (the
/// registers at the signal, 32 bits wide, the entry's segments) and the next run works.
/// Returns the contained state (stub only).
fn expect_escape(vm: &mut Vm, kind: EscapeKind) -> Option<GuestState> {
    let entry = vm.state;
    let pid = vm.exe.pid();
    let exit = vm
        .exe
        .run(&mut vm.state, Duration::from_millis(200), &[])
        .unwrap();
    match exit.reason {
        ExitReason::GuestEscape { kind: k, .. } => {
            assert_eq!(k, kind, "{}", exit.reason.describe())
        }
        other => panic!("expected a guest escape, got {other:?}"),
    }
    assert!(exit.reason.describe().starts_with("guest escape"));
    let stub = executor_kind() == ExecutorKind::Stub;
    assert_eq!(exit.escape_contained, stub);
    if !stub {
        // The executor is gone; further runs fail cleanly.
        match vm.exe.run(&mut vm.state, Duration::from_millis(10), &[]) {
            Err(DriverError::ExecutorDied(DeathCause::KilledByLibrary)) => {}
            other => panic!("expected a dead executor, got {other:?}"),
        }
        return None;
    }
    let contained = vm.state;
    assert_eq!(contained.segs, entry.segs, "the entry's segments");
    assert_eq!(contained.gprs[8..], entry.gprs[8..], "R8..R15 untouched");
    assert!(
        contained.gprs[..8].iter().all(|r| r >> 32 == 0) && contained.rip >> 32 == 0,
        "32 bits wide: {contained:x?}"
    );
    assert_ne!(vm.exe.pid(), pid, "a fresh stub");
    vm.code(|a| a.hlt());
    assert_eq!(
        vm.run().reason,
        ExitReason::Privileged,
        "the fresh stub runs"
    );
    assert_eq!(vm.state.rip, u64::from(CODE));
    Some(contained)
}

both_executors! {
    #[test]
    fn far_jump_to_host_64bit_selector_is_caught() {
        let mut vm = Vm::new(Mode::TwoLevel);
        code64(&mut vm, |a| a.hlt());
        vm.code(|a| a.jmp_far(0x33, TARGET));
        if let Some(st) = expect_escape(&mut vm, EscapeKind::LongMode) {
            assert_eq!(st.rip, u64::from(TARGET), "at the HLT in 64-bit mode");
        }
    }
}

both_executors! {
    #[test]
    fn far_call_to_host_64bit_selector_is_caught() {
        let mut vm = Vm::new(Mode::TwoLevel);
        code64(&mut vm, |a| a.ud2());
        vm.code(|a| a.call_far(0x33, TARGET));
        expect_escape(&mut vm, EscapeKind::LongMode);
    }
}

both_executors! {
    #[test]
    fn far_return_into_64bit_infinite_loop_is_caught_by_the_budget_timer() {
        let mut vm = Vm::new(Mode::TwoLevel);
        code64(&mut vm, |a| {
            let mut l = a.create_label();
            a.set_label(&mut l)?;
            a.jmp(l)
        });
        vm.code(|a| {
            a.push(0x33)?;
            a.push(TARGET)?;
            a.retf()
        });
        let entry_esp = vm.state.gprs[4];
        if let Some(st) = expect_escape(&mut vm, EscapeKind::LongMode) {
            assert_eq!(
                (st.rip, st.gprs[4]),
                (u64::from(TARGET), entry_esp),
                "in the loop, RETF's operands popped"
            );
        }
    }
}

both_executors! {
    #[test]
    fn host_syscall_from_64bit_guest_code_is_not_executed() {
        for (nr, name) in [(60u32, "exit"), (39, "getpid"), (57, "fork")] {
            let mut vm = Vm::new(Mode::TwoLevel);
            code64(&mut vm, |a| {
                a.mov(eax, nr)?;
                a.syscall()?;
                a.hlt()
            });
            vm.code(|a| a.jmp_far(0x33, TARGET));
            let exit = vm
                .exe
                .run(&mut vm.state, Duration::from_millis(200), &[])
                .unwrap();
            assert!(
                matches!(exit.reason, ExitReason::GuestEscape { kind: EscapeKind::HostSyscall, address, .. } if address == u64::from(TARGET) + 7),
                "{name}: {:?}",
                exit.reason
            );
            // Contained on the stub: the registers at the trap, EAX the call's number.
            assert_eq!(exit.escape_contained, executor_kind() == ExecutorKind::Stub);
            if exit.escape_contained {
                assert_eq!(vm.state.gprs[0], u64::from(nr), "{name}");
                assert_eq!(vm.state.rip, u64::from(TARGET) + 7, "{name}");
            }
        }
    }
}

both_executors! {
    #[test]
    fn int80_from_64bit_guest_code_is_caught() {
        let mut vm = Vm::new(Mode::TwoLevel);
        code64(&mut vm, |a| {
            a.mov(eax, 1)?;
            a.int(0x80)
        });
        vm.code(|a| a.jmp_far(0x33, TARGET));
        expect_escape(&mut vm, EscapeKind::LongMode);
    }
}

/// Loads `sel` into segment register `sreg` (0 ES … 5 GS); returns the exit.
fn load_selector(sreg: usize, sel: u16) -> (Vm, ExitReason, Vec<u8>) {
    let mut vm = Vm::new(Mode::TwoLevel);
    let regs = [es, cs, ss, ds, fs, gs];
    let code = vm.code(|a| {
        a.mov(eax, u32::from(sel))?;
        a.mov(regs[sreg], ax)?;
        a.hlt()
    });
    let exit = vm.run();
    let reason = exit.reason;
    (vm, reason, code)
}

both_executors! {
    #[test]
    fn loads_of_each_host_selector_are_contained() {
        for sreg in [0usize, 2, 3, 4, 5] {
            for sel in [0x23u16, 0x2b, 0x33, 0x63, 0x6b, 0x73, 0x7b] {
                let (mut vm, reason, code) = load_selector(sreg, sel);
                let what = format!("sreg {sreg} <- {sel:#x}: {reason:?}");
                match reason {
                    // The load faulted: the emulator performs it with the guest's tables.
                    ExitReason::SegmentLoad => assert_eq!(vm.state.rip, u64::from(CODE + 5), "{what}"),
                    // The load succeeded natively (a host GDT descriptor that CPL 3 may load): the
                    // register is reported as loaded and flagged, for the emulator to reload it
                    // from the guest's tables (and stop if the guest could not have loaded it).
                    ExitReason::Privileged => {
                        assert_eq!(vm.state.rip, u64::from(CODE + code.len() as u32 - 1), "{what}");
                        assert_eq!(vm.state.segs[sreg].selector, sel, "{what}");
                        assert_eq!(vm.state.segs[sreg].flags, SEG_NOT_INSTALLED, "{what}");
                        assert!([0x23, 0x2b, 0x33, 0x7b].contains(&sel), "{what}");
                    }
                    other => panic!("{what}: unexpected {other:?}"),
                }
                if [0x63, 0x6b, 0x73].contains(&sel) {
                    assert_eq!(
                        reason,
                        ExitReason::SegmentLoad,
                        "TLS slots must fault: {what}"
                    );
                }
                // Still alive and usable: re-enter with the state as the emulator would restore it.
                vm.state.segs[sreg] = if sreg == 2 {
                    host_driver::Segment::flat_data(DS_SEL)
                } else {
                    host_driver::Segment::null(0)
                };
                vm.state.rip = u64::from(CODE + code.len() as u32 - 1);
                assert_eq!(vm.run().reason, ExitReason::Privileged, "{what}");
            }
        }
    }
}

both_executors! {
    #[test]
    fn guest_ldt_selectors_fault_natively_instead_of_aliasing_the_mirror() {
        // The mirror sits at LDT indices 448..511; the guest's own LDT selectors (here the TI=1
        // twins of its GDT selectors) find empty slots and exit before the load, for Bochs.
        for sreg in [0usize, 3, 4, 5] {
            for sel in [0x07u16, 0x37, 0x77, 0x7f] {
                let (vm, reason, _) = load_selector(sreg, sel);
                assert_eq!(reason, ExitReason::SegmentLoad, "sreg {sreg} <- {sel:#x}");
                assert_eq!(
                    vm.state.rip,
                    u64::from(CODE + 5),
                    "sreg {sreg} <- {sel:#x}: at the load"
                );
            }
        }
    }
}

both_executors! {
    #[test]
    fn far_jump_to_host_32bit_code_selector_is_reported_for_a_reload() {
        let mut vm = Vm::new(Mode::TwoLevel);
        vm.ram.write(CODE_PHYS + u64::from(TARGET - CODE), &[0xf4]);
        vm.code(|a| a.jmp_far(0x23, TARGET));
        let exit = vm.run();
        assert_eq!(exit.reason, ExitReason::Privileged);
        assert_eq!(vm.state.rip, u64::from(TARGET));
        assert_eq!(vm.state.segs[1].selector, 0x23);
        assert_eq!(vm.state.segs[1].flags, SEG_NOT_INSTALLED);
    }
}

both_executors! {
    #[test]
    fn host_system_calls_from_compat_mode_never_run() {
        // exit(0), kill(getppid... ) numbers: none of them may run on the host.
        for nr in [1u32, 2, 11, 37, 120] {
            let mut vm = Vm::new(Mode::TwoLevel);
            let code = vm.code(|a| {
                a.mov(eax, nr)?;
                a.mov(ebx, 0)?;
                a.int(0x80)?;
                a.push(eax)?;
                a.pop(eax)?;
                a.mov(eax, nr)?;
                a.syscall()?;
                a.mov(eax, nr)?;
                a.sysenter()
            });
            let exit = vm.run();
            assert_eq!(exit.reason, ExitReason::SoftwareInterrupt { vector: 0x80 });
            assert_eq!(vm.state.gprs[0], u64::from(nr));
            vm.state.rip += 2;
            let reason = vm.run().reason;
            assert!(
                matches!(
                    reason,
                    ExitReason::SystemCall { .. } | ExitReason::InvalidOpcode
                ),
                "{:?} {:x?}",
                reason,
                vm.state
            );
            vm.state.rip = u64::from(CODE + offset_of_bytes(&code, &[0x0f, 0x34]) - 5);
            let exit = vm.run();
            assert!(
                matches!(
                    exit.reason,
                    ExitReason::SystemCall { .. } | ExitReason::InvalidOpcode
                ),
                "{:?}",
                exit.reason
            );
            // The executor is alive and well.
            assert!(vm
                .exe
                .apply_commands(&[host_driver::MmuCommand::FlushAll])
                .is_ok());
        }
    }
}

both_executors! {
    #[test]
    fn allowed_host_syscall_reporting_4g_from_the_last_guest_bytes_is_trapped() {
        // `syscall` in the last two bytes below 4 GiB reports the address after it, 4 GiB
        // exactly. Its number (sched_yield) is on the executor's allowlist: seccomp must still
        // trap it as a guest's, not let it run and then catch the fetch at 4 GiB.
        const TOP: u32 = 0xffff_f000;
        const TOP_PHYS: u64 = DATA_PHYS + 0x8000;
        let mut vm = Vm::new(Mode::TwoLevel);
        vm.map(TOP, TOP_PHYS, URW);
        vm.ram.write(TOP_PHYS, &[0xc3]); // ret, to mirror the page executable from 32-bit code
        vm.ram.write(TOP_PHYS + 0xffe, &[0x0f, 0x05]);
        vm.code(|a| {
            a.call(u64::from(TOP))?;
            a.mov(eax, 24)?; // sched_yield
            a.jmp_far(0x33, 0xffff_fffe)
        });
        let exit = vm
            .exe
            .run(&mut vm.state, Duration::from_millis(200), &[])
            .unwrap();
        assert!(
            matches!(
                exit.reason,
                ExitReason::GuestEscape {
                    kind: EscapeKind::HostSyscall,
                    address: 0x1_0000_0000,
                    ..
                }
            ),
            "{:?}",
            exit.reason
        );
    }
}

/// What guest code sees in 64-bit mode: written by [`probe_64bit_view`] into DATA.
struct View64 {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15.
    gprs: [u64; 16],
    rflags: u64,
    fs_base: u64,
    gs_base: u64,
    /// XSAVE64 image of the x87, SSE and AVX(-512) components the host has.
    xsave: Vec<u8>,
}

const PROBE_RET: u32 = DATA + 0xa0;
const PROBE_XSAVE: u32 = DATA + 0x400;
const PROBE_XSAVE_LEN: usize = 0xc00;

/// Far-jumps from 32-bit guest code to the host's 64-bit selector, stores every register the
/// guest can read there (all 16 GPRs, RFLAGS, the FS/GS bases, an XSAVE64 image) into DATA,
/// far-returns to 32-bit code and stops at an HLT. Nothing notices the 64-bit excursion:
/// the pages it touches are mirrored from 32-bit code first, so no signal is taken in 64-bit
/// mode. Run twice, the second entry following a normal exit of the first.
fn probe_64bit_view(vm: &mut Vm) -> Vec<View64> {
    code64(vm, |a| {
        let regs = [
            rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
        ];
        for (i, r) in regs.into_iter().enumerate() {
            a.mov(qword_ptr(u64::from(DATA) + 8 * i as u64), r)?;
        }
        a.pushfq()?;
        a.pop(rax)?;
        a.mov(qword_ptr(u64::from(DATA) + 0x80), rax)?;
        a.rdfsbase(rax)?;
        a.mov(qword_ptr(u64::from(DATA) + 0x88), rax)?;
        a.rdgsbase(rax)?;
        a.mov(qword_ptr(u64::from(DATA) + 0x90), rax)?;
        a.xor(ecx, ecx)?;
        a.xgetbv()?;
        a.and(eax, 0xe7)?;
        a.xor(edx, edx)?;
        a.xsave64(ptr(u64::from(PROBE_XSAVE)))?;
        a.jmp(fword_ptr(u64::from(PROBE_RET)))
    });
    let ret_at = CODE + 0x80;
    vm.code_at(ret_at, |a| a.hlt());
    let code = vm.code(|a| {
        // Mirror DATA and the stack writable while in 32-bit mode (registers unchanged).
        a.mov(dword_ptr(PROBE_RET), ret_at)?;
        a.mov(word_ptr(PROBE_RET + 4), cs)?;
        a.push(eax)?;
        a.pop(eax)?;
        a.jmp_far(0x33, TARGET)
    });
    assert!(code.len() < 0x80);
    let entry = vm.state;
    let mut views = Vec::new();
    for _ in 0..2 {
        vm.ram.write(DATA_PHYS, &[0u8; 0x1000]);
        vm.state = entry;
        let exit = vm.run();
        assert_eq!(
            exit.reason,
            ExitReason::Privileged,
            "the HLT after the return"
        );
        assert_eq!(vm.state.rip, u64::from(ret_at));
        let q = |off: u64| vm.ram.read_u64(DATA_PHYS + off);
        let mut xsave = vec![0u8; PROBE_XSAVE_LEN];
        vm.ram
            .read(DATA_PHYS + u64::from(PROBE_XSAVE - DATA), &mut xsave);
        views.push(View64 {
            gprs: std::array::from_fn(|i| q(8 * i as u64)),
            rflags: q(0x80),
            fs_base: q(0x88),
            gs_base: q(0x90),
            xsave,
        });
    }
    views
}

fn check_64bit_view(v: &View64, entry: &host_driver::GuestState, fs_base: u64, gs_base: u64) {
    for (i, &g) in entry.gprs.iter().enumerate() {
        assert_eq!(v.gprs[i], g, "GPR {i}: upper half must be zero");
    }
    assert_eq!(v.gprs[8..], [0; 8], "R8-R15");
    assert!(v.rflags <= u64::from(u32::MAX), "RFLAGS {:#x}", v.rflags);
    assert_eq!(v.fs_base, fs_base, "FS base: {:#x}", v.fs_base);
    assert_eq!(v.gs_base, gs_base, "GS base: {:#x}", v.gs_base);
    // x87 and SSE: the last instruction and data pointers (64-bit in an XSAVE64 image) hold
    // no address above 4 GiB; ST0-7 and all 16 XMM registers are the guest image's.
    let q = |off: usize| u64::from_le_bytes(v.xsave[off..off + 8].try_into().unwrap());
    assert!(q(8) <= u64::from(u32::MAX), "FIP {:#x}", q(8));
    assert!(q(16) <= u64::from(u32::MAX), "FDP {:#x}", q(16));
    assert_eq!(v.xsave[32..416], entry.xsave.0[32..416], "ST0-7, XMM0-15");
    // Components beyond the guest's XCR0 are in their initial state (the buffer was zeroed,
    // so no word of theirs may hold an address either).
    let bv = q(512);
    assert_eq!(bv & !entry.xcr0, 0, "XSTATE_BV {bv:#x}");
    for off in (576..v.xsave.len()).step_by(8) {
        assert!(
            q(off) <= u64::from(u32::MAX),
            "XSAVE64 word at {off:#x}: {:#x}",
            q(off)
        );
    }
}

fn probe_entry_state(vm: &mut Vm) {
    vm.state.gprs[..8].copy_from_slice(&[
        0xffff_ffff,
        0x8765_4321,
        0xdead_beef,
        0x1234_5678,
        u64::from(STACK_TOP - 16),
        0xffff_fff0,
        0x8000_0000,
        0x7fff_ffff,
    ]);
}

both_executors! {
    #[test]
    fn far_jump_to_64bit_and_back_sees_no_host_pointer_with_null_fs_gs() {
        // FS and GS hold null selectors. Loading one in 64-bit mode need not clear the segment
        // base (AMD CPUs without NullSelectorClearsBase keep the old one, here the executor's
        // thread pointer): the entry must set both bases itself, to 0.
        let mut vm = Vm::new(Mode::TwoLevel);
        probe_entry_state(&mut vm);
        for sel in [0u16, 3] {
            vm.state.segs[4] = host_driver::Segment::null(sel);
            vm.state.segs[5] = host_driver::Segment::null(sel);
            let entry = vm.state;
            for v in probe_64bit_view(&mut vm) {
                check_64bit_view(&v, &entry, 0, 0);
            }
        }
    }
}

both_executors! {
    #[test]
    fn far_jump_to_64bit_and_back_sees_the_guest_fs_gs_bases() {
        let mut vm = Vm::new(Mode::TwoLevel);
        probe_entry_state(&mut vm);
        let mut fs_seg = host_driver::Segment::flat_data(0x2b);
        fs_seg.base = 0x1234_5000;
        let mut gs_seg = host_driver::Segment::flat_data(0x33);
        gs_seg.base = 0xfedc_b000;
        vm.state.segs[4] = fs_seg;
        vm.state.segs[5] = gs_seg;
        let entry = vm.state;
        for v in probe_64bit_view(&mut vm) {
            check_64bit_view(&v, &entry, 0x1234_5000, 0xfedc_b000);
        }
        // And null again after non-null bases were in use.
        vm.state.segs[4] = host_driver::Segment::null(0);
        vm.state.segs[5] = host_driver::Segment::null(0);
        let entry = vm.state;
        for v in probe_64bit_view(&mut vm) {
            check_64bit_view(&v, &entry, 0, 0);
        }
    }
}
