//! Compatibility-mode code (a 32-bit process of a 64-bit guest: long mode, CS.L=0 D=1) on the
//! stub executor, against a real stub: 32-bit code below 4 GiB under 4-level tables
//! (test_support::vm64's, with the 32-bit pages mapped low). Entry and exit as for 32-bit
//! code (EAX..EDI, EIP, EFLAGS, the segments from the LDT mirror; R8..R15 kept), fills
//! through the 4 levels, INT 0x80, compat SYSCALL, #PF, the budget, and a far jump to the
//! host's 64-bit selector contained.

use host_driver::protocol::EFER_LMA;
use host_driver::{Access, CodeModes, ExitReason, Segment, SyscallInstruction};
use iced_x86::code_asm::*;
use std::time::Duration;
use test_support::pagetables::bits::{A, D, NX, P, URW, US};
use test_support::vm64::layout64::{CODE_PHYS, DATA_PHYS, STACK_PHYS};
use test_support::vm64::*;

/// 32-bit code, data and stack (linear, below 4 GiB; 16 pages each on the fixture's physical
/// pages beyond the 64-bit ones), and a TLS block in the data's second page.
const CODE32: u64 = 0x0804_8000;
const DATA32: u64 = 0x0a00_0000;
const STACK32_TOP: u64 = 0xff80_0000;
const TLS32: u64 = DATA32 + 0x1000;
const PHYS_OFF: u64 = 0x8_0000;

/// A Linux compat process's segments: CS 0x23 (32-bit), SS/DS/ES 0x2b, FS null, GS 0x63 (the
/// TLS entry, based at TLS32).
fn compat_vm() -> Vm64 {
    let mut vm = Vm64::new();
    for i in 0..16u64 {
        let off = i * 4096;
        vm.map(CODE32 + off, CODE_PHYS + PHYS_OFF + off, URW);
        vm.map(DATA32 + off, DATA_PHYS + PHYS_OFF + off, URW | NX);
        vm.map(
            STACK32_TOP - off - 4096,
            STACK_PHYS + PHYS_OFF + off,
            URW | NX,
        );
    }
    let s = &mut vm.state;
    s.segs[1] = Segment::flat_code(0x23);
    for i in [0, 2, 3] {
        s.segs[i] = Segment::flat_data(0x2b);
    }
    s.segs[4] = Segment::null(0);
    s.segs[5] = Segment {
        base: TLS32,
        ..Segment::flat_data(0x63)
    };
    s.gprs[4] = STACK32_TOP - 64;
    assert!(s.efer & EFER_LMA != 0 && !s.code64());
    vm
}

/// Assembles 32-bit code at CODE32 and points EIP there; returns the bytes.
fn code32(vm: &mut Vm64, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(32).unwrap();
    f(&mut a).unwrap();
    let bytes = a.assemble(CODE32).unwrap();
    vm.ram.write(CODE_PHYS + PHYS_OFF, &bytes);
    vm.state.rip = CODE32;
    bytes
}

#[test]
fn compat_code_enters_and_exits_at_hlt_with_its_exact_32_bit_state() {
    let mut vm = compat_vm();
    assert_eq!(vm.stub.code_modes(), CodeModes::Legacy32Long64AndCompat);
    vm.ram.write_u32(DATA_PHYS + PHYS_OFF + 0x1010, 0x600d_f00d); // GS:0x10
    let bytes = code32(&mut vm, |a| {
        a.mov(eax, dword_ptr(0x10).gs())?;
        a.add(ebx, ecx)?;
        a.push(edx)?;
        a.pop(esi)?;
        a.hlt()
    });
    for i in 0..8 {
        if i != 4 {
            vm.state.gprs[i] = 0x1000_0000 + i as u64;
        }
    }
    // R8..R15 of the 64-bit guest: out of 32-bit code's reach, kept.
    for i in 8..16 {
        vm.state.gprs[i] = 0xdead_0000_0000_0000 | i as u64;
    }
    vm.state.rflags = 0x202 | 0x8d5;
    let before = vm.state;
    let exit = vm.run();
    assert_eq!(exit.reason, ExitReason::Privileged);
    assert_eq!(vm.state.rip, CODE32 + offset_in(&bytes, &[0xf4]));
    let mut want = before.gprs;
    want[0] = 0x600d_f00d;
    want[3] = 0x1000_0003 + 0x1000_0001;
    want[6] = before.gprs[2];
    assert_eq!(vm.state.gprs, want, "EAX..EDI exact, R8..R15 the entry's");
    assert!(vm.state.rflags & 0xffff_ffff_0000_0000 == 0);
    assert_eq!(
        vm.state.segs, before.segs,
        "the guest's selectors, not the mirror's"
    );
}

