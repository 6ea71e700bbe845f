//! Instructions the emulator performs: system calls, RDTSC/RDTSCP, CPUID, privileged ones,
//! segment loads and far transfers; and the budget timer.

use crate::*;

both_executors! {
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
            vm.state.gprs[..8],
            [20, 0, 0x55, 0x11, STACK_TOP - 16, 0x66, 0x77, 0x88].map(u64::from)
        );
        assert_eq!(vm.state.segs, before.segs);
    }
}

both_executors! {
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
            assert_eq!(vm.state.rip, u64::from(at));
        } else {
            assert_eq!(
                exit.reason,
                ExitReason::SystemCall {
                    instruction: host_driver::SyscallInstruction::Sysenter
                }
            );
        }
    }
}

both_executors! {
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
}

both_executors! {
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
            assert_eq!(vm.state.rip, u64::from(at));
            assert_eq!(vm.state.gprs[0], 0, "CPUID did not run");
        } else {
            assert_eq!(exit.reason, ExitReason::Privileged);
            assert_eq!(vm.state.rip, u64::from(at + 2));
            assert_ne!(
                vm.state.gprs[0], 0,
                "native CPUID returned the host's highest leaf"
            );
        }
    }
}

both_executors! {
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
}

both_executors! {
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
}

both_executors! {
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
        assert!(exit.native_time() >= std::time::Duration::from_millis(20));
        assert_eq!(vm.state.rip, u64::from(CODE + 5));
        assert_eq!(vm.state.gprs[0], 1);
    }
}
