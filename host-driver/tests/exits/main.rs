//! One test per exit reason, asserting the exact state before the instruction. Modules:
//! `faults`: guest-visible exceptions; `traps`: INT3, INT n, INTO and single steps (traps that
//! share a vector or a byte); `instructions`: system calls, RDTSC, CPUID, privileged
//! instructions, segment loads, the budget.

use host_driver::{ExitReason, GuestState};
use iced_x86::code_asm::*;
use test_support::both_executors;
use test_support::vm::*;

mod faults;
mod instructions;
mod traps;

/// Runs `vm` and checks the exit reason and that EIP points at `at`.
pub fn expect(vm: &mut Vm, reason: ExitReason, at: u32) -> GuestState {
    let exit = vm.run();
    assert_eq!(exit.reason, reason, "exit {:?}", exit.reason);
    assert!(exit.native_time().as_nanos() > 0);
    assert_eq!(
        vm.state.rip,
        u64::from(at),
        "EIP {:#x} != {:#x}",
        vm.state.rip,
        at
    );
    vm.state
}

both_executors! {
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
            st.gprs[..8],
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
            .map(u64::from)
        );
        assert_eq!(st.gprs[8..], [0; 8], "32-bit code leaves R8..R15 alone");
        assert_eq!(st.rflags & 1, 1, "CF set by STC");
        assert_eq!(st.rflags & 0x200, 0x200);
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
}

both_executors! {
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
            assert_eq!(vm.state.gprs[0], u64::from(i));
            assert_eq!(vm.state.rip, u64::from(CODE + 1));
            vm.state.rip += 1; // "emulate" HLT
        }
    }
}

/// Assembles `f` at CODE, runs, and expects `reason` at the instruction whose bytes are
/// `marker` (searched in the assembled code).
pub fn check(
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