#[test]
fn compat_fills_walk_the_4_level_tables_and_set_accessed_and_dirty() {
    let mut vm = compat_vm();
    code32(&mut vm, |a| {
        a.mov(dword_ptr(DATA32 as u32 + 0x3004), 0x1234_5678u32)?;
        a.mov(eax, dword_ptr(DATA32 as u32 + 0x5008))?;
        a.hlt()
    });
    vm.ram.write_u32(DATA_PHYS + PHYS_OFF + 0x5008, 0x0bad_beef);
    let exit = vm.run();
    assert_eq!(exit.reason, ExitReason::Privileged);
    assert!(
        exit.demand_fills >= 3,
        "code, two data pages: {}",
        exit.demand_fills
    );
    assert_eq!(vm.state.gprs[0], 0x0bad_beef, "read through the mirror");
    assert_eq!(
        vm.ram.read_u32(DATA_PHYS + PHYS_OFF + 0x3004),
        0x1234_5678,
        "written natively into the 4-level tables' frame"
    );
    assert_eq!(
        vm.pte(DATA32 + 0x3000) & (A | D),
        A | D,
        "written page: A and D"
    );
    assert_eq!(vm.pte(DATA32 + 0x5000) & (A | D), A, "read page: A only");
}

#[test]
fn int_0x80_from_compat_code_is_an_exact_exit_at_the_instruction() {
    let mut vm = compat_vm();
    let bytes = code32(&mut vm, |a| {
        a.mov(eax, 20u32)?; // getpid, were it executed by the host
        a.mov(ebx, 0x11u32)?;
        a.int(0x80)?;
        a.hlt()
    });
    let exit = vm.run();
    assert_eq!(exit.reason, ExitReason::SoftwareInterrupt { vector: 0x80 });
    assert_eq!(vm.state.rip, CODE32 + offset_in(&bytes, &[0xcd, 0x80]));
    assert_eq!((vm.state.gprs[0], vm.state.gprs[3]), (20, 0x11));
    assert!(!exit.ecx_clobbered && !exit.eip_lost);
}

/// SYSENTER from compatibility mode takes the host kernel's compat fast-syscall path on Intel:
/// EIP and ESP are discarded, which SYSENTER neither saves nor depends on, so the exit carries
/// the rest whole (ECX intact, EBP the stack the vDSO's convention put there, EAX the number)
/// for the emulator to carry out SYSENTER (ABI 10). On AMD it is #UD at the instruction.
#[test]
fn compat_sysenter_exits_with_every_register_it_depends_on() {
    let mut vm = compat_vm();
    let bytes = code32(&mut vm, |a| {
        a.mov(eax, 20u32)?; // getpid, were it executed by the host
        a.mov(ebx, 0x11u32)?;
        a.mov(ecx, 0x22u32)?;
        a.mov(edx, 0x33u32)?;
        a.mov(esi, 0x44u32)?;
        a.mov(edi, 0x55u32)?;
        a.mov(ebp, 0x66u32)?;
        // __kernel_vsyscall's frame: the kernel takes the stack from EBP and EBP from [EBP]
        a.push(ecx)?;
        a.push(edx)?;
        a.push(ebp)?;
        a.mov(ebp, esp)?;
        a.sysenter()?;
        a.hlt()
    });
    let before = vm.state;
    let exit = vm.run();
    if test_support::cpuinfo::is_amd() {
        assert_eq!(exit.reason, ExitReason::InvalidOpcode);
        assert_eq!(vm.state.rip, CODE32 + offset_in(&bytes, &[0x0f, 0x34]));
        return;
    }
    assert_eq!(
        exit.reason,
        ExitReason::SystemCall {
            instruction: SyscallInstruction::Sysenter
        }
    );
    assert!(exit.eip_lost && !exit.ecx_clobbered);
    let esp_at_sysenter = before.gprs[4] - 12;
    let g = &vm.state.gprs;
    assert_eq!(
        (g[0], g[3], g[1], g[2], g[6], g[7]),
        (20, 0x11, 0x22, 0x33, 0x44, 0x55),
        "EAX, EBX, ECX, EDX, ESI, EDI"
    );
    assert_eq!(g[5], esp_at_sysenter, "EBP as SYSENTER found it");
    assert_eq!(
        g[8..],
        before.gprs[8..],
        "R8..R15 are not compatibility-mode code's"
    );
}

/// SYSCALL from compatibility mode takes the host kernel's compat fast-syscall path on AMD
/// (EIP and ECX discarded before seccomp traps it): the exit says so, exactly as for a
/// 32-bit guest's on the stub; on Intel it is #UD at the instruction.
#[test]
fn compat_syscall_exits_as_a_32_bit_guest_s_does() {
    let mut vm = compat_vm();
    let bytes = code32(&mut vm, |a| {
        a.mov(eax, 20u32)?;
        a.mov(ebp, 0x66u32)?;
        a.push(eax)?; // the compat path reads [ESP]
        a.pop(eax)?;
        a.syscall()?;
        a.hlt()
    });
    let exit = vm.run();
    if test_support::cpuinfo::is_amd() {
        assert_eq!(
            exit.reason,
            ExitReason::SystemCall {
                instruction: SyscallInstruction::Syscall
            }
        );
        assert!(exit.ecx_clobbered && exit.eip_lost);
        assert_eq!((vm.state.gprs[0], vm.state.gprs[5]), (20, 0x66));
    } else {
        assert_eq!(exit.reason, ExitReason::InvalidOpcode);
        assert_eq!(vm.state.rip, CODE32 + offset_in(&bytes, &[0x0f, 0x05]));
    }
}

