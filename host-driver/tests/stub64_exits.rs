//! Exits of 64-bit code on the stub (issue 15, step 3), each with the exact state before the
//! instruction that ended the run (R8..R15 and upper halves included): SYSCALL (the guest
//! thread's filter traps it; RIP rewound over 0F 05, the full original RAX from the kernel's
//! rollback), INT 0x80 (the host's IA-32 call, rewound over CD 80), INT n and privileged
//! instructions by the decoder at bitness 64, INT3, #UD, #DE, RDTSC, segment loads, x87 and
//! SIMD exceptions, single steps.

use host_driver::{ExitReason, GuestState, SyscallInstruction};
use iced_x86::code_asm::*;
use test_support::vm64::layout64::*;
use test_support::vm64::*;

/// An exit, the bytes of the instruction behind it, and the code that emits that instruction.
type Case = (ExitReason, &'static [u8], Emit);
type Emit = fn(&mut CodeAssembler) -> Result<(), IcedError>;

/// Every register but RSP wide and distinct.
fn wide_registers(vm: &mut Vm64) {
    for i in 0..16 {
        if i != 4 {
            vm.state.gprs[i] = (0x0102_0304_0000_0000 * (i as u64 + 1)) | (0x100 + i as u64);
        }
    }
}

/// Runs to the exit and checks the state is `before` but at `rip`.
fn assert_exact(vm: &Vm64, before: &GuestState, rip: u64) {
    assert_eq!(vm.state.rip, rip, "RIP");
    assert_eq!(vm.state.gprs, before.gprs, "registers");
    assert_eq!(vm.state.rflags, before.rflags, "RFLAGS");
}

#[test]
fn syscall_is_an_exact_exit_with_the_full_rax() {
    let mut vm = Vm64::new();
    let bytes = vm.code(|a| {
        a.nop()?;
        a.syscall()?;
        a.hlt()
    });
    wide_registers(&mut vm);
    vm.state.gprs[0] = 0xfedc_ba98_0000_0027; // a number with an upper half: still all of RAX
    let before = vm.state;
    let exit = vm.run();
    assert_eq!(
        exit.reason,
        ExitReason::SystemCall {
            instruction: SyscallInstruction::Syscall
        }
    );
    let at = CODE + offset_in(&bytes, &[0x0f, 0x05]);
    assert_eq!(vm.state.rip, at, "rewound over 0F 05");
    // RCX and R11 hold what the CPU's SYSCALL put there, as Bochs's re-executed SYSCALL
    // puts there again: the only registers that differ.
    assert!(exit.ecx_clobbered);
    assert_eq!(vm.state.gprs[1], at + 2, "RCX: the return address");
    let mut expect = before.gprs;
    expect[1] = vm.state.gprs[1];
    expect[11] = vm.state.gprs[11];
    assert_eq!(vm.state.gprs, expect, "RAX whole, the rest as before");
    assert_eq!(
        vm.state.gprs[11] & 0xfff,
        before.rflags & 0xfff,
        "R11: RFLAGS"
    );
    assert_eq!(vm.state.rflags, before.rflags);
}

#[test]
fn int_0x80_from_64_bit_code_rewinds_over_cd_80() {
    let mut vm = Vm64::new();
    let bytes = vm.code(|a| {
        a.nop()?;
        a.int(0x80)?;
        a.hlt()
    });
    wide_registers(&mut vm);
    // The IA-32 call keeps EAX only (the host's entry zero-extends it; a Linux guest's does
    // too): a number without an upper half comes back exactly.
    vm.state.gprs[0] = 4;
    let before = vm.state;
    let exit = vm.run();
    assert_eq!(exit.reason, ExitReason::SoftwareInterrupt { vector: 0x80 });
    assert_exact(&vm, &before, CODE + offset_in(&bytes, &[0xcd, 0x80]));

    // RAX's upper half is lost on the way (documented): reported zero.
    vm.state = before;
    vm.state.gprs[0] = 0xffff_0000_0000_0004;
    assert_eq!(
        vm.run().reason,
        ExitReason::SoftwareInterrupt { vector: 0x80 }
    );
    assert_eq!(vm.state.gprs[0], 4);
}

#[test]
fn int_n_int3_and_privileged_instructions_exit_at_the_instruction() {
    let mut vm = Vm64::new();
    // INT 0x81: #GP natively, named by the decoder at bitness 64 (a REX prefix before the
    // next instruction must not confuse it).
    let cases: [Case; 5] = [
        (
            ExitReason::SoftwareInterrupt { vector: 0x81 },
            &[0xcd, 0x81],
            |a| a.int(0x81),
        ),
        (ExitReason::Breakpoint, &[0xcc], |a| a.int3()),
        (ExitReason::Privileged, &[0x0f, 0x22], |a| a.mov(cr0, rax)),
        (ExitReason::Privileged, &[0x0f, 0x01, 0xf8], |a| a.swapgs()),
        (ExitReason::Rdtsc { rdtscp: false }, &[0x0f, 0x31], |a| {
            a.rdtsc()
        }),
    ];
    for (want, insn, emit) in cases {
        let bytes = vm.code(|a| {
            a.mov(r9, r10)?;
            emit(a)?;
            a.mov(r8, 1u64)?;
            a.hlt()
        });
        wide_registers(&mut vm);
        vm.state.gprs[9] = vm.state.gprs[10];
        let before = vm.state;
        let exit = vm.run();
        assert_eq!(exit.reason, want, "{insn:x?}");
        assert_exact(&vm, &before, CODE + offset_in(&bytes, insn));
    }
}

#[test]
fn ud_de_and_segment_loads_exit_with_the_state_before() {
    let mut vm = Vm64::new();
    let cases: [Case; 3] = [
        (ExitReason::InvalidOpcode, &[0x0f, 0x0b], |a| a.ud2()),
        (ExitReason::DivideError, &[0x49, 0xf7, 0xf3], |a| a.div(r11)),
        (ExitReason::SegmentLoad, &[0x8e, 0xd8], |a| a.mov(ds, eax)),
    ];
    for (want, insn, emit) in cases {
        let bytes = vm.code(|a| {
            a.nop()?;
            emit(a)?;
            a.hlt()
        });
        wide_registers(&mut vm);
        vm.state.gprs[11] = 0; // the divisor
        vm.state.gprs[0] = 0x1234; // a selector beyond the host's GDT and no LDT mirror
        let before = vm.state;
        let exit = vm.run();
        assert_eq!(exit.reason, want, "{insn:x?}");
        assert_exact(&vm, &before, CODE + offset_in(&bytes, insn));
    }
}

#[test]
fn x87_and_simd_exceptions_exit_at_the_faulting_instruction() {
    let mut vm = Vm64::new();
    // SSE: MXCSR with divide-by-zero unmasked, then 1.0 / 0.0.
    vm.ram
        .write(DATA_PHYS, &(0x1f80u32 & !(1 << 9)).to_le_bytes());
    vm.ram.write(DATA_PHYS + 4, &1.0f32.to_le_bytes());
    let bytes = vm.code(|a| {
        a.ldmxcsr(dword_ptr(rbx))?;
        a.movss(xmm0, dword_ptr(rbx + 4))?;
        a.xorps(xmm1, xmm1)?;
        a.divss(xmm0, xmm1)?;
        a.hlt()
    });
    vm.state.gprs[3] = DATA;
    let exit = vm.run();
    assert_eq!(exit.reason, ExitReason::SimdException);
    assert_eq!(vm.state.rip, CODE + offset_in(&bytes, &[0xf3, 0x0f, 0x5e]));
    assert_eq!(
        vm.state.xsave.mxcsr() & 0x3f,
        4,
        "ZE set, as the CPU does before #XM"
    );

    // x87: zero-divide unmasked; the pending exception is taken at the next FWAIT.
    let mut vm = Vm64::new();
    vm.ram.write(DATA_PHYS, &0x037bu16.to_le_bytes());
    let bytes = vm.code(|a| {
        a.fninit()?;
        a.fldcw(word_ptr(rbx))?;
        a.fld1()?;
        a.fldz()?;
        a.fdivp(st1, st0)?;
        a.wait()?;
        a.hlt()
    });
    vm.state.gprs[3] = DATA;
    let exit = vm.run();
    assert_eq!(exit.reason, ExitReason::X87Exception);
    assert_eq!(vm.state.rip, CODE + offset_in(&bytes, &[0x9b, 0xf4]));
}

#[test]
fn a_single_step_set_by_64_bit_code_exits_after_one_instruction() {
    let mut vm = Vm64::new();
    let bytes = vm.code(|a| {
        a.pushfq()?;
        a.or(qword_ptr(rsp), 0x100)?;
        a.popfq()?;
        a.mov(r12, 7u64)?;
        a.hlt()
    });
    let exit = vm.run();
    assert_eq!(exit.reason, ExitReason::SingleStep);
    assert_eq!(vm.state.gprs[12], 7);
    assert_eq!(vm.state.rip, CODE + offset_in(&bytes, &[0xf4]));
    assert_ne!(vm.state.rflags & 0x100, 0, "TF stays set");
}

/// A call into the vsyscall page (the host emulates it, then its seccomp trap comes after the
/// emulated `ret`): rewound to the fetch at the entry point, with the return address on the
/// guest's stack, and reported as the guest's fetch #PF there (its tables do not map the
/// page: its kernel emulates the vsyscall).
#[test]
fn a_vsyscall_call_is_the_guest_s_fetch_fault_at_the_entry_point() {
    for entry in [
        0xffff_ffff_ff60_0000u64,
        0xffff_ffff_ff60_0400,
        0xffff_ffff_ff60_0800,
    ] {
        let mut vm = Vm64::new();
        let bytes = vm.code(|a| {
            a.mov(rax, entry)?;
            a.call(rax)?;
            a.hlt()
        });
        wide_registers(&mut vm);
        let before = vm.state;
        let exit = vm.run();
        assert_eq!(
            exit.reason,
            ExitReason::PageFault {
                linear: entry,
                access: host_driver::Access::Fetch,
                error_code: 0x14,
            },
            "{entry:#x}"
        );
        let pushed_at = before.gprs[4] - 8;
        assert_eq!(vm.state.rip, entry);
        assert_eq!(vm.state.gprs[4], pushed_at, "the CALL's push");
        let ret = CODE + offset_in(&bytes, &[0xf4]);
        let slot = STACK_PHYS + (pushed_at - (STACK_TOP - 4096));
        assert_eq!(
            vm.ram.read_u64(slot),
            ret,
            "the return address on the guest's stack"
        );
        let mut expect = before.gprs;
        expect[0] = vm.state.gprs[0]; // lost: the vsyscall's result anyway
        expect[4] = pushed_at;
        assert_eq!(vm.state.gprs, expect, "{entry:#x}");
    }
}

/// A jump into the vsyscall page off its entry points (the host's emulation refuses it) is the
/// guest's fetch too.
#[test]
fn a_jump_into_the_vsyscall_page_off_its_entries_is_the_guest_s_fetch_fault() {
    let mut vm = Vm64::new();
    let target = 0xffff_ffff_ff60_0010u64;
    vm.code(|a| {
        a.mov(rax, target)?;
        a.jmp(rax)
    });
    wide_registers(&mut vm);
    vm.state.gprs[0] = 0;
    let exit = vm.run();
    assert_eq!(
        exit.reason,
        ExitReason::PageFault {
            linear: target,
            access: host_driver::Access::Fetch,
            error_code: 0x14,
        }
    );
    assert_eq!(vm.state.rip, target);
    assert_eq!(vm.state.gprs[0], target);
}

/// SYSENTER in 64-bit code: #UD on AMD (an exact exit); on Intel the host's compat fast-syscall
/// path, which discards RIP (the eip_lost stop, as for 32-bit code).
#[test]
fn sysenter_in_64_bit_code_is_ud_on_amd_and_the_eip_lost_stop_on_intel() {
    let mut vm = Vm64::new();
    let bytes = vm.code(|a| {
        a.nop()?;
        a.sysenter()?;
        a.hlt()
    });
    wide_registers(&mut vm);
    let before = vm.state;
    let exit = vm.run();
    if test_support::cpuinfo::is_amd() {
        assert_eq!(exit.reason, ExitReason::InvalidOpcode);
        assert_exact(&vm, &before, CODE + offset_in(&bytes, &[0x0f, 0x34]));
    } else {
        assert_eq!(
            exit.reason,
            ExitReason::SystemCall {
                instruction: SyscallInstruction::Sysenter
            }
        );
        assert!(
            exit.eip_lost && exit.ecx_clobbered,
            "64-bit code's: R8..R15 and the upper halves are lost too"
        );
    }
}

/// CPUID exits where the launcher turned CPUID faulting on (else native code reads the host's,
/// as for 32-bit code); RDTSCP exits as RDTSC does.
#[test]
fn cpuid_and_rdtscp_exit_at_the_instruction() {
    let mut vm = Vm64::new();
    let bytes = vm.code(|a| {
        a.nop()?;
        a.rdtscp()?;
        a.hlt()
    });
    wide_registers(&mut vm);
    let before = vm.state;
    assert_eq!(vm.run().reason, ExitReason::Rdtsc { rdtscp: true });
    assert_exact(&vm, &before, CODE + offset_in(&bytes, &[0x0f, 0x01, 0xf9]));
    if !vm.stub.cpuid_faulting() {
        return;
    }
    let bytes = vm.code(|a| {
        a.nop()?;
        a.cpuid()?;
        a.hlt()
    });
    wide_registers(&mut vm);
    let before = vm.state;
    assert_eq!(vm.run().reason, ExitReason::Cpuid);
    assert_exact(&vm, &before, CODE + offset_in(&bytes, &[0x0f, 0xa2]));
}

/// A jump to a non-canonical address: a #GP at the jump (the exit validation would refuse a
/// non-canonical RIP as no honest stub's), an exit the emulator takes.
#[test]
fn a_jump_to_a_non_canonical_address_is_a_general_protection_exit_at_the_jump() {
    let mut vm = Vm64::new();
    let bytes = vm.code(|a| {
        a.mov(rax, 0x8000_0000_0000u64)?;
        a.jmp(rax)
    });
    let before = vm.state;
    let exit = vm.run();
    assert_eq!(exit.reason, ExitReason::GeneralProtection { error_code: 0 });
    assert_eq!(vm.state.rip, CODE + offset_in(&bytes, &[0xff, 0xe0]));
    assert_eq!(vm.state.gprs[0], 0x8000_0000_0000);
    assert_eq!(vm.state.gprs[1..], before.gprs[1..]);
}
