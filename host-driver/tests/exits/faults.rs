//! Guest-visible exceptions: each exits before the faulting instruction with its exact state.

use crate::*;

both_executors! {
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
}

both_executors! {
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
                linear: u64::from(DATA + 4),
                access: host_driver::Access::Write,
                error_code: 7,
            },
            at,
        );
    }
}

both_executors! {
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
                linear: u64::from(DATA),
                access: host_driver::Access::Read,
                error_code: 5,
            },
            CODE,
        );
    }
}

both_executors! {
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
                linear: u64::from(DATA),
                access: host_driver::Access::Fetch,
                error_code: 0x15,
            },
            DATA,
        );
    }
}

both_executors! {
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
}

both_executors! {
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
}

both_executors! {
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
}

both_executors! {
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
}

both_executors! {
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
}

both_executors! {
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
        assert_ne!(vm.state.rflags & 0x40000, 0);
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
}

both_executors! {
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
        vm.state.rip += 5;
        let at = CODE + offset_of_bytes(&code, &[0xa3]);
        expect(
            &mut vm,
            ExitReason::NeedsEmulation {
                linear: u64::from(DATA + 8),
                access: host_driver::Access::Write,
            },
            at,
        );
    }
}