#[test]
fn a_compat_page_fault_carries_the_32_bit_address_and_the_guest_s_error_code() {
    let mut vm = compat_vm();
    let unmapped = 0x0900_0010u32;
    let bytes = code32(&mut vm, |a| {
        a.mov(dword_ptr(unmapped), eax)?;
        a.hlt()
    });
    let before = vm.state;
    let exit = vm.run();
    assert_eq!(
        exit.reason,
        ExitReason::PageFault {
            linear: u64::from(unmapped),
            access: Access::Write,
            error_code: 6, // user write, not present
        }
    );
    assert_eq!(vm.state.rip, CODE32 + offset_in(&bytes, &[0xa3]));
    assert_eq!(vm.state.gprs, before.gprs);
    // A read-only page (present, user): a protection fault.
    vm.map(DATA32 + 0xf000, DATA_PHYS + PHYS_OFF + 0xf000, P | US | NX);
    code32(&mut vm, |a| {
        a.mov(dword_ptr(DATA32 as u32 + 0xf000), eax)?;
        a.hlt()
    });
    let exit = vm.run();
    assert_eq!(
        exit.reason,
        ExitReason::PageFault {
            linear: DATA32 + 0xf000,
            access: Access::Write,
            error_code: 7,
        }
    );
}

#[test]
fn the_budget_ends_a_compat_loop_at_an_instruction_boundary() {
    let mut vm = compat_vm();
    let bytes = code32(&mut vm, |a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.inc(eax)?;
        a.jmp(top)
    });
    let budget = Duration::from_millis(20);
    let exit = vm
        .stub
        .run(&mut vm.state, budget, &[])
        .expect("run")
        .clone();
    assert_eq!(exit.reason, ExitReason::BudgetExpired);
    assert!(exit.native_time() >= budget, "{:?}", exit.native_time());
    let end = CODE32 + bytes.len() as u64;
    assert!(
        (CODE32..end).contains(&vm.state.rip),
        "EIP {:#x} in the loop",
        vm.state.rip
    );
    assert!(vm.state.gprs[0] > 0, "the loop ran");
    assert!(vm.state.gprs[0] >> 32 == 0);
}

/// 32-bit code that far-jumps to selector 0x33 reaches the host's 64-bit code segment, as a
/// Linux guest's would reach its own: a mode switch the run follows (no escape, the same
/// stub); CS comes back for the emulator to reload, with the host descriptor's kind (L=1),
/// and the registers whole, R8..R15 as the entry gave them.
#[test]
fn a_far_jump_to_0x33_from_compat_code_switches_to_64_bit_code() {
    let mut vm = compat_vm();
    let target = CODE32 + 0x800;
    // 64-bit code there: RAX whole, then HLT (#GP).
    let mut code64 = vec![0x48, 0xb8];
    code64.extend_from_slice(&0xa1b2_c3d4_e5f6_0718u64.to_le_bytes());
    code64.push(0xf4);
    vm.ram.write(CODE_PHYS + PHYS_OFF + 0x800, &code64);
    let jmp: Vec<u8> = [0xea]
        .into_iter()
        .chain((target as u32).to_le_bytes())
        .chain(0x33u16.to_le_bytes())
        .collect();
    vm.ram.write(CODE_PHYS + PHYS_OFF, &jmp);
    vm.state.rip = CODE32;
    vm.state.gprs[3] = 0x3333;
    vm.state.gprs[9] = 0x9999_0000_0000_0009;
    let pid = vm.stub.pid();
    let exit = vm.run();
    assert_eq!(exit.reason, ExitReason::Privileged, "{:?}", exit.reason);
    assert!(!exit.escape_contained);
    assert_eq!(vm.state.rip, target + 10, "at the 64-bit HLT");
    assert_eq!(vm.state.gprs[0], 0xa1b2_c3d4_e5f6_0718, "RAX whole");
    assert_eq!(vm.state.gprs[3], 0x3333);
    assert_eq!(
        vm.state.gprs[9], 0x9999_0000_0000_0009,
        "R9 entered and kept"
    );
    test_support::vm64::assert_host_cs_for_reload(&vm.state, 0x33, 0xa0fb);
    assert_eq!(vm.stub.pid(), pid, "the same stub");
}
