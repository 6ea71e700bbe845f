//! One test per exit reason, asserting the exact state before the instruction.

use host_driver::{ExitReason, GuestState};
use iced_x86::code_asm::*;
use test_support::vm::*;

/// Runs `vm` and checks the exit reason and that EIP points at `at`.
fn expect(vm: &mut Vm, reason: ExitReason, at: u32) -> GuestState {
    let exit = vm.run();
    assert_eq!(exit.reason, reason, "exit {:?}", exit.reason);
    assert!(exit.native_time.as_nanos() > 0);
    assert_eq!(vm.state.eip, at, "EIP {:#x} != {:#x}", vm.state.eip, at);
    vm.state
}

#[test]
fn hlt_exits_with_exact_state() {
    let mut vm = Vm::new(Mode::TwoLevel);
    let code = vm.code(|a| {
        a.mov(eax, 0x1111_1111u32)?;
        a.mov(ecx, 0x2222_2222u32)?;
        a.mov(edx, 0x3333_3333u32)?;
        a.mov(ebx, 0x4444_4444u32)?;
        a.mov(ebp, 0x5555_5555u32)?;
        a.mov(esi, 0x6666_6666u32)?;
        a.mov(edi, 0x7777_7777u32)?;
        a.push(0x1234_5678u32)?;
        a.stc()?;
        a.hlt()?;
        a.nop()
    });
    let before = vm.state;
    let st = expect(
        &mut vm,
        ExitReason::Privileged,
        CODE + code.len() as u32 - 2,
    );
    assert_eq!(
        st.gprs,
        [
            0x1111_1111,
            0x2222_2222,
            0x3333_3333,
            0x4444_4444,
            STACK_TOP - 20,
            0x5555_5555,
            0x6666_6666,
            0x7777_7777
        ]
    );
    assert_eq!(st.eflags & 1, 1, "CF set by STC");
    assert_eq!(st.eflags & 0x200, 0x200);
    assert_eq!(
        st.segs, before.segs,
        "segments unchanged and translated back"
    );
    assert_eq!(
        vm.ram.read_u32(STACK_PHYS + 4096 - 20),
        0x1234_5678,
        "push went to guest RAM"
    );
    assert_eq!(st.xsave.0[..512], before.xsave.0[..512]);
}

#[test]
fn reentry_continues_after_emulated_instruction() {
    let mut vm = Vm::new(Mode::TwoLevel);
    vm.code(|a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.inc(eax)?;
        a.hlt()?;
        a.jmp(top)
    });
    for i in 1..=100u32 {
        let exit = vm.run();
        assert_eq!(exit.reason, ExitReason::Privileged);
        assert_eq!(vm.state.gprs[0], i);
        assert_eq!(vm.state.eip, CODE + 1);
        vm.state.eip += 1; // "emulate" HLT
    }
}

/// Assembles `f` at CODE, runs, and expects `reason` at the instruction whose bytes are
/// `marker` (searched in the assembled code).
fn check(
    mode: Mode,
    marker: &[u8],
    reason: ExitReason,
    f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
) -> Vm {
    let mut vm = Vm::new(mode);
    let code = vm.code(f);
    let at = CODE + offset_of_bytes(&code, marker);
    expect(&mut vm, reason, at);
    vm
}

#[test]
fn page_fault_not_present_read() {
    let vm = check(
        Mode::TwoLevel,
        &[0xa1],
        ExitReason::PageFault {
            linear: 0x0090_0010,
            access: host_driver::Access::Read,
            error_code: 4,
        },
        |a| {
            a.mov(ebx, 7)?;
            a.mov(eax, dword_ptr(0x0090_0010))?;
            a.hlt()
        },
    );
    assert_eq!(vm.state.gprs[3], 7);
}

#[test]
fn page_fault_write_to_read_only_page() {
    let mut vm = Vm::new(Mode::Pae);
    vm.map(DATA, DATA_PHYS, P | US);
    let code = vm.code(|a| {
        a.mov(eax, dword_ptr(DATA))?; // read works
        a.mov(dword_ptr(DATA + 4), eax)?;
        a.hlt()
    });
    let at = CODE + 5;
    assert_eq!(code[5], 0xa3);
    expect(
        &mut vm,
        ExitReason::PageFault {
            linear: DATA + 4,
            access: host_driver::Access::Write,
            error_code: 7,
        },
        at,
    );
}

