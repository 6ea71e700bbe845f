//! Demand fills of 64-bit code on the stub (issue 15, step 3): the 4-level walker mirrors
//! 4 KiB, 2 MiB and 1 GiB guest pages (the large ones in 4 KiB pieces, each recording its
//! page's size, so that INVLPG anywhere in one drops it whole), sets A/D bits as the CPU
//! would, and reports the guest's page faults with their full 64-bit address and error code;
//! NX pages are not executable; pages in S's 4 GiB block or outside user space, and
//! non-canonical addresses, are left to the emulator.

use host_driver::protocol::stub as layout;
use host_driver::{Access, ExitReason, MmuCommand};
use iced_x86::code_asm::*;
use test_support::pagetables::bits::*;
use test_support::vm64::layout64::*;
use test_support::vm64::*;

#[test]
fn fills_mirror_4k_pages_above_4_gib_and_set_accessed_and_dirty() {
    let mut vm = Vm64::new();
    vm.ram.write_u64(DATA_PHYS + 0x3008, 0x1234_5678_9abc_def0);
    vm.code(|a| {
        a.mov(rax, rbx)?;
        a.mov(rcx, qword_ptr(rax + 0x3008))?;
        a.mov(qword_ptr(rax + 0x5010), rcx)?;
        a.hlt()
    });
    vm.state.gprs[3] = DATA;
    let exit = vm.run_with(&[MmuCommand::FlushAll]);
    assert_eq!(exit.reason, ExitReason::Privileged);
    assert!(
        exit.demand_fills >= 3,
        "code, two data pages: {}",
        exit.demand_fills
    );
    assert_eq!(vm.state.gprs[1], 0x1234_5678_9abc_def0);
    assert_eq!(vm.ram.read_u64(DATA_PHYS + 0x5010), 0x1234_5678_9abc_def0);
    assert_eq!(vm.pte(DATA + 0x3000) & (A | D), A, "read: Accessed only");
    assert_eq!(vm.pte(DATA + 0x5000) & (A | D), A | D, "written: Dirty too");
    assert_eq!(vm.pte(CODE) & A, A, "fetched");
}

#[test]
fn large_pages_are_mirrored_in_pieces_and_invlpg_anywhere_drops_them_whole() {
    const BIG: u64 = 0x6000_0000_0000;
    const HUGE: u64 = 0x4000_0000_0000;
    let mut vm = Vm64::new();
    vm.tables.map_2m(&vm.ram, BIG, 0x40_0000, URW | NX);
    vm.tables.map_1g(&vm.ram, HUGE, 0, URW | NX);
    vm.ram.write_u64(0x40_0008, 0xaaaa);
    vm.ram.write_u64(0x41_0010, 0xbbbb);
    vm.ram.write_u64(0x60_0008, 0xcccc);
    vm.ram.write_u64(0x70_0018, 0xdddd);
    vm.code(|a| {
        a.mov(rax, qword_ptr(rbx + 8))?;
        a.mov(rcx, qword_ptr(rbx + 0x1_0010))?;
        a.mov(rdx, qword_ptr(rsi + 0x70_0018))?;
        a.hlt()
    });
    vm.state.gprs[3] = BIG;
    vm.state.gprs[6] = HUGE;
    vm.run_with(&[MmuCommand::FlushAll]);
    let g = vm.state.gprs;
    assert_eq!((g[0], g[1], g[2]), (0xaaaa, 0xbbbb, 0xdddd));
    // The 2 MiB page moves to 0x600000: an INVLPG of another piece of it drops the piece
    // mirrored at BIG too (as the CPU drops the large page's one TLB entry).
    vm.tables.map_2m(&vm.ram, BIG, 0x60_0000, URW | NX);
    vm.state.rip = CODE;
    vm.run();
    assert_eq!(
        vm.state.gprs[0], 0xaaaa,
        "stale until invalidated, as a TLB entry"
    );
    vm.state.rip = CODE;
    vm.run_with(&[MmuCommand::InvalidatePage(BIG + 0x1f_f000)]);
    assert_eq!(vm.state.gprs[0], 0xcccc, "the new page at BIG + 8");
}

#[test]
fn a_guest_page_fault_carries_the_full_address_and_the_guest_s_error_code() {
    let mut vm = Vm64::new();
    let unmapped = 0x7abc_def0_1000u64;
    vm.code(|a| {
        a.nop()?;
        a.mov(rax, qword_ptr(rbx + 0x28))?;
        a.hlt()
    });
    vm.state.gprs[3] = unmapped;
    let before = vm.state;
    let exit = vm.run();
    assert_eq!(
        exit.reason,
        ExitReason::PageFault {
            linear: unmapped + 0x28,
            access: Access::Read,
            error_code: 0x4, // U, read, not present
        }
    );
    assert_eq!(vm.state.rip, CODE + 1, "at the faulting instruction");
    assert_eq!(vm.state.gprs, before.gprs);

    // A write to a read-only page: P, W, U.
    vm.map(unmapped, DATA_PHYS, P | US | NX);
    vm.code(|a| {
        a.mov(qword_ptr(rbx), rcx)?;
        a.hlt()
    });
    vm.state.gprs[3] = unmapped + 0x10;
    let exit = vm.run();
    assert_eq!(
        exit.reason,
        ExitReason::PageFault {
            linear: unmapped + 0x10,
            access: Access::Write,
            error_code: 0x7,
        }
    );

    // A fetch from an NX page: P, U, I/D; the state is the one before the jump's target.
    vm.code(|a| a.jmp(rbx));
    vm.state.gprs[3] = DATA + 0x40;
    let exit = vm.run();
    assert_eq!(
        exit.reason,
        ExitReason::PageFault {
            linear: DATA + 0x40,
            access: Access::Fetch,
            error_code: 0x15,
        }
    );
    assert_eq!(vm.state.rip, DATA + 0x40);
}

