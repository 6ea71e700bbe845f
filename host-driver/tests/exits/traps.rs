//! Traps that share a vector or a byte (INT3 and `INT 3`, INTO and `INT 4`, ICEBP) and single
//! steps with TF set natively: each is reported at its own first byte.

use crate::*;

both_executors! {
    #[test]
    fn breakpoint_int3() {
        check(Mode::TwoLevel, &[0xcc], ExitReason::Breakpoint, |a| {
            a.nop()?;
            a.int3()
        });
    }
}

both_executors! {
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
        assert_ne!(vm.state.rflags & 0x800, 0, "OF set");
    }
}

both_executors! {
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
}

/// Sets EFLAGS.TF with PUSHFD / OR / POPFD, as guest code does.
pub fn set_tf(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.pushfd()?;
    a.or(dword_ptr(esp), 0x100)?;
    a.popfd()
}

both_executors! {
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
        assert_ne!(st.rflags & 0x100, 0, "TF stays set");
        assert_eq!(st.gprs[4], entry_esp, "stack as after the POPF");
    }
}

both_executors! {
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
}

both_executors! {
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
            st.rflags & 0x100,
            0,
            "TF set, for the emulator's own single-step"
        );
    }
}

both_executors! {
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
        assert_ne!(vm.state.rflags & 0x100, 0);
        let vm = check(Mode::TwoLevel, &[0xcc], ExitReason::Breakpoint, |a| {
            set_tf(a)?;
            a.int3()
        });
        assert_ne!(vm.state.rflags & 0x100, 0);
    }
}

both_executors! {
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
        assert_ne!(vm.state.rflags & 0x800, 0);
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
}

both_executors! {
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
        vm.state.rip += 1; // "emulate" the first ICEBP
        expect(&mut vm, icebp, first + 1);
        vm.state.rip += 1;
        expect(&mut vm, ExitReason::Privileged, first + 2);
    }
}