#[test]
fn page_fault_supervisor_page() {
    let mut vm = Vm::new(Mode::TwoLevel);
    vm.map(DATA, DATA_PHYS, P | RW | A | D);
    vm.code(|a| {
        a.mov(eax, dword_ptr(DATA))?;
        a.hlt()
    });
    expect(
        &mut vm,
        ExitReason::PageFault {
            linear: DATA,
            access: host_driver::Access::Read,
            error_code: 5,
        },
        CODE,
    );
}

#[test]
fn page_fault_fetch_from_nx_page() {
    let mut vm = Vm::new(Mode::Pae);
    vm.map(DATA, DATA_PHYS, URW | NX);
    vm.ram.write(DATA_PHYS, &[0xf4]);
    vm.code(|a| {
        a.mov(eax, DATA)?;
        a.jmp(eax)
    });
    expect(
        &mut vm,
        ExitReason::PageFault {
            linear: DATA,
            access: host_driver::Access::Fetch,
            error_code: 0x15,
        },
        DATA,
    );
}

#[test]
fn general_protection_on_segment_limit() {
    let mut vm = Vm::new(Mode::TwoLevel);
    // DS: another GDT entry, byte-granular limit 0xfff.
    vm.state.segs[3].selector = 0x2b;
    vm.state.segs[3].attr &= !(1 << 15);
    vm.state.segs[3].limit = 0xfff;
    let code = vm.code(|a| {
        a.mov(eax, dword_ptr(0x2000))?;
        a.hlt()
    });
    assert_eq!(code[0], 0xa1);
    expect(
        &mut vm,
        ExitReason::GeneralProtection { error_code: 0 },
        CODE,
    );
}

#[test]
fn invalid_opcode() {
    check(
        Mode::TwoLevel,
        &[0x0f, 0x0b],
        ExitReason::InvalidOpcode,
        |a| {
            a.nop()?;
            a.ud2()
        },
    );
}

#[test]
fn divide_error() {
    let vm = check(
        Mode::TwoLevel,
        &[0xf7, 0xf1],
        ExitReason::DivideError,
        |a| {
            a.mov(eax, 100)?;
            a.xor(edx, edx)?;
            a.xor(ecx, ecx)?;
            a.div(ecx)?;
            a.hlt()
        },
    );
    assert_eq!(vm.state.gprs[0], 100);
}

#[test]
fn x87_exception_at_waiting_instruction() {
    let vm = check(Mode::TwoLevel, &[0x9b], ExitReason::X87Exception, |a| {
        a.push(0x037bu32)?; // unmask ZE
        a.fninit()?;
        a.fldcw(word_ptr(esp))?;
        a.fld1()?;
        a.fldz()?;
        a.fdivp(st1, st0)?;
        a.wait()?;
        a.hlt()
    });
    let fsw = u16::from_le_bytes([vm.state.xsave.0[2], vm.state.xsave.0[3]]);
    assert_eq!(fsw & 0x84, 0x84, "ZE and ES pending in FSW {fsw:#x}");
}

#[test]
fn simd_exception() {
    let vm = check(
        Mode::TwoLevel,
        &[0xf3, 0x0f, 0x5e],
        ExitReason::SimdException,
        |a| {
            a.push(0x1d80u32)?; // unmask ZM
            a.ldmxcsr(dword_ptr(esp))?;
            a.push(0x3f80_0000u32)?; // 1.0f
            a.movss(xmm0, dword_ptr(esp))?;
            a.xorps(xmm1, xmm1)?;
            a.divss(xmm0, xmm1)?;
            a.hlt()
        },
    );
    // The hardware sets the flag of an unmasked exception before raising #XM (the destination
    // is unchanged): Bochs sees the same MXCSR that a real #XM shows.
    assert_eq!(vm.state.xsave.mxcsr() & 0xffff, 0x1d84);
}