#[test]
fn pages_in_s_s_block_or_outside_user_space_are_emulated() {
    let mut vm = Vm64::new();
    let in_s_block = layout::reserved_block(layout::DEFAULT_BASE).start + 0x20_0000;
    let kernel_half = 0xffff_8800_0000_0000u64;
    vm.map(in_s_block, DATA_PHYS, URW | NX);
    vm.map(kernel_half, DATA_PHYS, URW | NX);
    for addr in [in_s_block, kernel_half] {
        vm.code(|a| {
            a.mov(rax, qword_ptr(rbx + 8))?;
            a.hlt()
        });
        vm.state.gprs[3] = addr;
        let exit = vm.run();
        assert_eq!(
            exit.reason,
            ExitReason::NeedsEmulation {
                linear: addr + 8,
                access: Access::Read,
            },
            "{addr:#x}"
        );
        assert_eq!(vm.state.rip, CODE);
    }
}

#[test]
fn a_non_canonical_access_is_the_guest_s_general_protection_fault() {
    let mut vm = Vm64::new();
    vm.code(|a| {
        a.mov(rax, qword_ptr(rbx))?;
        a.hlt()
    });
    vm.state.gprs[3] = 0x8000_0000_0000;
    let exit = vm.run();
    assert_eq!(exit.reason, ExitReason::GeneralProtection { error_code: 0 });
    assert_eq!(vm.state.rip, CODE);
}

/// A write-protected code page mirrored above 4 GiB: 64-bit code reads it, and its first write
/// is logged in the exit's code pages and then performed natively.
#[test]
fn a_write_to_a_protected_code_page_above_4_gib_is_logged() {
    let mut vm = Vm64::new();
    vm.code(|a| {
        a.mov(rcx, qword_ptr(rbx))?;
        a.mov(qword_ptr(rbx + 8), rcx)?;
        a.hlt()
    });
    // The data page at CODE + 0x2000 (physical CODE_PHYS + 0x2000) holds "code" Bochs decoded.
    vm.state.gprs[3] = CODE + 0x2000;
    vm.ram.write_u64(CODE_PHYS + 0x2000, 0x77);
    let exit = vm.run_with(&[
        MmuCommand::FlushAll,
        MmuCommand::WriteProtectPhysPage(CODE_PHYS + 0x2000),
    ]);
    assert_eq!(exit.reason, ExitReason::Privileged);
    assert_eq!(exit.code_pages.as_slice(), &[CODE_PHYS + 0x2000]);
    assert_eq!(
        vm.ram.read_u64(CODE_PHYS + 0x2008),
        0x77,
        "the write was performed"
    );
}

/// Global 4-level translations (G with CR4.PGE) outlive a non-global flush, as TLB entries do;
/// the others are refilled from the changed tables.
#[test]
fn a_non_global_flush_spares_global_pages_above_4_gib() {
    const GLOBAL: u64 = 0x7e00_0000_0000;
    const LOCAL: u64 = 0x7e00_0000_1000;
    let mut vm = Vm64::new();
    vm.map(GLOBAL, DATA_PHYS, URW | NX | G);
    vm.map(LOCAL, DATA_PHYS + 0x1000, URW | NX);
    vm.ram.write_u64(DATA_PHYS, 1);
    vm.ram.write_u64(DATA_PHYS + 0x1000, 2);
    vm.ram.write_u64(DATA_PHYS + 0x2000, 3);
    vm.ram.write_u64(DATA_PHYS + 0x3000, 4);
    vm.code(|a| {
        a.mov(rax, qword_ptr(rbx))?;
        a.mov(rcx, qword_ptr(rbx + 0x1000))?;
        a.hlt()
    });
    vm.state.gprs[3] = GLOBAL;
    vm.run_with(&[MmuCommand::FlushAll]);
    assert_eq!((vm.state.gprs[0], vm.state.gprs[1]), (1, 2));
    vm.map(GLOBAL, DATA_PHYS + 0x2000, URW | NX | G);
    vm.map(LOCAL, DATA_PHYS + 0x3000, URW | NX);
    vm.state.rip = CODE;
    vm.run_with(&[MmuCommand::FlushNonGlobal]);
    assert_eq!(
        (vm.state.gprs[0], vm.state.gprs[1]),
        (1, 4),
        "the global page stale, the other refilled"
    );
}