#[test]
fn breakpoint_int3() {
    check(Mode::TwoLevel, &[0xcc], ExitReason::Breakpoint, |a| {
        a.nop()?;
        a.int3()
    });
}

#[test]
fn int_n_and_int_3_and_into() {
    check(
        Mode::TwoLevel,
        &[0xcd, 0x21],
        ExitReason::SoftwareInterrupt { vector: 0x21 },
        |a| {
            a.nop()?;
            a.int(0x21)
        },
    );
    check(
        Mode::TwoLevel,
        &[0xcd, 0x03],
        ExitReason::SoftwareInterrupt { vector: 3 },
        |a| {
            a.nop()?;
            a.int(3)
        },
    );
    let vm = check(Mode::TwoLevel, &[0xce], ExitReason::Overflow, |a| {
        a.mov(al, 0x7f)?;
        a.add(al, 1)?;
        a.into()
    });
    assert_ne!(vm.state.eflags & 0x800, 0, "OF set");
}

#[test]
fn int_0x80_traps_with_eax_intact() {
    let vm = check(
        Mode::TwoLevel,
        &[0xcd, 0x80],
        ExitReason::SoftwareInterrupt { vector: 0x80 },
        |a| {
            a.mov(eax, 20)?; // getpid
            a.mov(ebx, 0x1234)?;
            a.int(0x80)?;
            a.hlt()
        },
    );
    assert_eq!(vm.state.gprs[0], 20);
    assert_eq!(vm.state.gprs[3], 0x1234);
}

/// SYSCALL from compatibility mode on AMD goes through the host kernel's compat fast-syscall
/// path, which discards EIP and ECX before seccomp traps it: the exit says so, and every other
/// register is exact (EBP included, recovered from the kernel's frame).
#[test]
fn syscall_instruction() {
    if !cpuinfo::is_amd() {
        return; // SYSCALL is #UD outside 64-bit mode on Intel: covered by invalid_opcode.
    }
    let mut vm = Vm::new(Mode::TwoLevel);
    vm.code(|a| {
        a.mov(eax, 20)?;
        a.mov(ebx, 0x11)?;
        a.mov(edx, 0x55)?;
        a.mov(ebp, 0x66)?;
        a.mov(esi, 0x77)?;
        a.mov(edi, 0x88)?;
        a.push(eax)?; // the kernel's compat path reads [ESP]: make sure it is mapped
        a.pop(eax)?;
        a.syscall()?;
        a.hlt()
    });
    let before = vm.state;
    let exit = vm.run();
    assert_eq!(
        exit.reason,
        ExitReason::SystemCall {
            instruction: host_driver::SyscallInstruction::Syscall
        }
    );
    assert!(exit.ecx_clobbered && exit.eip_lost);
    assert_eq!(
        vm.state.gprs,
        [20, 0, 0x55, 0x11, STACK_TOP - 16, 0x66, 0x77, 0x88]
    );
    assert_eq!(vm.state.segs, before.segs);
}

#[test]
fn sysenter_instruction() {
    let mut vm = Vm::new(Mode::TwoLevel);
    let code = vm.code(|a| {
        a.mov(eax, 20)?;
        a.sysenter()?;
        a.hlt()
    });
    let at = CODE + offset_of_bytes(&code, &[0x0f, 0x34]);
    let exit = vm.run();
    if cpuinfo::is_amd() {
        assert_eq!(
            exit.reason,
            ExitReason::InvalidOpcode,
            "SYSENTER is #UD in compat mode on AMD"
        );
        assert_eq!(vm.state.eip, at);
    } else {
        assert_eq!(
            exit.reason,
            ExitReason::SystemCall {
                instruction: host_driver::SyscallInstruction::Sysenter
            }
        );
    }
}

#[test]
fn rdtsc_and_rdtscp() {
    check(
        Mode::TwoLevel,
        &[0x0f, 0x31],
        ExitReason::Rdtsc { rdtscp: false },
        |a| {
            a.nop()?;
            a.rdtsc()
        },
    );
    check(
        Mode::TwoLevel,
        &[0x0f, 0x01, 0xf9],
        ExitReason::Rdtsc { rdtscp: true },
        |a| {
            a.nop()?;
            a.rdtscp()
        },
    );
}

#[test]
fn cpuid_exits_where_the_host_has_cpuid_faulting() {
    let mut vm = Vm::new(Mode::TwoLevel);
    let code = vm.code(|a| {
        a.mov(eax, 0u32)?;
        a.mov(ecx, 0u32)?;
        a.cpuid()?;
        a.hlt()
    });
    let at = CODE + offset_of_bytes(&code, &[0x0f, 0xa2]);
    let faulting = cpuinfo::has_flag("cpuid_fault");
    assert_eq!(
        vm.exe.cpuid_faulting(),
        faulting,
        "executor vs /proc/cpuinfo"
    );
    let exit = vm.run();
    if faulting {
        assert_eq!(exit.reason, ExitReason::Cpuid);
        assert_eq!(vm.state.eip, at);
        assert_eq!(vm.state.gprs[0], 0, "CPUID did not run");
    } else {
        assert_eq!(exit.reason, ExitReason::Privileged);
        assert_eq!(vm.state.eip, at + 2);
        assert_ne!(
            vm.state.gprs[0], 0,
            "native CPUID returned the host's highest leaf"
        );
    }
}

#[test]
fn privileged_instructions() {
    type Gen = fn(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>;
    let cases: &[(&[u8], Gen)] = &[
        (&[0xfa], |a| a.cli()),
        (&[0xfb], |a| a.sti()),
        (&[0xec], |a| a.in_(al, dx)),
        (&[0xee], |a| a.out(dx, al)),
        (&[0xe6, 0x80], |a| a.out(0x80, al)),
        (&[0xf4], |a| a.hlt()),
        (&[0x0f, 0x22, 0xd8], |a| a.mov(cr3, eax)),
        (&[0x0f, 0x01, 0x10], |a| a.lgdt(dword_ptr(eax))),
        (&[0x0f, 0x30], |a| a.wrmsr()),
    ];
    for (marker, gen) in cases {
        check(Mode::TwoLevel, marker, ExitReason::Privileged, |a| {
            a.mov(eax, DATA)?;
            gen(a)
        });
    }
}

#[test]
fn segment_loads_and_far_transfers() {
    type Gen = fn(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>;
    let cases: &[(&[u8], Gen)] = &[
        // A host system descriptor (TSS, GDT index 8) and an empty LDT slot.
        (&[0x66, 0x8e, 0xd8], |a| {
            a.mov(eax, 0x43)?;
            a.mov(ds, ax)
        }),
        (&[0x66, 0x8e, 0xc0], |a| {
            a.mov(eax, 0x2f)?;
            a.mov(es, ax)
        }),
        (&[0x1f], |a| {
            a.push(0x43)?;
            a.pop(ds)
        }),
        (&[0x0f, 0xb4], |a| {
            a.mov(dword_ptr(DATA + 4), 0x43)?;
            a.lfs(eax, ptr(DATA))
        }),
        // A far jump / call to a guest selector not installed in the LDT (natively: host
        // kernel data, DPL 0).
        (&[0xea], |a| a.jmp_far(0x1b, CODE)),
        (&[0x9a], |a| a.call_far(0x1b, CODE)),
        (&[0xcb], |a| {
            a.push(0x1b)?;
            a.push(CODE)?;
            a.retf()
        }),
        (&[0xcf], |a| {
            a.pushfd()?;
            a.push(0x1b)?;
            a.push(CODE)?;
            a.iretd()
        }),
    ];
    for (marker, gen) in cases {
        check(Mode::TwoLevel, marker, ExitReason::SegmentLoad, gen);
    }
}

#[test]
fn budget_expires_in_infinite_loop() {
    let mut vm = Vm::new(Mode::TwoLevel);
    vm.code(|a| {
        a.mov(eax, 1)?;
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.jmp(l)
    });
    let exit = vm
        .exe
        .run(&mut vm.state, std::time::Duration::from_millis(20), &[])
        .unwrap();
    assert_eq!(exit.reason, ExitReason::BudgetExpired);
    assert!(exit.native_time >= std::time::Duration::from_millis(20));
    assert_eq!(vm.state.eip, CODE + 5);
    assert_eq!(vm.state.gprs[0], 1);
}

#[test]
fn alignment_check_and_icebp() {
    let vm = check(
        Mode::TwoLevel,
        &[0x8b, 0x44, 0x24, 0x01],
        ExitReason::OtherException {
            vector: 17,
            error_code: Some(0),
        },
        |a| {
            a.pushfd()?;
            a.or(dword_ptr(esp), 0x40000)?;
            a.popfd()?;
            a.mov(eax, dword_ptr(esp + 1))
        },
    );
    assert_ne!(vm.state.eflags & 0x40000, 0);
    check(
        Mode::TwoLevel,
        &[0xf1],
        ExitReason::OtherException {
            vector: 1,
            error_code: None,
        },
        |a| {
            a.nop()?;
            a.int1()
        },
    );
}

#[test]
fn page_zero_and_device_memory_need_emulation() {
    let mut vm = Vm::with_ram_map(Mode::TwoLevel, std::iter::once(0..0x00e0_0000).collect());
    vm.map(0, 0x5000, URW);
    vm.map(DATA, 0x00f0_0000, URW); // outside the plain-RAM map: "device memory"
    let code = vm.code(|a| {
        a.mov(eax, dword_ptr(0x10))?;
        a.mov(dword_ptr(DATA + 8), eax)?;
        a.hlt()
    });
    expect(
        &mut vm,
        ExitReason::NeedsEmulation {
            linear: 0x10,
            access: host_driver::Access::Read,
        },
        CODE,
    );
    vm.state.eip += 5;
    let at = CODE + offset_of_bytes(&code, &[0xa3]);
    expect(
        &mut vm,
        ExitReason::NeedsEmulation {
            linear: DATA + 8,
            access: host_driver::Access::Write,
        },
        at,
    );
}

/// Sets EFLAGS.TF with PUSHFD / OR / POPFD, as guest code does.
fn set_tf(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.pushfd()?;
    a.or(dword_ptr(esp), 0x100)?;
    a.popfd()
}

/// TF set natively by POPF: the instruction after the POPF runs with TF set and traps after
/// it (as without acceleration); the exit comes *after* that instruction, before the next.
#[test]
fn single_step_after_popf_sets_tf() {
    let mut vm = Vm::new(Mode::TwoLevel);
    let code = vm.code(|a| {
        set_tf(a)?;
        a.mov(eax, 0x1234_5678u32)?; // runs with TF set: single-step trap after it
        a.mov(ebx, 0x9abc_def0u32)?; // must not run
        a.hlt()
    });
    let at = CODE + offset_of_bytes(&code, &[0xbb, 0xf0, 0xde, 0xbc, 0x9a]);
    let entry_esp = vm.state.gprs[4];
    let st = expect(&mut vm, ExitReason::SingleStep, at);
    assert_eq!(st.gprs[0], 0x1234_5678, "the stepped instruction ran");
    assert_ne!(st.gprs[3], 0x9abc_def0, "the next one did not");
    assert_ne!(st.eflags & 0x100, 0, "TF stays set");
    assert_eq!(st.gprs[4], entry_esp, "stack as after the POPF");
}

/// The instruction after the POPF needs a demand fill first: the fill is invisible, the step
/// trap comes after the access, with the loaded value.
#[test]
fn single_step_over_a_demand_fill() {
    let mut vm = Vm::new(Mode::Pae);
    vm.map(DATA, DATA_PHYS, URW);
    vm.ram.write(DATA_PHYS + 8, &0x5151_1515u32.to_le_bytes());
    let code = vm.code(|a| {
        set_tf(a)?;
        a.mov(ecx, dword_ptr(DATA + 8))?;
        a.nop()?;
        a.hlt()
    });
    let at = CODE + offset_of_bytes(&code, &[0x90, 0xf4]);
    let st = expect(&mut vm, ExitReason::SingleStep, at);
    assert_eq!(st.gprs[1], 0x5151_1515);
}

/// The instruction after the POPF faults (guest-visible #PF): the fault wins, no step trap;
/// the state is before it with TF set, for the emulator to run it (and single-step it).
#[test]
fn fault_after_popf_sets_tf_is_reported_before_the_instruction() {
    let mut vm = Vm::new(Mode::TwoLevel);
    let code = vm.code(|a| {
        set_tf(a)?;
        a.mov(eax, dword_ptr(0x0090_0010))?;
        a.hlt()
    });
    let at = CODE + offset_of_bytes(&code, &[0xa1]);
    let st = expect(
        &mut vm,
        ExitReason::PageFault {
            linear: 0x0090_0010,
            access: host_driver::Access::Read,
            error_code: 4,
        },
        at,
    );
    assert_ne!(
        st.eflags & 0x100,
        0,
        "TF set, for the emulator's own single-step"
    );
}

/// With TF set, ICEBP and INT3 still exit as themselves (the host reports them as their own
/// traps, not as single steps), before the instruction and with TF set.
#[test]
fn icebp_and_int3_after_popf_sets_tf() {
    let vm = check(
        Mode::TwoLevel,
        &[0xf1],
        ExitReason::OtherException {
            vector: 1,
            error_code: None,
        },
        |a| {
            set_tf(a)?;
            a.int1()
        },
    );
    assert_ne!(vm.state.eflags & 0x100, 0);
    let vm = check(Mode::TwoLevel, &[0xcc], ExitReason::Breakpoint, |a| {
        set_tf(a)?;
        a.int3()
    });
    assert_ne!(vm.state.eflags & 0x100, 0);
}

/// `int 4` (CD 04) and INTO (CE) both trap with vector 4: each is reported at its own first
/// byte.
#[test]
fn int_4_is_not_into() {
    let vm = check(
        Mode::TwoLevel,
        &[0xcd, 0x04],
        ExitReason::SoftwareInterrupt { vector: 4 },
        |a| {
            a.mov(al, 0x7f)?;
            a.add(al, 1)?; // OF set: INTO would trap too
            a.int(4)
        },
    );
    assert_ne!(vm.state.eflags & 0x800, 0);
    check(
        Mode::TwoLevel,
        &[0xcd, 0x04],
        ExitReason::SoftwareInterrupt { vector: 4 },
        |a| {
            a.nop()?;
            a.int(4)
        },
    );
    // INTO right after a CD byte (the immediate of `mov al, 0xcd`).
    check(Mode::TwoLevel, &[0xce], ExitReason::Overflow, |a| {
        a.mov(al, 0x7f)?;
        a.add(al, 1)?;
        a.mov(al, 0xcd)?;
        a.into()
    });
}

/// ICEBP preceded by an 0xF1 byte, and ICEBP pairs: each exit is at its own F1, whatever RIP
/// the host reports for ICEBP.
#[test]
fn icebp_after_an_f1_byte_and_icebp_pairs() {
    let icebp = ExitReason::OtherException {
        vector: 1,
        error_code: None,
    };
    let mut vm = Vm::new(Mode::TwoLevel);
    let code = vm.code(|a| {
        a.mov(al, 0xf1)?;
        a.int1()?;
        a.hlt()
    });
    let at = CODE + offset_of_bytes(&code, &[0xb0, 0xf1, 0xf1]) + 2;
    expect(&mut vm, icebp, at);
    assert_eq!(vm.state.gprs[0] & 0xff, 0xf1);

    let mut vm = Vm::new(Mode::TwoLevel);
    let code = vm.code(|a| {
        a.nop()?;
        a.int1()?;
        a.int1()?;
        a.hlt()
    });
    let first = CODE + offset_of_bytes(&code, &[0xf1, 0xf1]);
    expect(&mut vm, icebp, first);
    vm.state.eip += 1; // "emulate" the first ICEBP
    expect(&mut vm, icebp, first + 1);
    vm.state.eip += 1;
    expect(&mut vm, ExitReason::Privileged, first + 2);
}
